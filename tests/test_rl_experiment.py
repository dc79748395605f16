"""benchmarks/rl_experiment.py end to end on a tiny random model (pipeline check; its numbers mean nothing)."""

from __future__ import annotations

import json

import pytest
from conftest import load_benchmark


@pytest.mark.slow
def test_rl_experiment_tiny_pipeline(tmp_path):
    mod = load_benchmark("rl_experiment")
    out = tmp_path / "x"
    rc = mod.main(["--tiny", "--out", str(out), "--estimators", "coupled,d1", "--steps", "2", "--train-tasks", "8",
                   "--tiers", "easy",
                   "--eval-tasks", "2", "--max-completion-length", "8", "--diffusion-steps", "4", "--batch", "4",
                   "--num-generations", "2"])
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    assert [r["estimator"] for r in res["runs"]] == ["coupled", "d1"]
    assert all(len(r["history"]) == 2 and 0.0 <= r["after"]["pass@1"] <= 1.0 for r in res["runs"])
    assert res["runs"][0]["passes"] == 3 and res["runs"][1]["passes"] == 3
    assert (out / "reward_curves.png").stat().st_size > 1000


def test_rl_experiment_refuses_unknown_tiers(tmp_path):
    mod = load_benchmark("rl_experiment")
    with pytest.raises(SystemExit, match="--tiers.*'expert'"):
        mod.main(["--tiny", "--out", str(tmp_path / "x"), "--tiers", "easy,expert"])
