"""Where and how fast a model runs: the device to use and the default number of torch CPU threads.

    device = resolve_device("auto")                  # cuda when available, else cpu
    threads = apply_threads(None, model, device)     # 1 thread for a small model on a CPU, else torch's default

Why one thread for small models: at the widths of the CPU presets (64-448), every matmul of a decoding step
is too small to split well, and each extra thread adds synchronisation and, on a machine shared with other
work, a core to wait for. ``benchmarks/threads.py`` measures it side by side, thread counts taking turns in one
process: on 2 shared cores, decoding 64 tokens in 32 steps took 7.1x (tiny), 7.3x (5m) and 6.6x (20m) longer
on two threads than on one at batch 1, 3.1x / 4.1x at batch 8. The commands that decode (``generate``,
``analyze``, ``eval``, ``rl``) use this default; training keeps torch's (there the gap is smaller, 2.9x for 5m
and 1.8x for 20m on the same busy machine, and larger batches split better; a quiet machine was not measured:
set ``runtime.threads=1`` on a busy one).
Larger models (a 7B on a many-core CPU) keep torch's default.
"""

from __future__ import annotations

from typing import Any

from diffucoder.errors import InputError

SMALL_MODEL_PARAMS = 50_000_000
"""Models with fewer parameters run on one CPU thread unless a thread count is given (benchmarks/threads.py)."""


def resolve_device(name: str | None) -> Any:
    """``"auto"``/None -> cuda when available, else cpu; ``"cpu"``, ``"cuda"``, ``"cuda:N"`` checked to exist."""
    import torch

    name = (name or "auto").strip()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise InputError(f"--device {name!r}: not a device (use auto, cpu, cuda or cuda:N)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"--device {name}: CUDA is not available on this machine (use cpu or auto)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InputError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type != "cpu":
        raise InputError(f"--device {name!r}: only cpu and cuda are supported")
    return dev


def default_threads(num_parameters: int) -> int | None:
    """The CPU thread count for a model of this size when none is given: 1 below ``SMALL_MODEL_PARAMS``,
    else None (torch's default)."""
    return 1 if num_parameters < SMALL_MODEL_PARAMS else None


def apply_threads(threads: int | None, model: Any = None, device: Any = None) -> int:
    """Set torch's CPU thread count: ``threads`` when given, else :func:`default_threads` of ``model`` (on a CPU
    device); returns the count in effect."""
    import torch

    if threads is not None:
        if threads < 1:
            raise InputError(f"--threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)
    elif model is not None and (device is None or getattr(device, "type", str(device)) == "cpu"):
        n = default_threads(sum(p.numel() for p in model.parameters()))
        if n is not None:
            torch.set_num_threads(n)
    return torch.get_num_threads()


__all__ = ["SMALL_MODEL_PARAMS", "apply_threads", "default_threads", "resolve_device"]
