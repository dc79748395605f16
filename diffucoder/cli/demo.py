"""``diffucoder demo``: the whole pipeline on a CPU (see :mod:`diffucoder.demo`)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    from diffucoder.demo import STAGES

    p.add_argument("--run-dir", type=Path, default=Path("runs/demo"),
                   help="output folder; an interrupted demo resumes from its last finished stage (default runs/demo, "
                        "runs/demo-quick with --quick)")
    p.add_argument("--quick", action="store_true", help="about 2 minutes on 2 CPU cores: evaluation, analysis and RL from the trained 5M "
                        "checkpoint that ships with diffucoder (the default run trains its own first)")
    p.add_argument("--seed", type=int, default=0, help="seed of every stage (data, initialisation, sampling)")
    p.add_argument("--stop-after", choices=STAGES, default=None, help="stop after this stage")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="change one budget of the chosen profile (repeatable), e.g. --set sft_steps=2400; the "
                        "keys are DemoSettings' fields (diffucoder/demo.py)")
    p.add_argument("--allow-config-change", action="store_true",
                   help="continue a run folder made with other settings (finished stages are kept, later ones use "
                        "the new settings); without it such a run is refused")


def run(args: argparse.Namespace) -> int:
    from diffucoder.demo import FULL, QUICK, Demo, apply_overrides, settings_for_start
    from diffucoder.errors import write_text_atomic

    settings = settings_for_start(apply_overrides(QUICK if args.quick else FULL, args.overrides))
    run_dir = args.run_dir
    if args.quick and run_dir == Path("runs/demo"):
        run_dir = Path("runs/demo-quick")
    t0 = time.time()
    demo = Demo(run_dir, settings, seed=args.seed, progress=not args.no_progress,
                allow_config_change=args.allow_config_change)
    summary = demo.run(stop_after=args.stop_after)
    print(f"\n[demo] finished in {time.time() - t0:.0f}s: {run_dir}")
    for name in ("eval_sft", "eval_rl"):
        e = summary.get(name) or {}
        for tier, row in (e.get("by_tier") or {}).items():
            scores = ", ".join(f"{'greedy pass@1' if k == 'greedy' else k} {100 * v:.1f}%" for k, v in row.items()
                               if k == "greedy" or k.startswith("pass@"))
            print(f"  {name:8s} {tier:6s} ({row['tasks']} tasks): {scores}")
    rep = (summary.get("report") or {}).get("report")
    if rep:
        print(f"  report: {rep}")
    write_text_atomic(run_dir / "summary.json", json.dumps(summary, indent=2, default=str))
    return 0
