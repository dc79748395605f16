"""A small seeded random source for the task generator, backed by an explicit ``torch.Generator``.

The generator draws many tiny choices (a constant, a phrasing, a list length); one ``torch.randint`` call per
choice would dominate the run time, so :class:`TaskRng` draws 64-bit integers from the ``torch.Generator`` in
blocks and serves choices from the block. The global RNGs (``random``, ``numpy``, ``torch``) are never touched,
and the same seed gives the same stream on every machine (torch's CPU Mersenne Twister).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")

_BLOCK = 4096
_HIGH = 2**62


class TaskRng:
    """Seeded source of integers and choices (inclusive ``randint``, ``choice``, ``sample``)."""

    def __init__(self, seed: int) -> None:
        import torch

        if not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        self._torch = torch
        self._gen = torch.Generator().manual_seed(seed)
        self._buf: list[int] = []

    def _next(self) -> int:
        if not self._buf:
            block = self._torch.randint(0, _HIGH, (_BLOCK,), generator=self._gen, dtype=self._torch.int64)
            self._buf = block.tolist()[::-1]
        return self._buf.pop()

    def randint(self, lo: int, hi: int) -> int:
        """An integer in ``[lo, hi]`` (both ends included; the modulo bias is below 1e-15)."""
        if hi < lo:
            raise ValueError(f"empty range [{lo}, {hi}]")
        return lo + self._next() % (hi - lo + 1)

    def choice(self, seq: Sequence[T]) -> T:
        if not seq:
            raise ValueError("choice from an empty sequence")
        return seq[self.randint(0, len(seq) - 1)]

    def sample(self, seq: Sequence[T], k: int) -> list[T]:
        """``k`` distinct elements of ``seq`` in random order."""
        if k > len(seq):
            raise ValueError(f"cannot sample {k} from {len(seq)} elements")
        pool = list(seq)
        out = []
        for _ in range(k):
            out.append(pool.pop(self.randint(0, len(pool) - 1)))
        return out

    def coin(self, p: float = 0.5) -> bool:
        return self._next() < p * _HIGH
