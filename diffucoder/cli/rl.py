"""``diffucoder rl CONFIG.yaml [key=value ...]``: coupled-GRPO from a YAML config.

Every field of :class:`diffucoder.rl.GRPOConfig` can be overridden on the command line (``beta=0``,
``estimator=decoupled``, ``resume_from_checkpoint=latest``). The same command runs under
``torchrun --nproc_per_node=N -m diffucoder.cli.main rl ...`` (each rank decodes and scores its own rollouts).
Prints a JSON summary (steps, last rewards, counters, output folders) at the end.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", type=Path, help="YAML file with GRPOConfig fields (configs/rl_*.yaml)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="override config fields (YAML values)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")


def run(args: argparse.Namespace) -> int:
    from diffucoder.model import CheckpointError
    from diffucoder.rl import GRPOConfig, RLConfigError, train_grpo

    try:
        cfg = GRPOConfig.from_yaml(args.config, args.overrides)
    except (RLConfigError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.print_config:
        print(json.dumps(cfg.to_dict(), indent=2, default=str))
        return 0
    try:
        res = train_grpo(cfg)
    except (RLConfigError, CheckpointError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    last = res.history[-1] if res.history else {}
    summary = {
        "steps": res.steps, "stopped_early": res.stopped_early, "output_dir": str(res.output_dir),
        "final_model": str(res.final_model_dir) if res.final_model_dir else None,
        "last_checkpoint": str(res.last_checkpoint) if res.last_checkpoint else None,
        "reward_mean_first": res.history[0]["reward_mean"] if res.history else None,
        "reward_mean_last": last.get("reward_mean"), "counters": res.counters,
    }
    import os

    if os.environ.get("RANK", "0") == "0":
        print(json.dumps(summary, indent=2))
    return 0 if res.stopped_early is None else 1
