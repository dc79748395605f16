"""``diffucoder train CONFIG.yaml [key=value ...]``: masked-diffusion pretraining / AR adaptation / SFT.

Overrides use dotted keys with YAML values (``optim.lr=1e-3 runtime.precision=bf16``). Under
``torchrun --nproc_per_node=N -m diffucoder.cli.main train ...`` every process runs this same command.
``--print-config`` shows the resolved config, ``--list-keys`` every key with its documentation.

Into a run_dir that already holds a run, the same config resumes from its newest checkpoint ("resuming from
step N"); a changed config is refused with the changed keys named, unless ``--allow-config-change``.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", nargs="?", help="training YAML (see configs/); omitted: the defaults")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. optim.steps=100 run_dir=runs/x")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("--list-keys", action="store_true", help="list every config key with its meaning")
    parser.add_argument("--allow-config-change", action="store_true",
                        help="continue a run_dir made with other settings under the new ones (the change is "
                             "logged in RUN/config_changes.jsonl); without it such a run is refused")


def print_keys(cls: type) -> None:
    """Every key of a settings dataclass with its default and documentation (``--list-keys``)."""
    from diffucoder.settings import describe_keys

    for key, default, doc in describe_keys(cls):
        print(f"{key} = {default!r}\n    {doc}")


def run(args: argparse.Namespace) -> int:
    from diffucoder.training.config import TrainConfig, load_config

    if args.list_keys:
        print_keys(TrainConfig)
        return 0
    overrides = list(args.overrides)
    config = args.config
    if config is not None and "=" in config:  # only overrides were given
        overrides.insert(0, config)
        config = None
    cfg = load_config(config, overrides)
    if args.print_config:
        import yaml

        print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")
        return 0
    from diffucoder.training import train
    from diffucoder.training.distributed import cleanup

    try:
        result = train(cfg, allow_config_change=args.allow_config_change)
    finally:
        cleanup()
    if result.final_path is not None:
        ev = result.eval
        msg = f"done: {result.steps} steps, {result.tokens_seen} tokens in {result.elapsed_s:.0f} s"
        if ev:
            msg += (f"; held-out masked CE {ev['masked_ce']:.3f} nats (unigram baseline "
                    f"{ev['unigram_masked_ce']:.3f}), ELBO/token {ev['elbo_per_token']:.3f}")
        print(msg)
        print(f"model: {result.final_path}  (try: diffucoder generate --model {result.final_path})")
    return 0
