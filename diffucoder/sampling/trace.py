"""What the sampler returns besides the tokens: the decode trace and the generation output.

``DecodeTrace`` records, for every canvas position, the step at which the sampler revealed it, its confidence
at that moment, the token chosen then and its rank among the positions revealed in the same step; plus the
confidence profile of the first step (the "entropy sink" of paper section 4) and how many tokens each step
revealed. ``diffucoder.analysis`` turns traces into AR-ness figures.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch


@dataclass
class PositionReveal:
    """One completion position of one row: where, when, how confidently and what was revealed."""

    position: int
    """Index in the completion (0 = the first column after the prompt)."""
    step: int
    """Sampler step (0-based forward pass) that revealed it; -1 if the sampler never did (e.g. a hook)."""
    rank: int
    """Order among the positions revealed in the same step (0 = first / most confident)."""
    confidence: float
    """The policy's confidence at that step (NaN if never revealed)."""
    token: int
    """The id chosen at that step (the final sequence may differ if a hook rewrote it)."""


@dataclass
class DecodeTrace:
    """Per-position record of one ``diffusion_generate`` call. Tensors are (B, L) over the whole canvas."""

    prompt_length: int
    """Columns before the first generated column (left padding included)."""
    reveal_step: torch.Tensor
    """(B, L) long: the step that revealed each position, -1 for prompt, padding and never-revealed columns."""
    reveal_rank: torch.Tensor
    """(B, L) long: rank within its step (0 = first), -1 where not revealed."""
    reveal_confidence: torch.Tensor
    """(B, L) float32: confidence when revealed, NaN where not revealed."""
    reveal_token: torch.Tensor
    """(B, L) long: token chosen when revealed, -1 where not revealed."""
    first_step_confidence: torch.Tensor
    """(B, L) float32: confidence of every candidate position at step 0 (NaN elsewhere). For ``origin`` the
    probability of the arg-max token."""
    revealed_per_step: torch.Tensor
    """(steps_run, B) long: how many positions each step revealed in each row."""
    alg: str = "origin"
    num_forward_passes: int = 0
    block_length: int | None = None
    extra: dict = field(default_factory=dict)

    @property
    def batch_size(self) -> int:
        return int(self.reveal_step.shape[0])

    @property
    def completion_length(self) -> int:
        return int(self.reveal_step.shape[1]) - self.prompt_length

    def order(self, row: int = 0) -> list[int]:
        """Completion positions of ``row`` in the order they were revealed (by step, then rank).

        Positions revealed in the same step are ordered by rank (most confident first), so with one token per
        step this is exactly the paper's p_1..p_T. Positions the sampler never revealed are left out.
        """
        step = self.reveal_step[row, self.prompt_length:].tolist()
        rank = self.reveal_rank[row, self.prompt_length:].tolist()
        idx = [j for j in range(len(step)) if step[j] >= 0]
        return sorted(idx, key=lambda j: (step[j], rank[j]))

    def positions(self, row: int = 0) -> list[PositionReveal]:
        """One :class:`PositionReveal` per completion position of ``row``, left to right."""
        P = self.prompt_length
        out = []
        for j in range(self.completion_length):
            conf = float(self.reveal_confidence[row, P + j])
            out.append(PositionReveal(position=j, step=int(self.reveal_step[row, P + j]),
                                      rank=int(self.reveal_rank[row, P + j]),
                                      confidence=conf if not math.isnan(conf) else float("nan"),
                                      token=int(self.reveal_token[row, P + j])))
        return out

    def first_step_profile(self, row: int | None = None) -> torch.Tensor:
        """First-step confidence by completion position, (T,); averaged over rows (NaN-aware) when row is None."""
        prof = self.first_step_confidence[:, self.prompt_length:]  # (B, T)
        if row is not None:
            return prof[row]
        valid = ~torch.isnan(prof)
        total = torch.where(valid, prof, torch.zeros_like(prof)).sum(0)
        count = valid.sum(0)
        return torch.where(count > 0, total / count.clamp_min(1), torch.full_like(total, float("nan")))


@dataclass
class GenerationOutput:
    """``return_dict_in_generate=True`` result, shaped like Dream's ``DreamModelOutput`` plus the trace."""

    sequences: torch.Tensor
    """(B, L) the final canvas: prompt (as given, padding included) followed by the completion."""
    history: list[torch.Tensor] | None = None
    """The canvas after every step when ``output_history=True``, else None (as the reference)."""
    trace: DecodeTrace | None = None
