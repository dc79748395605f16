"""Training-stage speed: one process with T threads vs N one-thread processes (a local DDP job), side by side.

Runs the default demo's own pretraining and SFT stages (``Demo.pretrain_overrides`` / ``Demo.sft_overrides``:
its data, prompt format, batch and model shape; from a fresh model, so the demo's tokenizer is the only thing
trained first) for ``--steps`` steps under each layout, the layouts taking turns round after round so a busy
moment of a shared machine slows all of them alike. The rate of a run is taken from its own ``metrics.jsonl``
(examples between the first logged step and the last, over the elapsed time between them), so start-up,
data building and the final save are not counted. The update is the same under every layout (the global
batch is split, every row's noise is a function of (seed, step, position)): this measures speed only.

    python benchmarks/train_processes.py                         # sft and pretrain, 1x2 vs 2x1, 2 rounds
    python benchmarks/train_processes.py --stages sft --steps 80 --rounds 3 --json train_processes.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffucoder.demo import FULL, Demo  # noqa: E402


def layouts(spec: str) -> list[tuple[int, int]]:
    """"1x2,2x1" -> [(processes, threads), ...]."""
    out = []
    for part in spec.split(","):
        p, _, t = part.partition("x")
        out.append((int(p), int(t)))
    return out


def rate(metrics: Path) -> tuple[float, float]:
    """(examples/s, tokens/s) between the first and the last logged training step of a run."""
    rows = [json.loads(x) for x in metrics.read_text().splitlines()]
    rows = [r for r in rows if "loss" in r and "elapsed_s" in r]
    a, b = rows[0], rows[-1]
    dt = b["elapsed_s"] - a["elapsed_s"]
    return (b["examples_seen"] - a["examples_seen"]) / dt, (b["tokens_seen"] - a["tokens_seen"]) / dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stages", nargs="+", default=["sft", "pretrain"], choices=["sft", "pretrain"])
    ap.add_argument("--layouts", default="1x2,2x1", help="processes x threads each, comma-separated")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="train-processes-"))
    base = replace(FULL, pretrain_steps=args.steps, sft_steps=args.steps, stage_minutes_cap=30.0)
    try:
        tok_demo = Demo(work / "tok", base, progress=False, log=lambda m: None)
        tok_demo.stage_tokenizer()
        results: dict[tuple[str, int, int], list[tuple[float, float]]] = {}
        print(f"load average before {os.getloadavg()[0]:.2f}; {args.steps} steps a run, {args.rounds} rounds")
        for rnd in range(args.rounds):
            for stage in args.stages:
                for procs, threads in layouts(args.layouts):
                    d = work / f"{stage}-{procs}x{threads}-{rnd}"
                    shutil.copytree(work / "tok" / "tokenizer", d / "tokenizer")
                    demo = Demo(d, replace(base, train_processes=procs, threads=threads), progress=False,
                                log=lambda m: None)
                    if stage == "sft":
                        demo._train("sft", base.sft_batch, demo.sft_overrides(None) + ["logging.every=10"])
                    else:
                        demo._train("pretrain", base.pretrain_batch, demo.pretrain_overrides() + ["logging.every=10"])
                    ex, tok = rate(d / stage / "metrics.jsonl")
                    results.setdefault((stage, procs, threads), []).append((ex, tok))
                    print(f"  round {rnd + 1}: {stage} {procs} process(es) x {threads} thread(s): {ex:.1f} examples/s")
                    shutil.rmtree(d)
        print(f"load average after {os.getloadavg()[0]:.2f}\n")
        print("| stage | processes x threads | examples/s (median) | tokens/s | vs first layout |")
        print("|---|---|---|---|---|")
        table = []
        for stage in args.stages:
            first = None
            for procs, threads in layouts(args.layouts):
                rs = results[(stage, procs, threads)]
                ex, tok = statistics.median(r[0] for r in rs), statistics.median(r[1] for r in rs)
                first = first or ex
                table.append({"stage": stage, "processes": procs, "threads": threads, "examples_per_s": ex,
                              "tokens_per_s": tok, "vs_first": ex / first, "rounds": len(rs)})
                print(f"| {stage} | {procs} x {threads} | {ex:.1f} | {tok:.0f} | {ex / first:.2f}x |")
        if args.json:
            args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)}, "results": table},
                                            indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
