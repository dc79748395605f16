"""``diffucoder rl CONFIG.yaml [key=value ...]``: coupled-GRPO from a YAML config.

Every field of :class:`diffucoder.rl.GRPOConfig` can be overridden on the command line (``beta=0``,
``estimator=decoupled``, ``resume_from_checkpoint=latest``); ``--list-keys`` lists them with their meaning. The
same command runs under ``torchrun --nproc_per_node=N -m diffucoder.cli.main rl ...`` (each rank decodes and
scores its own rollouts). Prints a JSON summary (steps, last rewards, counters, output folders) at the end.

Resuming (``resume_from_checkpoint=latest``) under a config that differs from the checkpoint's is refused with
the changed keys named, unless ``--allow-config-change``.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", type=Path, nargs="?", help="YAML file with GRPOConfig fields (configs/rl_*.yaml)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="override config fields (YAML values)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument("--list-keys", action="store_true", help="list every config key with its meaning")
    p.add_argument("--allow-config-change", action="store_true",
                   help="resume a checkpoint made with other settings under the new ones (the change is logged in "
                        "OUTPUT_DIR/config_changes.jsonl); without it such a resume is refused")


def run(args: argparse.Namespace) -> int:
    from diffucoder.errors import InputError
    from diffucoder.rl import GRPOConfig, train_grpo

    if args.list_keys:
        from diffucoder.cli.train import print_keys

        print_keys(GRPOConfig)
        return 0
    if args.config is None:
        raise InputError("diffucoder rl needs a config file (e.g. configs/rl_synthetic_cpu.yaml); --list-keys "
                         "shows every key")
    cfg = GRPOConfig.from_yaml(args.config, args.overrides)
    if args.print_config:
        print(json.dumps(cfg.to_dict(), indent=2, default=str))
        return 0
    if cfg.model_name_or_path and os.environ.get("WORLD_SIZE", "1") == "1":
        import torch

        from diffucoder.model.checkpoint import read_config
        from diffucoder.runtime import default_threads, resolve_device

        if resolve_device(cfg.device).type == "cpu":
            n = default_threads(read_config(Path(cfg.model_name_or_path)).num_parameters())
            if n is not None:
                torch.set_num_threads(n)  # a small model decodes and trains faster on one thread
    res = train_grpo(cfg, allow_config_change=args.allow_config_change)
    last = res.history[-1] if res.history else {}
    summary = {
        "steps": res.steps, "stopped_early": res.stopped_early, "output_dir": str(res.output_dir),
        "final_model": str(res.final_model_dir) if res.final_model_dir else None,
        "last_checkpoint": str(res.last_checkpoint) if res.last_checkpoint else None,
        "reward_mean_first": res.history[0]["reward_mean"] if res.history else None,
        "reward_mean_last": last.get("reward_mean"), "counters": res.counters,
    }
    if os.environ.get("RANK", "0") == "0":
        print(json.dumps(summary, indent=2))
    return 0 if res.stopped_early is None else 1
