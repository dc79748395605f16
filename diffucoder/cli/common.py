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

