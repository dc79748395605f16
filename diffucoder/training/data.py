"""Training data for the loop: datasets of rows, the deterministic global-batch order, and noised batches.

Determinism and exact resume come from making every random choice a pure function of ``(seed, step, position in
the global batch)`` (:func:`seed_for`): the data order is one permutation per epoch, the noise levels ``t`` are
drawn for the whole global batch from a per-step generator, and every row's masks come from its own generator.
So a resumed run sees exactly the batches and noise an uninterrupted one would, and the same global batch gives
the same loss whether it is split over 1 or N ranks or over any number of accumulation micro-batches.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Protocol

import torch

from diffucoder.data.sft import SFTExample, collate_sft
from diffucoder.diffusion.noise import (annealed_attention_mask, mask_with_uniforms, maskable_positions,
                                        sample_t)
from diffucoder.training.config import DiffusionSection


def seed_for(*keys: object) -> int:
    """A 63-bit seed derived from any tuple of keys (stable across processes and Python versions)."""
    h = hashlib.blake2b(repr(keys).encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") >> 1


def generator(*keys: object, device: torch.device | str = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed_for(*keys))


class RowDataset(Protocol):
    """Rows of token ids with the length of their clean condition (prompt)."""

    def __len__(self) -> int: ...

    def row_length(self, indices: list[int]) -> int:
        """Length of the rows of a batch made of these indices."""

    def rows(self, indices: list[int], length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(x0 (B, length) long, prompt_len (B,) long)."""


class PackedRows:
    """Fixed-length packed text rows (pretraining, AR adaptation); no condition."""

    def __init__(self, rows: torch.Tensor) -> None:
        if rows.dim() != 2 or rows.shape[0] == 0:
            raise ValueError(f"packed rows must be a non-empty (N, L) tensor, got {tuple(rows.shape)}")
        self.data = rows

    def __len__(self) -> int:
        return self.data.shape[0]

    def row_length(self, indices: list[int]) -> int:
        return self.data.shape[1]

    def rows(self, indices: list[int], length: int) -> tuple[torch.Tensor, torch.Tensor]:
        x0 = self.data[torch.as_tensor(indices, dtype=torch.long)]  # (B, L)
        return x0, torch.zeros(len(indices), dtype=torch.long)


class SFTRows:
    """Chat examples padded with the (learned) pad token; the prompt is the condition."""

    def __init__(self, examples: list[SFTExample], max_length: int, pad_id: int, padding: str) -> None:
        if not examples:
            raise ValueError("no SFT examples fit sft.max_length")
        self.examples, self.max_length, self.pad_id, self.padding = examples, max_length, pad_id, padding

    def __len__(self) -> int:
        return len(self.examples)

    def row_length(self, indices: list[int]) -> int:
        if self.padding == "fixed":
            return self.max_length
        longest = max(len(self.examples[i].prompt_ids) + len(self.examples[i].answer_ids) for i in indices)
        return min(self.max_length, longest + 1)

    def rows(self, indices: list[int], length: int) -> tuple[torch.Tensor, torch.Tensor]:
        b = collate_sft([self.examples[i] for i in indices], length, self.pad_id, padding="fixed")
        return b.x0, b.prompt_len


class BatchOrder:
    """Which dataset rows form the global batch of each step: one seeded permutation per epoch."""

    def __init__(self, n: int, global_batch: int, seed: int) -> None:
        self.n, self.global_batch, self.seed = n, global_batch, seed
        self._cache: dict[int, torch.Tensor] = {}

    def _perm(self, epoch: int) -> torch.Tensor:
        if epoch not in self._cache:
            self._cache = {epoch: torch.randperm(self.n, generator=generator(self.seed, "data-order", epoch))}
        return self._cache[epoch]

    def indices(self, step: int) -> list[int]:
        out = []
        for k in range(step * self.global_batch, (step + 1) * self.global_batch):
            out.append(int(self._perm(k // self.n)[k % self.n]))
        return out

    def epoch(self, step: int) -> float:
        return step * self.global_batch / self.n


@dataclass
class NoisedRows:
    """A micro-batch ready for the model."""

    x0: torch.Tensor  # (B, L) clean ids
    xt: torch.Tensor  # (B, L) noised ids
    is_masked: torch.Tensor  # (B, L) bool
    maskable: torch.Tensor  # (B, L) bool, loss-bearing positions
    t: torch.Tensor  # (B,)
    attention_mask: torch.Tensor | None  # None, (B, L) padding mask or (B, 1, L, L) bool

    def to(self, device: torch.device) -> "NoisedRows":
        am = self.attention_mask.to(device) if self.attention_mask is not None else None
        return NoisedRows(self.x0.to(device), self.xt.to(device), self.is_masked.to(device),
                          self.maskable.to(device), self.t.to(device), am)


def step_t(seed: int, step: int, global_batch: int, diff: DiffusionSection) -> torch.Tensor:
    """Noise levels of the whole global batch of a step (every rank draws the same, then takes its slice)."""
    return sample_t(global_batch, generator(seed, "t", step), eps=diff.eps, method=diff.t_sampling)


def noise_rows(x0: torch.Tensor, prompt_len: torch.Tensor, t: torch.Tensor, row_keys: list[tuple], *,
               mask_token_id: int, pad_token_id: int, shift: bool, diff: DiffusionSection, step: int,
               condition_prob: float = 1.0) -> NoisedRows:
    """Corrupt rows for training; each row's randomness comes from ``generator(*row_keys[b])``.

    Per row: LLaDA random truncation (rest becomes padding: not attended, not scored), the conditional mask
    (prompt kept clean with probability ``condition_prob``, else noised like the answer), a LLaDA clean prefix,
    then the independent masks with probability ``t``. During AR adaptation the attention is
    ``causal OR Bernoulli(min(1, step / anneal_steps))``.
    """
    B, L = x0.shape
    x0 = x0.clone()
    valid = torch.ones(B, L, dtype=torch.bool)
    cond = prompt_len.clone()
    u = torch.empty(B, L)
    p_full = min(1.0, step / diff.anneal_steps) if diff.anneal_steps > 0 else 1.0
    attn_rows = []
    for b in range(B):
        g = generator(*row_keys[b])
        flags = torch.rand(3, generator=g)  # truncation, condition, clean prefix
        if diff.random_truncation_prob > 0 and float(flags[0]) < diff.random_truncation_prob:
            n = int(torch.randint(2, L + 1, (1,), generator=g))
            valid[b, n:] = False
            x0[b, n:] = pad_token_id
        if float(flags[1]) >= condition_prob:
            cond[b] = 0
        if diff.clean_prefix_prob > 0 and float(flags[2]) < diff.clean_prefix_prob:
            cond[b] = max(int(cond[b]), int(torch.randint(1, L, (1,), generator=g)))
        u[b] = torch.rand(L, generator=g)
        if p_full < 1.0:
            attn_rows.append(annealed_attention_mask(L, p_full, g)[0])  # (1, L, L)
    maskable = maskable_positions((B, L), shift=shift, prompt_len=cond, valid=valid)
    noised = mask_with_uniforms(x0, t, u, mask_token_id, maskable)
    attention: torch.Tensor | None = None
    if attn_rows:
        attention = torch.stack(attn_rows) & valid[:, None, None, :]  # (B, 1, L, L)
    elif not bool(valid.all()):
        attention = valid.long()  # (B, L) padding mask
    return NoisedRows(x0, noised.xt, noised.is_masked, maskable, t, attention)


def condition_probability(step: int, progressive_steps: int) -> float:
    """SFT: probability that a row keeps its prompt clean (1 unless the progressive option is on)."""
    if progressive_steps <= 0:
        return 1.0
    return min(1.0, step / progressive_steps)


def lr_lambda(warmup_steps: int, total_steps: int, min_lr_ratio: float):
    """Linear warm-up to 1 then cosine to ``min_lr_ratio`` at ``total_steps`` (multiplier of the peak lr)."""

    def fn(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return (step + 1) / warmup_steps
        span = max(1, total_steps - warmup_steps)
        progress = min(1.0, (step - warmup_steps) / span)
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return fn
