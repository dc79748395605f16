"""The demo started from a trained checkpoint (``start_from``; ``--quick`` uses the shipped one) and the report's
honesty rules: a stage cut short by its time cap is flagged, and no machine path is named."""

from __future__ import annotations

import json

import pytest
import torch

from diffucoder.demo import QUICK, SHIPPED_CHECKPOINT, Demo, read_recipe, settings_for_start
from diffucoder.demo_report import wilson_interval, write_report
from diffucoder.errors import InputError

TINY_EVAL = dict(eval_tasks_per_tier=1, eval_samples=0, max_new_tokens=8, eval_steps=4, eval_block_length=4,
                 analysis_prompts=1, analysis_temperatures=(1.0,), rl_steps=1, rl_prompts_per_step=1,
                 rl_num_generations=2)


def test_the_shipped_checkpoint_loads_and_names_its_recipe():
    from diffucoder.model import DreamModel
    from diffucoder.tokenizer import load_tokenizer

    model = DreamModel.from_pretrained(SHIPPED_CHECKPOINT)
    assert next(model.parameters()).dtype == torch.bfloat16  # stored small; the demo upcasts it
    assert sum(p.numel() for p in model.parameters()) == 5_404_928
    tok = load_tokenizer(SHIPPED_CHECKPOINT)
    assert tok.vocab_size == model.config.vocab_size and tok.mask_token_id == model.config.mask_token_id
    recipe = read_recipe(SHIPPED_CHECKPOINT)
    assert recipe["settings"]["prompt_format"] == "default" and recipe["figures"]["sft_steps"] == 3550
    # the quick profile evaluates the model on the prompts it was trained on
    quick = settings_for_start(QUICK, log=lambda _: None)
    assert quick.start_from == "shipped"
    assert (quick.prompt_format, quick.system_prompt) == ("default", "You are a helpful assistant.")


def test_a_missing_start_checkpoint_is_refused_by_name(tmp_path):
    from dataclasses import replace

    with pytest.raises(InputError, match=rf"start_from {tmp_path / 'nope'}: no config.json there"):
        settings_for_start(replace(QUICK, start_from=str(tmp_path / "nope")))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "demo_recipe.json").write_text("{not json")
    with pytest.raises(InputError, match="demo_recipe.json: not a readable JSON file"):
        read_recipe(tmp_path / "bad")


def test_demo_from_a_trained_checkpoint_skips_training(tmp_path, tiny_model, tiny_tokenizer):
    from dataclasses import replace

    src = tmp_path / "trained"
    tiny_model.to(torch.bfloat16).save_pretrained(src, tokenizer=tiny_tokenizer)
    (src / "demo_recipe.json").write_text(json.dumps({"summary": "a tiny test model",
                                                      "settings": {"prompt_format": "short", "system_prompt": "Be brief."}}))
    notes: list[str] = []
    settings = settings_for_start(replace(QUICK, start_from=str(src), **TINY_EVAL), log=notes.append)
    assert (settings.prompt_format, settings.system_prompt) == ("short", "Be brief.")
    assert notes and "using the checkpoint's prompt_format='short', system_prompt='Be brief.'" in notes[0]
    run = tmp_path / "run"
    demo = Demo(run, settings, progress=False, log=lambda _: None)
    summary = demo.run(stop_after="eval_sft")
    for stage in ("tokenizer", "pretrain"):
        assert summary[stage]["skipped"] and not (run / stage).exists()
    sft = summary["sft"]
    assert sft["start_from"] == str(src) and sft["recipe"]["summary"] == "a tiny test model"
    from diffucoder.model import DreamModel

    copied = DreamModel.from_pretrained(sft["path"])
    assert next(copied.parameters()).dtype == torch.float32  # upcast for CPU work
    for a, b in zip(copied.parameters(), tiny_model.parameters()):
        assert torch.equal(a, b.float())
    assert summary["eval_sft"]["by_tier"]["all"]["tasks"] == 3
    report = (run / demo.stage_report()["report"].rsplit("/", 1)[-1]).read_text()
    assert "No training in this run" in report and "a tiny test model" in report
    assert str(tmp_path) not in report


def test_report_flags_a_capped_stage_and_names_no_machine_path(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    stages = {
        "pretrain": {"steps": 10, "planned_steps": 10, "tokens": 1000, "examples": 80, "stage_seconds": 3.0},
        "sft": {"steps": 4, "planned_steps": 12, "stopped_by_time": True, "tokens": 500, "examples": 40,
                "stage_seconds": 60.0},
        "eval_sft": {"results": str(run / "eval_sft" / "greedy" / "results.json"), "ks": [],
                     "by_tier": {"easy": {"tasks": 100, "greedy": 0.5}}},
    }
    report = write_report(run, stages).read_text()
    assert "Warning: the stage time cap stopped sft at step 4 of 12" in report
    assert "| sft | 4 of 12 (cap) | 40 |" in report
    assert "| easy | 100 | 50.0% [40, 60] |" in report
    assert "`eval_sft/greedy/results.json`" in report and str(tmp_path) not in report


def test_wilson_interval():
    lo, hi = wilson_interval(50, 100)
    assert lo == pytest.approx(0.4038, abs=1e-3) and hi == pytest.approx(0.5962, abs=1e-3)
    assert wilson_interval(0, 40)[0] == 0.0 and wilson_interval(0, 40)[1] == pytest.approx(0.0876, abs=1e-3)


def test_ship_script_writes_a_bf16_checkpoint_with_its_recipe(tmp_path, tiny_model, tiny_tokenizer):
    """``scripts/ship_demo_checkpoint.py RUN --out DIR``: a bf16 copy of RUN's SFT model with a demo_recipe.json
    that ``start_from`` reads (prompt format, system prompt, figures); the folder's README is kept; a run folder
    without the stage records is refused by name and leaves DIR as it was."""
    import importlib.util
    from dataclasses import asdict
    from pathlib import Path

    from diffucoder.demo import FULL
    from diffucoder.model import DreamModel

    spec = importlib.util.spec_from_file_location(
        "ship", Path(__file__).resolve().parents[1] / "scripts" / "ship_demo_checkpoint.py")
    ship = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ship)
    run = tmp_path / "run"
    tiny_model.save_pretrained(run / "sft" / "final", tokenizer=tiny_tokenizer)
    (run / "stages").mkdir()
    settings = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(FULL).items()}
    (run / "demo_settings.json").write_text(json.dumps({"settings": settings, "seed": 0}))
    (run / "stages" / "sft.json").write_text(json.dumps({"steps": 2000, "examples": 32000, "tokens": 9,
                                                         "eval": {"masked_ce": 0.0657}, "unigram_baseline": 2.03}))
    out = tmp_path / "ckpt"
    out.mkdir()
    (out / "README.md").write_text("hand-written")
    assert ship.main([str(run), "--out", str(out)]) == 2  # no eval_sft record yet
    assert sorted(p.name for p in out.iterdir()) == ["README.md"]
    (run / "stages" / "eval_sft.json").write_text(json.dumps({"by_tier": {"easy": {"greedy": 0.55}}}))
    assert ship.main([str(run), "--out", str(out)]) == 0
    assert (out / "README.md").read_text() == "hand-written"
    model = DreamModel.from_pretrained(out)
    assert next(model.parameters()).dtype == torch.bfloat16
    recipe = read_recipe(out)
    assert recipe["figures"]["heldout_greedy_pass1_fp32"] == {"easy": 0.55} and recipe["figures"]["sft_steps"] == 2000
    assert "no pretraining" in recipe["summary"] and "4 easy : 1 medium" in recipe["summary"]
    from dataclasses import replace

    s = settings_for_start(replace(QUICK, start_from=str(out)), log=lambda _: None)
    assert (s.prompt_format, s.system_prompt) == ("short", None)
