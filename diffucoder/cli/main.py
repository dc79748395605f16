"""The ``diffucoder`` console script.

Each sub-command lives in its own module under ``diffucoder.cli`` exposing ``add_arguments(parser)`` and
``run(args) -> int``; modules are imported only when their command runs, so ``diffucoder --help`` is fast.

One error boundary for every command (:func:`main`): the project's own errors (a bad checkpoint, config,
dataset, argument, prompt file; a sandbox that cannot start; a full disk) print one ``error: ...`` line naming
the file or argument and the problem, and exit with status 2; ``--debug`` (or ``DIFFUCODER_DEBUG=1``) shows the
traceback as well. Anything else is a bug and keeps its traceback. Ctrl-C exits with 130, a closed pipe
(``... | head``) quietly.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys
import warnings

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
# what an interrupted command keeps, said after Ctrl-C
RESUMABLE = {
    "train": "the last complete checkpoint is kept; the same command resumes from it",
    "rl": "the last complete checkpoint is kept; resume_from_checkpoint=latest resumes from it",
    "demo": "finished stages are kept; the same command resumes from the next one",
    "eval": "samples and verdicts written so far are kept; the same command continues",
}


def _available() -> dict[str, tuple[str, str]]:
    out = {}
    for name, (mod, help_) in COMMANDS.items():
        if importlib.util.find_spec(mod) is not None:
            out[name] = (mod, help_)
    return out


def _debug_flag(p: argparse.ArgumentParser, default: object) -> None:
    p.add_argument("--debug", action="store_true", default=default,
                   help="show the full traceback of an error (also DIFFUCODER_DEBUG=1)")


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="diffucoder", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    _debug_flag(parser, False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    argv = sys.argv[1:] if argv is None else argv
    wanted = next((a for a in argv if not a.startswith("-")), None)
    for name, (mod, help_) in _available().items():
        p = sub.add_parser(name, help=help_, description=help_)
        _debug_flag(p, argparse.SUPPRESS)  # the top-level value stands unless given after the command
        # import the module only for the command being run (or to print its own --help)
        if wanted == name:
            importlib.import_module(mod).add_arguments(p)
    return parser


def user_error_message(e: BaseException) -> str | None:
    """The one-line message for an error the user can act on (the project's own errors, a missing or
    unreadable file, a full disk); None for anything else (a bug: keep the traceback)."""
    from diffucoder.errors import DiffucoderError, is_disk_full

    if isinstance(e, DiffucoderError):
        return str(e)
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        where = e.filename or "a file being written"
        return f"{where}: no space left on device"
    if is_disk_full(e):
        return f"no space left on device ({e})"
    if isinstance(e, (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError,
                      FileExistsError)):
        if e.filename is not None:
            return f"{e.filename}: {e.strerror or e}"
        return str(e)
    if type(e).__name__ == "OutOfMemoryError":  # torch.OutOfMemoryError (CUDA)
        return f"out of device memory ({str(e).splitlines()[0]}); try a smaller batch"
    return None


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """User warnings (ours, or raised through another library's wrapper) as one ``warning: ...`` line; other
    categories (deprecations...) in Python's usual format."""
    out = file or sys.stderr
    ours = f"{os.sep}diffucoder{os.sep}" in str(filename) or issubclass(category, UserWarning)
    text = f"warning: {message}\n" if ours else warnings.formatwarning(message, category, filename, lineno, line)
    try:
        out.write(text)
    except (OSError, ValueError):
        pass


def main(argv: list[str] | None = None) -> int:
    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    args_list = sys.argv[1:]
    debug = bool(os.environ.get("DIFFUCODER_DEBUG")) or "--debug" in args_list
    previous_showwarning = warnings.showwarning
    warnings.showwarning = _show_warning
    command = None
    try:
        parser = build_parser(args_list)
        try:
            args = parser.parse_args(args_list)
        except SystemExit as e:  # a usage error (already printed, naming the argument) or --help
            return e.code if isinstance(e.code, int) else 2
        debug = debug or bool(getattr(args, "debug", False))
        if args.version:
            from diffucoder import __version__

            print(__version__)
            return 0
        if not args.command:
            parser.print_help()
            return 2
        command = args.command
        mod = importlib.import_module(_available()[args.command][0])
        return int(mod.run(args) or 0)
    except KeyboardInterrupt:
        hint = RESUMABLE.get(command or "")
        print(f"interrupted{f' ({hint})' if hint else ''}", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`diffucoder train --list-keys | head`): stop quietly
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 0
    except Exception as e:
        message = user_error_message(e)
        if message is None:
            raise
        if debug:
            import traceback

            traceback.print_exc()
        print(f"error: {message}", file=sys.stderr)
        return 2
    finally:
        warnings.showwarning = previous_showwarning


if __name__ == "__main__":
    sys.exit(main())
