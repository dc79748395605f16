"""benchmarks/rl_experiment.py end to end on a tiny random model (pipeline check; its numbers mean nothing)."""

from __future__ import annotations

import dataclasses
import json

import pytest
from conftest import load_benchmark


def test_rl_experiment_tiny_pipeline(tmp_path):
    """pool -> resumable runner (sweep, lr choice, controls, estimators, KL arm, toy) -> analysis."""
    mod = load_benchmark("rl_experiment")
    pool, runs, docs = tmp_path / "pool", tmp_path / "runs", tmp_path / "docs"
    assert mod.main(["pool", "--tiny", "--out", str(pool), "--train-tasks", "4", "--test-tasks", "3", "--samples",
                     "2", "--keep-min", "0", "--keep-max", "2"]) == 0
    info = json.loads((pool / "pool.json").read_text())
    assert info["splits"]["train"]["kept"] == 4 and info["splits"]["heldout"]["kept"] == 3
    assert all("pool_solved" in r for r in mod.read_jsonl(pool / "train.jsonl"))
    with pytest.raises(SystemExit, match="already holds a pool"):
        mod.main(["pool", "--tiny", "--out", str(pool)])
    with pytest.raises(SystemExit, match="--train-from: .* has no pool.json"):
        mod.main(["pool", "--tiny", "--out", str(tmp_path / "p2"), "--train-from", str(tmp_path)])
    p2 = tmp_path / "p2"
    assert mod.main(["pool", "--tiny", "--out", str(p2), "--train-from", str(pool), "--test-tasks", "2",
                     "--samples", "2", "--keep-min", "0", "--keep-max", "2"]) == 0
    assert mod.read_jsonl(p2 / "train.jsonl") == mod.read_jsonl(pool / "train.jsonl")
    info2 = json.loads((p2 / "pool.json").read_text())
    assert info2["splits"]["train"]["copied_from"] == str(pool) and info2["splits"]["heldout"]["kept"] == 2
    with pytest.raises(SystemExit, match="--train-from: .* other decoding settings"):
        mod.main(["pool", "--tiny", "--out", str(tmp_path / "p3"), "--train-from", str(pool), "--temperature", "0.5"])
    # a killed worker's claim (dead pid) is taken over; a finished run is skipped
    s = mod.Settings(**mod.TINY)
    plan = mod.build_plan(s)
    assert [p.kind for p in plan].count("main") == 5 and [p.kind for p in plan].count("sweep") == 2
    (runs / plan[0].name / "claim").mkdir(parents=True)
    (runs / plan[0].name / "claim" / "pid").write_text("999999999")
    assert mod.main(["run", "--tiny", "--pool", str(pool), "--out", str(runs), "--poll", "0.1"]) == 0
    done = sorted(p.name for p in runs.glob("*/result.json"))
    assert len(done) == len(plan) - 1, done  # main coupled seed 0 is the sweep run at the chosen lr
    choice = json.loads((runs / "lr_choice.json").read_text())
    assert choice["lr"] in s.sweep_lrs and len(choice["candidates"]) == 2
    ctrl = json.loads((runs / "control-lr0-s0" / "result.json").read_text())
    before = json.loads((runs / "before-s0.json").read_text())["tasks"]
    assert ctrl["heldout_after"] == before, "lr = 0 leaves the weights, and so the paired evaluation, unchanged"
    assert not list(runs.glob("*/checkpoint-*")), "finished runs drop their checkpoints"
    mtime = (runs / "control-lr0-s0" / "result.json").stat().st_mtime
    assert mod.main(["run", "--tiny", "--pool", str(pool), "--out", str(runs), "--poll", "0.1"]) == 0
    assert (runs / "control-lr0-s0" / "result.json").stat().st_mtime == mtime, "finished runs are skipped"
    with pytest.raises(SystemExit, match="other settings.*temperature"):
        mod.main(["run", "--tiny", "--pool", str(pool), "--out", str(runs), "--temperature", "0.5"])
    (docs).mkdir()
    (docs / "README.md").write_text("# title\n\nhand-written text\n")
    assert mod.main(["analyse", "--runs", str(runs), "--pool", str(pool), "--docs", str(docs)]) == 0
    summ = json.loads((docs / "summary.json").read_text())
    for est in mod.ESTIMATORS:
        e = summ["estimators"][est]
        for key in ("seeds", "reward_gain_mean", "reward_gain_ci95", "heldout_pass1_before", "heldout_pass1_after",
                    "heldout_delta_ci95"):
            assert key in e, (est, key)
    assert summ["controls"]["lr0"]["heldout_delta_mean"] == 0.0 and summ["missing_runs"] == []
    for png in ("reward_curves.png", "paired_differences.png", "heldout_deltas.png"):
        assert (docs / png).stat().st_size > 1000
    text = (docs / "README.md").read_text()
    assert text.startswith("# title\n\nhand-written text") and text.count(mod.BEGIN) == 1
    assert mod.main(["analyse", "--runs", str(runs), "--pool", str(pool), "--docs", str(docs)]) == 0
    assert (docs / "README.md").read_text().count(mod.BEGIN) == 1, "the generated block is replaced, not appended"


def test_scaled_down_plan(tmp_path):
    mod = load_benchmark("rl_experiment")
    s = mod.Settings(**{**mod.TINY, "seeds": (0, 1)}, fixed_lr=1e-3, estimators=("coupled", "full_mask"),
                     kl_arm=False, toy_arm=False)
    names = [p.name for p in mod.build_plan(s)]
    assert names == ["control-lr0-s0", "coupled-lrchosen-s0", "full_mask-lrchosen-s0",
                     "control-lr0-s1", "coupled-lrchosen-s1", "full_mask-lrchosen-s1"], names
    choice = mod.pick_lr(tmp_path, s)
    assert choice["lr"] == 1e-3 and choice["candidates"] == [] and (tmp_path / "lr_choice.json").is_file()
    with pytest.raises(SystemExit, match="--estimators: unknown"):
        mod.parse(["run", "--model", "m", "--pool", "p", "--out", "o", "--estimators", "coupled,bogus"])
    with pytest.raises(SystemExit, match="--lr: must be > 0"):
        mod.parse(["run", "--model", "m", "--pool", "p", "--out", "o", "--lr", "0"])
    _, s2 = mod.parse(["run", "--model", "m", "--pool", "p", "--out", "o", "--lr", "3e-4", "--estimators",
                       "coupled,d1", "--no-kl-arm", "--no-toy", "--steps", "8"])
    assert (s2.fixed_lr, s2.estimators, s2.kl_arm, s2.toy_arm, s2.steps) == (3e-4, ("coupled", "d1"), False, False, 8)
    # a folder's plan may grow (more estimators, the KL arm); a run setting may not change
    runs = tmp_path / "runs"
    mod.check_settings(runs, s, {})
    mod.check_settings(runs, dataclasses.replace(s, estimators=mod.ESTIMATORS, kl_arm=True), {})
    exp = json.loads((runs / "experiment.json").read_text())
    assert exp["settings"]["estimators"] == list(mod.ESTIMATORS) and exp["plan_history"][0]["kl_arm"] is False
    with pytest.raises(SystemExit, match="other settings.*steps"):
        mod.check_settings(runs, dataclasses.replace(s, steps=6), {})


def test_bootstraps_by_hand():
    mod = load_benchmark("rl_experiment")
    m, ci = mod.block_bootstrap({0: [1.0] * 20, 1: [3.0] * 20}, draws=200)
    assert m == 2.0 and ci[0] >= 1.0 and ci[1] <= 3.0 and ci[0] < 2.0 < ci[1]
    m, ci = mod.block_bootstrap({0: [0.5] * 30}, draws=50)
    assert m == 0.5 and ci == [0.5, 0.5]
    m, ci = mod.task_bootstrap({0: [0.0, 1.0, 0.0, 1.0]}, draws=500)
    assert m == 0.5 and 0.0 <= ci[0] < 0.5 < ci[1] <= 1.0


def test_rl_experiment_refuses_bad_arguments(tmp_path):
    mod = load_benchmark("rl_experiment")
    with pytest.raises(SystemExit, match="--tiers.*'expert'"):
        mod.main(["pool", "--tiny", "--out", str(tmp_path / "x"), "--tiers", "easy,expert"])
    with pytest.raises(SystemExit, match="--keep-min/--keep-max"):
        mod.main(["pool", "--tiny", "--out", str(tmp_path / "x"), "--keep-min", "5", "--keep-max", "3"])
    with pytest.raises(SystemExit, match="--pool: .*pool.json is missing"):
        mod.main(["run", "--tiny", "--pool", str(tmp_path / "nope"), "--out", str(tmp_path / "r")])
    with pytest.raises(SystemExit, match="multiples of num_iterations"):
        mod.main(["run", "--model", "m", "--pool", str(tmp_path), "--out", str(tmp_path / "r"), "--steps", "7"])
    with pytest.raises(SystemExit, match="--model: .* not a checkpoint folder"):
        mod.main(["pool", "--model", str(tmp_path), "--out", str(tmp_path / "p")])
    assert not (tmp_path / "p").exists() and not (tmp_path / "x").exists(), "nothing written before the error"
