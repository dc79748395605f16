"""The demo pipeline end to end with a tiny model and tiny budgets: every stage runs, the report is written,
a second invocation resumes (runs nothing again), and other settings are refused for the same folder."""

from __future__ import annotations

import json

import pytest

from diffucoder.demo import STAGES, run_demo

TINY = dict(
    preset="tiny", vocab_size=512, tokenizer_stdlib_files=20, pretrain_stdlib_files=10, pretrain_steps=2,
    pretrain_batch=4, pretrain_seq_len=64, synthetic_solutions=40, sft_steps=2, sft_batch=4, sft_tasks=40,
    sft_max_length=160, eval_tasks_per_tier=1, eval_samples=2, max_new_tokens=12, eval_steps=4,
    analysis_prompts=2, analysis_temperatures=(1.0,), rl_steps=1, rl_prompts_per_step=1, rl_num_generations=2,
    start_from=None,  # train every stage (QUICK starts from the shipped checkpoint: tests/test_demo_start.py)
)


def test_demo_runs_every_stage_and_resumes(tmp_path):
    pytest.importorskip("matplotlib")
    run = tmp_path / "demo"
    logs: list[str] = []
    summary = run_demo(run, quick=True, progress=False, **TINY)
    for stage in STAGES:
        assert (run / "stages" / f"{stage}.json").is_file(), stage
    by_tier = summary["eval_sft"]["by_tier"]
    assert set(by_tier) == {"easy", "medium", "hard", "all"}
    assert by_tier["all"]["tasks"] == 3 and 0.0 <= by_tier["all"]["greedy"] <= 1.0
    assert 0.0 <= by_tier["all"]["pass@1"] <= by_tier["all"]["pass@2"] <= 1.0
    for kind in ("greedy", "sampled"):
        results = json.loads((run / "eval_sft" / kind / "results.json").read_text())
        assert results["n_tasks"] == 3 and "dataset_sha256" in results
    assert json.loads((run / "eval_sft" / "greedy" / "results.json").read_text())["settings"]["n_samples"] == 1
    report = (run / "report.md").read_text()
    assert "greedy pass@1" in report and "pass@2 (T=" in report and "plots/losses.png" in report and "| nan |" not in report
    assert (run / "plots" / "losses.png").is_file() and (run / "plots" / "pass_at_k_by_tier.png").is_file()
    assert (run / "analysis" / "analysis.json").is_file()
    assert summary["rl"].get("steps") == 1

    # a second invocation finds every stage done and recomputes nothing
    from diffucoder.demo import Demo, QUICK
    from dataclasses import replace

    Demo(run, replace(QUICK, **TINY), progress=False, log=logs.append).run()
    assert logs[0] == f"[demo] resuming {run}: finished stages {', '.join(STAGES)}"
    assert all("already done" in line for line in logs[1:]) and len(logs) == len(STAGES) + 1

    settings_before = (run / "demo_settings.json").read_bytes()
    with pytest.raises(ValueError, match=r"other settings .*settings\.sft_steps: 2 -> 3.*--allow-config-change"):
        run_demo(run, quick=True, progress=False, **{**TINY, "sft_steps": 3})
    assert (run / "demo_settings.json").read_bytes() == settings_before, "a refused run changes nothing"


def test_setting_overrides_are_typed_and_checked():
    from diffucoder.demo import FULL, apply_overrides

    s = apply_overrides(FULL, ["sft_steps=2400", "sft_lr=2e-3", "synthetic_questions=false",
                               "pretrain_stdlib_files=200", "analysis_temperatures=0.2,1.0", "threads=none"])
    assert (s.sft_steps, s.sft_lr, s.synthetic_questions, s.pretrain_stdlib_files) == (2400, 2e-3, False, 200)
    assert s.analysis_temperatures == (0.2, 1.0) and s.threads is None and s.vocab_size == FULL.vocab_size
    with pytest.raises(ValueError, match=r"unknown demo setting 'sft_stpes' \(did you mean 'sft_steps'\?\); valid: "
                                         r".*sft_steps"):
        apply_overrides(FULL, ["sft_stpes=3"])
    with pytest.raises(ValueError, match="--set sft_steps=many: sft_steps: expected an integer, got 'many'"):
        apply_overrides(FULL, ["sft_steps=many"])
    with pytest.raises(ValueError, match="KEY=VALUE"):
        apply_overrides(FULL, ["sft_steps"])
    assert apply_overrides(FULL, ["sft_tiers=easy,hard"]).sft_tiers == ("easy", "hard")
    with pytest.raises(ValueError, match="sft_tiers=.*'expert'"):
        apply_overrides(FULL, ["sft_tiers=easy,expert"])
    assert apply_overrides(FULL, ["rl_tiers=medium"]).rl_tiers == ("medium",)
    with pytest.raises(ValueError, match="sft_steps must be >= 1, got -5"):
        apply_overrides(FULL, ["sft_steps=-5"])
    with pytest.raises(ValueError, match="sft_lr must be > 0"):
        apply_overrides(FULL, ["sft_lr=0"])
    assert apply_overrides(FULL, ["eval_samples=0"]).eval_samples == 0
    with pytest.raises(ValueError, match="rl_tiers=.*'expert'"):
        apply_overrides(FULL, ["rl_tiers=expert"])


def test_two_training_processes_train_the_one_process_model(tmp_path):
    """``train_processes`` is a speed setting: the local DDP job's SFT model equals the one-process model."""
    import torch

    from diffucoder.model import DreamModel

    finals = {}
    for n in (1, 2):
        run = tmp_path / f"p{n}"
        summary = run_demo(run, quick=True, progress=False, stop_after="sft",
                           **{**TINY, "train_processes": n, "threads": 1, "sft_steps": 3})
        assert summary["sft"]["steps"] == 3 and summary["sft"]["examples"] == 12
        rows = [json.loads(x) for x in (run / "sft" / "metrics.jsonl").read_text().splitlines()]
        assert [r["world_size"] for r in rows if r.get("event") == "start"] == [n]
        finals[n] = DreamModel.from_pretrained(summary["sft"]["path"]).state_dict()
    for k, a in finals[1].items():
        assert torch.allclose(a, finals[2][k], atol=2e-5, rtol=1e-4), k


def test_sft_noise_floor_and_process_count_reach_the_training_config(tmp_path):
    from dataclasses import replace

    from diffucoder.demo import FULL, Demo
    from diffucoder.training import load_config

    demo = Demo(tmp_path / "d", replace(FULL, sft_t_min=0.3, train_processes=3), progress=False)
    cfg = load_config(None, demo.sft_overrides(None))
    assert cfg.diffusion.eps == pytest.approx(0.3) and cfg.task == "sft"
    assert demo.train_processes(16) == 2  # lowered to a divisor of the global batch
    assert Demo(tmp_path / "e", FULL, progress=False).train_processes(16) == 1


def test_default_sft_recipe_reaches_the_training_config(tmp_path):
    """The default SFT (lr 1e-3, short prompts without the system turn) and tier batches reach the training
    config; tier batches are off for packed rows (the loop refuses the pair)."""
    from dataclasses import replace

    from diffucoder.demo import FULL, Demo
    from diffucoder.training import load_config

    cfg = load_config(None, Demo(tmp_path / "d", FULL, progress=False).sft_overrides(None))
    assert cfg.optim.lr == pytest.approx(1e-3) and cfg.optim.steps == FULL.sft_steps
    assert (cfg.sft.synthetic_prompt_format, cfg.sft.system_prompt) == ("short", None)
    assert cfg.sft.batch_groups == "source"
    assert cfg.sft.synthetic_tiers == ["easy", "easy", "easy", "easy", "medium"] and cfg.model.preset == "4m"
    assert FULL.pretrain_steps == 0  # SFT starts from a fresh model (test_no_pretraining_starts_sft_...)
    packed = load_config(None, Demo(tmp_path / "e", replace(FULL, sft_packing=True), progress=False).sft_overrides(None))
    assert packed.sft.batch_groups == "none" and packed.sft.packing
    plain = replace(FULL, sft_tier_batches=False)
    assert load_config(None, Demo(tmp_path / "f", plain, progress=False).sft_overrides(None)).sft.batch_groups == "none"


def test_no_pretraining_starts_sft_from_a_fresh_model(tmp_path):
    """``pretrain_steps=0``: the pretraining stage records that it was not run, writes no model, and SFT trains
    a freshly initialised ``preset`` model with the demo's tokenizer; the report leaves the stage out."""
    pytest.importorskip("matplotlib")
    from diffucoder.model import DreamModel
    from diffucoder.training import load_config

    run = tmp_path / "demo"
    summary = run_demo(run, quick=True, progress=False, stop_after="sft", **{**TINY, "pretrain_steps": 0})
    pre = json.loads((run / "stages" / "pretrain.json").read_text())
    assert pre["skipped"] and "pretrain_steps=0" in pre["reason"] and not (run / "pretrain").exists()
    cfg = load_config(run / "sft" / "config.yaml")
    assert cfg.model.init_from is None and cfg.model.preset == "tiny"
    assert cfg.tokenizer.path == str(run / "tokenizer")
    assert summary["sft"]["steps"] == TINY["sft_steps"]
    assert DreamModel.from_pretrained(summary["sft"]["path"]).config.num_hidden_layers == 2
    from diffucoder.demo_report import write_report

    report = write_report(run, {n: json.loads((run / "stages" / f"{n}.json").read_text())
                                for n in ("tokenizer", "pretrain", "sft")}).read_text()
    assert "No pretraining: the recipe has no pretraining (pretrain_steps=0)" in report and "| pretrain |" not in report
    with pytest.raises(ValueError, match="pretrain_steps must be >= 0"):
        run_demo(tmp_path / "bad", quick=True, progress=False, **{**TINY, "pretrain_steps": -1})
