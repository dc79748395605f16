"""Timeouts are re-checked before they are cached as final (harness level, through the statuses the sandbox
returns): a busy machine must never leave a correct program cached as "too slow"."""

from __future__ import annotations

import json
import warnings

import pytest

from diffucoder.evaluation.datasets import Dataset, tasks_from_rows
from diffucoder.evaluation.harness import EvalSettings, score_samples
from diffucoder.execution import ExecResult

CANONICAL = "def add(a, b):\n    return a + b\n"
SAMPLE = "def add(a, b):\n    return b + a\n"
ROWS = [{"task_id": "t/0", "question": "add", "test_cases": ["assert add(1, 2) == 3"], "solution": CANONICAL,
         "entry_point": "add"}]


def _dataset() -> Dataset:
    return Dataset("toy", tasks_from_rows(ROWS, timeout_s=1.0), "toy", "sha-toy")


def _result(status: str) -> ExecResult:
    ok = status == "passed"
    return ExecResult(status, ok, [ok], [], 0.01)


class ScriptedPool:
    """A pool whose verdicts follow a script: ``first`` for the first pass, then per re-check round what the
    canonical solution and the sample get. Records every program it was asked to run."""

    def __init__(self, first: str, rounds: list[tuple[str, str]]):
        self.first, self.rounds, self.ran = first, list(rounds), []

    def imap_unordered(self, jobs, progress=False):
        for i, j in enumerate(jobs):
            self.ran.append(("first", j.program))
            yield i, _result(self.first)

    def map(self, jobs, progress=False):
        canon, sample = self.rounds.pop(0)
        out = []
        for j in jobs:
            self.ran.append(("recheck", j.program))
            out.append(_result(canon if j.program == CANONICAL else sample))
        return out


def _cache(tmp_path) -> list[dict]:
    p = tmp_path / "eval_cache.jsonl"
    return [json.loads(x) for x in p.read_text().splitlines()] if p.exists() else []


def test_a_timeout_is_final_when_the_canonical_passes_beside_it(tmp_path):
    pool = ScriptedPool("timeout", [("passed", "timeout")])
    v = score_samples(_dataset(), {"t/0": [SAMPLE]}, tmp_path, EvalSettings(), pool=pool, progress=False)
    row = v["t/0"][0]
    assert row["status"] == "timeout" and row["rechecked"] == 1 and not row.get("unverified")
    assert ("recheck", CANONICAL) in pool.ran and ("recheck", SAMPLE) in pool.ran
    assert [r["status"] for r in _cache(tmp_path)] == ["timeout"]
    # final: a rerun does not run it again
    pool2 = ScriptedPool("passed", [])
    score_samples(_dataset(), {"t/0": [SAMPLE]}, tmp_path, EvalSettings(), pool=pool2, progress=False)
    assert pool2.ran == []


def test_a_sample_that_passes_on_the_recheck_is_judged_by_it(tmp_path):
    pool = ScriptedPool("timeout", [("passed", "passed")])
    v = score_samples(_dataset(), {"t/0": [SAMPLE]}, tmp_path, EvalSettings(), pool=pool, progress=False)
    assert v["t/0"][0]["status"] == "passed" and v["t/0"][0]["plus"] and v["t/0"][0]["rechecked"] == 1
    assert [r["status"] for r in _cache(tmp_path)] == ["passed"]


def test_when_the_canonical_also_times_out_the_verdict_is_not_cached(tmp_path, monkeypatch):
    import diffucoder.evaluation.harness as H

    monkeypatch.setattr(H.time, "sleep", lambda s: None)
    pool = ScriptedPool("timeout", [("timeout", "timeout")] * H.RECHECK_ROUNDS)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        v = score_samples(_dataset(), {"t/0": [CANONICAL]}, tmp_path, EvalSettings(), pool=pool, progress=False)
    row = v["t/0"][0]
    assert row["status"] == "timeout" and row["unverified"] and not row["plus"]
    assert _cache(tmp_path) == [], "an unconfirmed timeout is never cached"
    assert any("could not be confirmed" in str(w.message) for w in caught)
    # the next run (a quieter machine) checks it again and caches the real verdict
    pool2 = ScriptedPool("passed", [])
    v = score_samples(_dataset(), {"t/0": [CANONICAL]}, tmp_path, EvalSettings(), pool=pool2, progress=False)
    assert v["t/0"][0]["status"] == "passed" and [r["status"] for r in _cache(tmp_path)] == ["passed"]


def test_an_old_unrechecked_cached_timeout_is_run_again(tmp_path):
    from diffucoder.evaluation.harness import _key

    ds = _dataset()
    key = _key("t/0", CANONICAL, ds.sha256, EvalSettings())
    (tmp_path / "eval_cache.jsonl").write_text(json.dumps(
        {"key": key, "task_id": "t/0", "status": "timeout", "base": False, "plus": False, "error": "",
         "wall_s": 1.0, "isolation": "x"}) + "\n")
    pool = ScriptedPool("passed", [])
    v = score_samples(ds, {"t/0": [CANONICAL]}, tmp_path, EvalSettings(), pool=pool, progress=False)
    assert v["t/0"][0]["status"] == "passed" and pool.ran == [("first", CANONICAL)]


def test_real_sandbox_infinite_loop_is_a_confirmed_timeout(tmp_path):
    from diffucoder.execution import SandboxPool

    loop = "def add(a, b):\n    while True:\n        pass\n"
    with SandboxPool(workers=2) as pool:
        v = score_samples(_dataset(), {"t/0": [loop, SAMPLE]}, tmp_path, EvalSettings(), pool=pool, progress=False)
    slow, good = v["t/0"]
    assert slow["status"] == "timeout" and slow["rechecked"] == 1 and not slow.get("unverified")
    assert good["status"] == "passed" and "rechecked" not in good
    assert sorted(r["status"] for r in _cache(tmp_path)) == ["passed", "timeout"]
