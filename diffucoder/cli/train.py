"""``diffucoder train CONFIG.yaml [key=value ...]``: masked-diffusion pretraining / AR adaptation / SFT.

Overrides use dotted keys with YAML values (``optim.lr=1e-3 runtime.precision=bf16``). Under
``torchrun --nproc_per_node=N -m diffucoder.cli.main train ...`` every process runs this same command.
``--print-config`` shows the resolved config, ``--list-keys`` every key with its documentation.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", nargs="?", help="training YAML (see configs/); omitted: the defaults")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. optim.steps=100 run_dir=runs/x")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("--list-keys", action="store_true", help="list every config key with its meaning")


def _list_keys() -> None:
    from diffucoder.training.config import TrainConfig, field_docs

    def walk(cls: type, prefix: str) -> None:
        docs = field_docs(cls)
        for f in dataclasses.fields(cls):
            default = f.default if f.default is not dataclasses.MISSING else (
                f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
            if dataclasses.is_dataclass(default):
                walk(type(default), f"{prefix}{f.name}.")
            else:
                print(f"{prefix}{f.name} = {default!r}\n    {docs.get(f.name, '')}")

    walk(TrainConfig, "")


def run(args: argparse.Namespace) -> int:
    from diffucoder.training.config import ConfigError, load_config

    if args.list_keys:
        _list_keys()
        return 0
    overrides = list(args.overrides)
    config = args.config
    if config is not None and "=" in config:  # only overrides were given
        overrides.insert(0, config)
        config = None
    try:
        cfg = load_config(config, overrides)
    except (ConfigError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.print_config:
        import yaml

        print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")
        return 0
    from diffucoder.training import train
    from diffucoder.training.distributed import cleanup

    try:
        result = train(cfg)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
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
