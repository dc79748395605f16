"""AR-ness of a decoding order (DiffuCoder paper, section 4.1; reference.md section 4).

``order`` lists the completion positions (0 = the first column after the prompt) in the order they were
revealed, one per step: p_1, ..., p_T. The prompt counts as already revealed, left to right, so the history
before step 1 is ..., -3, -2, -1 (``prompt_length=None``: as long as needed; an int limits it).

- **Local AR-ness@k**: the fraction of steps t at which the k most recently revealed positions are exactly
  p_t - 1, p_t - 2, ..., p_t - k (the new token extends a strictly left-to-right run of length k). Decreasing
  in k.
- **Global AR-ness@k**: the fraction of steps t at which p_t is among the k left-most positions still masked
  before step t. Increasing in k.

Both are 1 for every k when decoding is purely left to right. Right-to-left gives local AR-ness 0 (for T >= 2)
and global AR-ness@k = min(k, T) / T (only the last k steps pick one of the k left-most masks).

Worked example, order [0, 1, 3, 2] (T = 4), unbounded prompt:

- local@1: step 1 reveals 0 after prompt position -1 (yes); step 2 reveals 1 after 0 (yes); step 3 reveals 3
  after 1 (no); step 4 reveals 2 after 3 (no): 2/4 = 0.5.
- local@2: step 1 needs (-1, -2) (yes); step 2 needs (0, -1) (yes); steps 3, 4 no: 0.5.
- global@1: masked {0,1,2,3} pick 0 (yes); {1,2,3} pick 1 (yes); {2,3} pick 3 (no); {2} pick 2 (yes): 0.75.
- global@2: {0,1} holds 0; {1,2} holds 1; {2,3} holds 3; {2} holds 2: 1.0.

When a step reveals several positions (fewer steps than tokens), flatten them by confidence rank
(:meth:`diffucoder.sampling.DecodeTrace.order` does): the metric is then an approximation, as in the paper.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass


def _check(order: Sequence[int], k: int) -> list[int]:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    order = [int(p) for p in order]
    if not order:
        raise ValueError("order is empty: nothing was revealed")
    if min(order) < 0:
        raise ValueError(f"order holds a negative position ({min(order)}); positions count from the first "
                         f"completion column")
    if len(set(order)) != len(order):
        raise ValueError("order reveals a position twice")
    return order


def local_ar_ness(order: Sequence[int], k: int, prompt_length: int | None = None) -> float:
    """Fraction of steps whose k previously revealed positions are p_t-1, ..., p_t-k (see the module doc)."""
    order = _check(order, k)
    hits = 0
    for t, p in enumerate(order):
        ok = True
        for j in range(1, k + 1):
            if t - j >= 0:
                prev = order[t - j]
            else:  # reaching into the prompt: the (j - t)-th prompt position from its end
                back = j - t
                if prompt_length is not None and back > prompt_length:
                    ok = False
                    break
                prev = -back
            if prev != p - j:
                ok = False
                break
        hits += ok
    return hits / len(order)


def global_ar_ness(order: Sequence[int], k: int) -> float:
    """Fraction of steps at which p_t is among the k left-most still-masked positions (see the module doc)."""
    order = _check(order, k)
    remaining = sorted(order)
    hits = 0
    for p in order:
        # index of p among the still-masked positions, left to right
        rank = remaining.index(p)
        hits += rank < k
        remaining.pop(rank)
    return hits / len(order)


@dataclass
class ArNessCurves:
    """AR-ness@k for k in ``ks``, averaged over several orders (one per decoded sample)."""

    ks: list[int]
    local: list[float]
    global_: list[float]
    num_orders: int

    def to_dict(self) -> dict:
        return {"ks": self.ks, "local": self.local, "global": self.global_, "num_orders": self.num_orders}


def ar_ness_curves(orders: Iterable[Sequence[int]], ks: Sequence[int] = tuple(range(1, 11)),
                   prompt_length: int | None = None) -> ArNessCurves:
    """Mean local and global AR-ness@k over ``orders`` for each k in ``ks``."""
    orders = [list(o) for o in orders if len(o)]
    if not orders:
        raise ValueError("no non-empty order to analyse")
    ks = [int(k) for k in ks]
    local = [sum(local_ar_ness(o, k, prompt_length) for o in orders) / len(orders) for k in ks]
    glob = [sum(global_ar_ness(o, k) for o in orders) / len(orders) for k in ks]
    return ArNessCurves(ks=ks, local=local, global_=glob, num_orders=len(orders))
