"""Trace summaries: the first-step confidence profile (the "entropy sink") and the reveal heatmap.

Paper section 4: at the first step of decoding, confidence over the completion is L-shaped, highest right after
the prompt, which pulls a dLLM towards left-to-right order ("entropy sink"). :func:`first_step_profile`
averages ``DecodeTrace.first_step_confidence`` by completion position; :func:`reveal_heatmap` counts which
step revealed which position, averaged over samples.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:  # pragma: no cover
    from diffucoder.sampling import DecodeTrace


def _same_length(traces: Sequence["DecodeTrace"]) -> int:
    if not traces:
        raise ValueError("no traces given")
    T = {tr.completion_length for tr in traces}
    if len(T) != 1:
        raise ValueError(f"traces have different completion lengths {sorted(T)}")
    return T.pop()


def first_step_profile(traces: Sequence["DecodeTrace"]) -> torch.Tensor:
    """Mean first-step confidence by completion position over every row of every trace, (T,) float32."""
    _same_length(traces)
    prof = torch.cat([tr.first_step_confidence[:, tr.prompt_length:].float().cpu() for tr in traces])  # (n, T)
    valid = ~torch.isnan(prof)
    total = torch.where(valid, prof, torch.zeros_like(prof)).sum(0)
    count = valid.sum(0)
    return torch.where(count > 0, total / count.clamp_min(1), torch.full_like(total, float("nan")))


def reveal_heatmap(traces: Sequence["DecodeTrace"]) -> torch.Tensor:
    """(steps, T) fraction of samples whose position j was revealed at step s (columns sum to 1)."""
    T = _same_length(traces)
    S = max(tr.num_forward_passes for tr in traces)
    counts = torch.zeros(S, T)
    n = 0
    for tr in traces:
        step = tr.reveal_step[:, tr.prompt_length:].cpu()  # (B, T)
        for row in step:
            ok = row >= 0
            counts[row[ok], torch.arange(T)[ok]] += 1
            n += 1
    return counts / max(n, 1)
