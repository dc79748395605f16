"""Training data for the loop: datasets of rows, the deterministic global-batch order, and noised batches.

Determinism and exact resume come from making every random choice a pure function of ``(seed, step, position in
the global batch)`` (:func:`seed_for`): the data order is one permutation per epoch, the noise levels ``t`` are
drawn for the whole global batch from a per-step generator, and every row's masks come from its own generator.
So a resumed run sees exactly the batches and noise an uninterrupted one would, and the same global batch gives
the same loss whether it is split over 1 or N ranks or over any number of accumulation micro-batches.

Packed SFT (:class:`PackedSFTRows`, ``sft.packing``): the rows are groups of examples made once by first-fit
packing a seeded permutation, so the data order is again a pure function of the seed. The noise levels are drawn
per *example* of the global batch, and example ``k`` of a step is noised by the generator an unpacked row at
position ``k`` would use, exactly as :func:`noise_rows` noises it alone (:func:`noise_packed_rows`).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any, Protocol, Sequence

import torch

from diffucoder.data.sft import (PackedSFTBatch, SFTExample, collate_packed, collate_sft, first_fit_pack,
                                 segment_length)
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


class PackedSFTRows:
    """Chat examples packed several to a row (``sft.packing``): rows of at most ``max_length`` tokens, each example a
    segment ``prompt + answer + pad targets`` (:func:`~diffucoder.data.sft.segment_length`).

    The packing is computed once, by :func:`~diffucoder.data.sft.first_fit_pack` over a permutation drawn from
    ``seed``, so it is the same in every process and after a resume; an epoch over the rows is an epoch over the
    examples. ``padding="flexible"`` cuts a global batch's rows to its longest packed row, "fixed" keeps
    ``max_length``.
    """

    def __init__(self, examples: list[SFTExample], max_length: int, pad_id: int, padding: str, answer_length: int,
                 seed: int) -> None:
        if not examples:
            raise ValueError("no SFT examples fit sft.max_length")
        self.examples, self.max_length, self.pad_id, self.padding = examples, max_length, pad_id, padding
        self.answer_length = answer_length
        self.lengths = [segment_length(e, answer_length) for e in examples]
        order = torch.randperm(len(examples), generator=generator(seed, "sft-pack")).tolist()
        self.packs = first_fit_pack(self.lengths, max_length, order)
        self.used = [sum(self.lengths[i] for i in r) for r in self.packs]

    def __len__(self) -> int:
        return len(self.packs)

    def num_examples(self, indices: list[int]) -> int:
        return sum(len(self.packs[i]) for i in indices)

    def row_length(self, indices: list[int]) -> int:
        return self.max_length if self.padding == "fixed" else max(self.used[i] for i in indices)

    def packed(self, indices: list[int], length: int) -> PackedSFTBatch:
        return collate_packed([[self.examples[j] for j in self.packs[i]] for i in indices], length, self.pad_id,
                              self.answer_length)

    def fill(self) -> float:
        """Fraction of the packed rows' ``max_length`` tokens that belong to an example."""
        return sum(self.used) / (len(self.packs) * self.max_length)


class BatchOrder:
    """Which dataset rows form the global batch of each step: one seeded permutation per epoch.

    With ``groups`` (a label per row, e.g. the SFT source: a file or a synthetic tier), every global batch is drawn
    from one group: each epoch permutes each group's rows, cuts them into batches (a group's last batch is filled
    up from the start of its permutation) and shuffles all the groups' batches together, so a group's share of the
    steps is its share of the rows. Rows of one source have similar lengths, so a batch padded to its longest row
    wastes less (one long medium-tier row no longer pads fifteen short easy ones)."""

    def __init__(self, n: int, global_batch: int, seed: int, groups: Sequence[Any] | None = None) -> None:
        self.n, self.global_batch, self.seed = n, global_batch, seed
        self._cache: dict[int, Any] = {}
        self.groups: list[list[int]] | None = None  # row indices of each group (None: ungrouped)
        if groups is not None:
            if len(groups) != n:
                raise ValueError(f"BatchOrder: {len(groups)} group labels for {n} rows")
            by: dict[str, list[int]] = {}
            for i, g in enumerate(groups):
                by.setdefault(str(g), []).append(i)
            if len(by) > 1:  # one group is the ungrouped order (same batches as without labels)
                self.groups = [by[k] for k in sorted(by)]
                self.batches_per_epoch = sum(-(-len(rows) // global_batch) for rows in self.groups)

    def _perm(self, epoch: int) -> Any:
        """The epoch's order: a permutation of the rows, or (grouped) its list of batches."""
        if epoch not in self._cache:
            self._cache = {epoch: torch.randperm(self.n, generator=generator(self.seed, "data-order", epoch))
                           if self.groups is None else self._group_batches(epoch)}
        return self._cache[epoch]

    def _group_batches(self, epoch: int) -> list[list[int]]:
        b = self.global_batch
        batches = []
        for gi, rows in enumerate(self.groups or []):
            perm = torch.randperm(len(rows), generator=generator(self.seed, "data-order", epoch, gi)).tolist()
            cyc = [rows[perm[j % len(rows)]] for j in range(-(-len(rows) // b) * b)]  # last batch filled cyclically
            batches += [cyc[s:s + b] for s in range(0, len(cyc), b)]
        order = torch.randperm(len(batches), generator=generator(self.seed, "group-batch-order", epoch))
        return [batches[int(j)] for j in order]

    def indices(self, step: int) -> list[int]:
        if self.groups is not None:
            return list(self._perm(step // self.batches_per_epoch)[step % self.batches_per_epoch])
        out = []
        for k in range(step * self.global_batch, (step + 1) * self.global_batch):
            out.append(int(self._perm(k // self.n)[k % self.n]))
        return out

    def epoch(self, step: int) -> float:
        if self.groups is not None:
            return step / self.batches_per_epoch
        return step * self.global_batch / self.n


@dataclass
class NoisedRows:
    """A micro-batch ready for the model."""

    x0: torch.Tensor  # (B, L) clean ids
    xt: torch.Tensor  # (B, L) noised ids
    is_masked: torch.Tensor  # (B, L) bool
    maskable: torch.Tensor  # (B, L) bool, loss-bearing positions
    t: torch.Tensor  # (B,), or (B, L) for packed rows: each position carries its example's noise level
    attention_mask: torch.Tensor | None  # None, (B, L) padding mask or (B, 1, L, L) bool
    position_ids: torch.Tensor | None = None  # (B, L) for packed rows (restarting at 0 per example), else None
    num_examples: int = 0  # examples in these rows (one per row unless packed)

    def to(self, device: torch.device) -> "NoisedRows":
        def move(x: torch.Tensor | None) -> torch.Tensor | None:
            return x.to(device) if x is not None else None

        return NoisedRows(self.x0.to(device), self.xt.to(device), self.is_masked.to(device),
                          self.maskable.to(device), self.t.to(device), move(self.attention_mask),
                          move(self.position_ids), self.num_examples)


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
    return NoisedRows(x0, noised.xt, noised.is_masked, maskable, t, attention, num_examples=B)


def noise_packed_rows(batch: PackedSFTBatch, t: torch.Tensor, example_keys: list[tuple], *, mask_token_id: int,
                      pad_token_id: int, shift: bool, diff: DiffusionSection, step: int,
                      condition_prob: float = 1.0) -> NoisedRows:
    """Corrupt packed rows: each example exactly as :func:`noise_rows` corrupts it as a row of its own.

    ``t`` (E,) and ``example_keys`` (E keys) list the examples in row-major order. Example ``e`` is noised as the
    one-row batch ``noise_rows(x0[segment], prompt_len, t[e:e+1], [example_keys[e]])`` (its own noise level, its
    own masks, its prompt clean; truncation, clean prefix and attention annealing within the example), then
    placed in its row. The attention mask is block-diagonal (an example's queries see only its own keys, with the
    example's own truncation or annealing mask inside its block; filler positions see only themselves), the
    position ids restart at 0 for each example, and ``t`` is returned per position (B, L) (1 at filler).

    With the AR shift, output ``j - 1`` predicts token ``j``: the first token of an example would be predicted
    from the previous example's last output, so it is never maskable (as position 0 of a row alone is not).
    """
    B, L = batch.x0.shape
    E = batch.num_examples
    if t.shape != (E,) or len(example_keys) != E:
        raise ValueError(f"{E} packed examples need t of shape ({E},) and {E} keys, got {tuple(t.shape)} and "
                         f"{len(example_keys)}")
    x0 = batch.x0.clone()
    xt = x0.clone()
    is_masked = torch.zeros(B, L, dtype=torch.bool)
    maskable = torch.zeros(B, L, dtype=torch.bool)
    t_pos = torch.ones(B, L, dtype=t.dtype)
    pos_ids = torch.zeros(B, L, dtype=torch.long)
    attention = torch.eye(L, dtype=torch.bool).repeat(B, 1, 1, 1)  # (B, 1, L, L): filler sees itself only
    e = 0
    for b, segs in enumerate(batch.segments):
        for seg in segs:
            sl = slice(seg.start, seg.start + seg.length)
            alone = noise_rows(x0[b:b + 1, sl], torch.tensor([seg.prompt_len]), t[e:e + 1], [example_keys[e]],
                               mask_token_id=mask_token_id, pad_token_id=pad_token_id, shift=shift, diff=diff,
                               step=step, condition_prob=condition_prob)
            x0[b, sl], xt[b, sl] = alone.x0[0], alone.xt[0]
            is_masked[b, sl], maskable[b, sl] = alone.is_masked[0], alone.maskable[0]
            t_pos[b, sl] = t[e]
            block = torch.ones(seg.length, seg.length, dtype=torch.bool)  # (n, n)
            pos = torch.arange(seg.length)
            am = alone.attention_mask
            if am is not None and am.dim() == 4:  # attention annealing
                block = am[0, 0]
            elif am is not None:  # truncation: the padding mask's keys and positions, as the model reads it alone
                keep = am[0].bool()
                block = block & keep[None, :]
                pos = (keep.long().cumsum(-1) - 1).clamp_min(0)
            attention[b, 0, sl, sl] = block
            pos_ids[b, sl] = pos
            e += 1
    return NoisedRows(x0, xt, is_masked, maskable, t_pos, attention, pos_ids, num_examples=E)


@dataclass
class StepRows:
    """One rank's micro-batches of a global batch."""

    micro: list[NoisedRows]
    length: int  # row length of this step
    examples: int  # examples in the whole global batch (all ranks)


def step_rows(train: "RowDataset", gidx: list[int], positions: list[int], micro_batch_size: int, *, seed: int,
              step: int, diff: DiffusionSection, mask_token_id: int, pad_token_id: int, shift: bool,
              condition_prob: float = 1.0) -> StepRows:
    """Noised micro-batches of the rows at ``positions`` of the global batch ``gidx`` (this rank's share).

    Unpacked rows: row ``p`` draws ``t[p]`` of the global batch's levels and the generator
    ``(seed, "row", step, p)``. Packed rows: the levels are drawn for the global batch's examples, and example
    ``k`` (counted over the whole global batch, row-major) takes ``t[k]`` and the generator
    ``(seed, "row", step, k)``. Either way every choice is a function of (seed, step, position), whatever the
    split over ranks and micro-batches.
    """
    length = train.row_length(gidx)
    common = dict(mask_token_id=mask_token_id, pad_token_id=pad_token_id, shift=shift, diff=diff, step=step,
                  condition_prob=condition_prob)
    micro = []
    if isinstance(train, PackedSFTRows):
        counts = [len(train.packs[i]) for i in gidx]
        first = [sum(counts[:p]) for p in range(len(gidx) + 1)]  # first example of each global position
        t_glob = step_t(seed, step, first[-1], diff)
        for m0 in range(0, len(positions), micro_batch_size):
            pos = positions[m0:m0 + micro_batch_size]
            ks = [k for p in pos for k in range(first[p], first[p + 1])]
            micro.append(noise_packed_rows(train.packed([gidx[p] for p in pos], length), t_glob[ks],
                                           [(seed, "row", step, k) for k in ks], **common))
        return StepRows(micro, length, first[-1])
    t_glob = step_t(seed, step, len(gidx), diff)
    for m0 in range(0, len(positions), micro_batch_size):
        pos = positions[m0:m0 + micro_batch_size]
        x0, prompt_len = train.rows([gidx[p] for p in pos], length)
        micro.append(noise_rows(x0, prompt_len, t_glob[pos], [(seed, "row", step, p) for p in pos], **common))
    return StepRows(micro, length, len(gidx))


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
