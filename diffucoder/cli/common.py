"""Pieces shared by the commands: checked argument types, the --device/--threads/--dtype flags, loading a
checkpoint folder with the folder itself checked first."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any


def _number(text: str, kind: type) -> float:
    try:
        v = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got {text!r}") \
            from None
    if kind is float and not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return v


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    v = int(_number(text, int))
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return v


def nonneg_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    v = int(_number(text, int))
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {v}")
    return v


def nonneg_float(text: str) -> float:
    """argparse type: a finite number >= 0."""
    v = _number(text, float)
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {v:g}")
    return v


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    v = _number(text, float)
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {v:g}")
    return v


def unit_float(text: str) -> float:
    """argparse type: a number in (0, 1]."""
    v = _number(text, float)
    if not 0 < v <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {v:g}")
    return v


def top_k_arg(text: str) -> int | None:
    """``--top-k``: an integer >= 1, or 0 / none for off."""
    if str(text).strip().lower() in ("0", "none", "off"):
        return None
    return positive_int(text)


def add_fast_decoding_args(p: argparse.ArgumentParser) -> None:
    """``--top-k``, ``--block-length``, ``--threshold``, ``--use-cache``, ``--cache-refresh``, ``--early-stop``: the
    ``diffusion_generate`` options beyond the reference's first ones (docs/decoding.md)."""
    p.add_argument("--top-k", type=top_k_arg, default=argparse.SUPPRESS,
                   help="sample among the k most likely tokens (0/none: off; default: as the reference, the "
                        "checkpoint config's top_k, else 50)")
    p.add_argument("--block-length", type=positive_int, default=None,
                   help="semi-autoregressive blocks of this many tokens (the last may be shorter)")
    p.add_argument("--threshold", type=unit_float, default=None,
                   help="parallel decoding: reveal every position whose token probability exceeds this, in (0, 1]")
    p.add_argument("--use-cache", choices=["none", "prefix", "dual"], default="none",
                   help="KV cache (with --block-length): prefix caches the prompt and finished blocks, dual also the "
                        "masked suffix (an approximation; docs/decoding.md)")
    p.add_argument("--cache-refresh", type=positive_int, default=None,
                   help="with --use-cache: also refresh the cache every N steps inside a block (1: exact)")
    p.add_argument("--early-stop", action="store_true",
                   help="stop once every answer has ended (the text is unchanged)")


def fast_decoding_kwargs(args: argparse.Namespace) -> dict:
    """The ``diffusion_generate`` keyword arguments of :func:`add_fast_decoding_args`'s flags (top_k only when
    given, so the reference's inherited default applies otherwise)."""
    out = {"block_length": args.block_length, "threshold": args.threshold,
           "use_cache": None if args.use_cache == "none" else args.use_cache,
           "cache_refresh": args.cache_refresh, "early_stop": args.early_stop}
    if hasattr(args, "top_k"):  # not given: the reference's inherited default applies
        out["top_k"] = args.top_k
    if out["cache_refresh"] is not None and out["use_cache"] is None:
        from diffucoder.errors import InputError

        raise InputError("--cache-refresh needs --use-cache prefix or dual")
    return out


def add_runtime_args(p: argparse.ArgumentParser, dtype: bool = True) -> None:
    """``--device``, ``--threads`` (and ``--dtype``) for commands that run a model."""
    p.add_argument("--device", default="auto",
                   help="where the model runs: auto (CUDA when available, else CPU), cpu, cuda or cuda:N")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="torch CPU threads (default: 1 for models under 50M parameters, which decode faster on "
                        "one thread; torch's default for larger ones)")
    if dtype:
        p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "auto"],
                       help="weights dtype (auto: as stored); on CPUs without AMX float32 is the fast one")


def load_model(path: Path, dtype: str = "float32", device: str = "auto", threads: int | None = None
               ) -> tuple[Any, Any, Any]:
    """``(model, tokenizer, device)`` from a checkpoint folder: the folder and its config are checked first (so
    a missing folder is reported as such, not as a missing tokenizer), the threads set after loading."""
    import torch

    from diffucoder.model import DreamModel
    from diffucoder.model.checkpoint import read_config
    from diffucoder.runtime import apply_threads, resolve_device
    from diffucoder.tokenizer import load_tokenizer

    dev = resolve_device(device)
    read_config(path)  # CheckpointError: no such folder / not a checkpoint / bad config.json
    tok = load_tokenizer(path)
    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "auto": "auto"}[dtype]
    model = DreamModel.from_pretrained(path, torch_dtype=torch_dtype).to(dev).eval()
    apply_threads(threads, model, dev)
    return model, tok, dev


def check_output_dir(path: Path, flag: str = "--out") -> Path:
    """``path`` as a folder to write into: an InputError naming ``flag`` when it exists as a file."""
    from diffucoder.errors import InputError

    if path.exists() and not path.is_dir():
        raise InputError(f"{flag} {path}: exists and is not a folder")
    return path

