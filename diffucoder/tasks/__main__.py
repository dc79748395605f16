"""Write synthetic tasks to a jsonl file: ``python -m diffucoder.tasks --split train --n 1000 --out train.jsonl``.

``--format`` picks the row shape: ``task`` (the AceCode-shaped Task rows, default), ``sft`` (``messages``),
``sft-pc`` (``prompt``/``completion``), ``rl`` (prompt plus ``test_cases``) or ``eval`` (HumanEval-like rows).
``--stats`` prints the size of the task space and the counts per tier instead of (or as well as) writing.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter

from diffucoder.tasks.concepts import TIERS
from diffucoder.tasks.formats import to_eval_row, to_rl_record, to_sft_record, write_jsonl
from diffucoder.tasks.generator import SPLITS, catalogue_stats, generate_tasks

_FORMATS = {
    "task": lambda t: t.to_dict(),
    "sft": lambda t: to_sft_record(t, "messages"),
    "sft-pc": lambda t: to_sft_record(t, "prompt_completion"),
    "rl": to_rl_record,
    "eval": to_eval_row,
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m diffucoder.tasks", description=__doc__.splitlines()[0])
    p.add_argument("--split", choices=SPLITS, default="train")
    p.add_argument("--n", type=int, default=1000, help="number of tasks")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tiers", default=",".join(TIERS), help="comma-separated subset of " + ",".join(TIERS))
    p.add_argument("--format", choices=sorted(_FORMATS), default="task")
    p.add_argument("--out", help="output jsonl path")
    p.add_argument("--stats", action="store_true", help="print catalogue size and counts per tier")
    args = p.parse_args(argv)
    if not args.out and not args.stats:
        p.error("give --out PATH and/or --stats")
    try:
        tasks = generate_tasks(args.n, args.split, args.seed, tuple(t for t in args.tiers.split(",") if t),
                               progress=True)
    except ValueError as e:
        p.error(str(e))
    if args.out:
        count = write_jsonl((_FORMATS[args.format](t) for t in tasks), args.out)
        print(f"wrote {count} {args.split} tasks ({args.format} rows) to {args.out}")
    if args.stats:
        stats = catalogue_stats()
        for tier in TIERS:
            print(f"{tier:6s} concepts={stats.concepts[tier]:2d} combination keys: "
                  f"train={stats.combos[(tier, 'train')]} test={stats.combos[(tier, 'test')]}")
        counts = Counter(t.tier for t in tasks)
        distinct = len({t.solution for t in tasks})
        print(f"generated: {dict(counts)}; distinct solutions {distinct}/{len(tasks)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
