"""The ``diffucoder`` console script.

Each sub-command lives in its own module under ``diffucoder.cli`` exposing ``add_arguments(parser)`` and
``run(args) -> int``; modules are imported only when their command runs, so ``diffucoder --help`` is fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "info": ("diffucoder.cli.info", "print parameters, config and special tokens of a checkpoint folder"),
    "tokenizer": ("diffucoder.cli.tokenizer", "train or inspect a byte-level BPE tokenizer"),
    "train": ("diffucoder.cli.train", "masked-diffusion pretraining / AR adaptation / SFT from a YAML config"),
    "generate": ("diffucoder.cli.generate", "diffusion decoding from a prompt"),
    "analyze": ("diffucoder.cli.analyze", "decoding-order analysis (AR-ness, entropy sink) with plots"),
    "eval": ("diffucoder.cli.eval", "score samples or a model on HumanEval / HumanEval+ / MBPP+ / synthetic"),
    "rl": ("diffucoder.cli.rl", "coupled-GRPO reinforcement learning from a YAML config"),
    "serve": ("diffucoder.cli.serve", "an OpenAI-compatible HTTP server with dynamic batching and a live view"),
    "demo": ("diffucoder.cli.demo", "the end-to-end pipeline on a CPU: tokenizer, pretrain, SFT, eval, analysis"),
}


def _available() -> dict[str, tuple[str, str]]:
    out = {}
    for name, (mod, help_) in COMMANDS.items():
        if importlib.util.find_spec(mod) is not None:
            out[name] = (mod, help_)
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="diffucoder", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    argv = sys.argv[1:]
    for name, (mod, help_) in _available().items():
        p = sub.add_parser(name, help=help_, description=help_)
        # import the module only for the command being run (or to print its own --help)
        if argv and argv[0] == name:
            importlib.import_module(mod).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    parser = build_parser()
    args = parser.parse_args()
    if args.version:
        from diffucoder import __version__

        print(__version__)
        return 0
    if not args.command:
        parser.print_help()
        return 2
    mod = importlib.import_module(_available()[args.command][0])
    try:
        return int(mod.run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
