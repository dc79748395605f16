"""Supervised fine-tuning data: chat-templated prompt/answer pairs, padded rows with the answer region marked.

A jsonl line is either ``{"messages": [{"role": ..., "content": ...}, ...]}`` (the last message is the
assistant's answer, the earlier ones the prompt) or ``{"prompt": ..., "completion": ...}``. The prompt is
rendered with the tokenizer's chat template and the generation prompt (``<|im_start|>assistant\\n``); the answer
is followed by ``<|im_end|>`` and then by pad tokens up to the row length. The pad token is an ordinary target
of the answer region, which is how a diffusion model learns where its answer stops (DiffuCoder / LLaDA SFT).

    examples = encode_examples(read_sft_jsonl("train.jsonl"), tok)
    batch = collate_sft(examples[:8], max_length=256, pad_id=tok.pad_token_id)  # .x0 (B, L), .prompt_len (B,)

Packing (``sft.packing``): several examples share one row, each a *segment* ``prompt + answer + pad targets``
with its own positions and a block-diagonal attention mask, so each is computed exactly as it would be alone.
:func:`first_fit_pack` groups examples into rows, :func:`collate_packed` lays them out::

    rows = first_fit_pack([segment_length(e, 0) for e in examples], row_length=256, order=range(len(examples)))
    batch = collate_packed([[examples[i] for i in r] for r in rows[:4]], 256, tok.pad_token_id)  # .x0, .segments
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from diffucoder.jsonl import iter_jsonl

if TYPE_CHECKING:  # pragma: no cover
    from diffucoder.tokenizer import DiffuTokenizer

DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."


@dataclass
class SFTRecord:
    """One conversation: the prompt messages and the answer text."""

    prompt_messages: list[dict[str, str]]
    answer: str


@dataclass
class SFTExample:
    """A tokenised record."""

    prompt_ids: list[int]  # chat-templated prompt including the generation prompt
    answer_ids: list[int]  # answer followed by <|im_end|>


@dataclass
class SFTBatch:
    """Padded rows: ``x0[b, :prompt_len[b]]`` is the prompt, the rest answer + pad targets."""

    x0: torch.Tensor  # (B, L) long
    prompt_len: torch.Tensor  # (B,) long


def parse_record(row: Any, where: str = "record") -> SFTRecord:
    """Accept the ``messages`` form or the ``prompt``/``completion`` form."""
    if not isinstance(row, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(row).__name__}")
    if "messages" in row:
        msgs = row["messages"]
        if not isinstance(msgs, list) or len(msgs) < 2:
            raise ValueError(f"{where}: 'messages' must be a list of at least a prompt and an answer message")
        for i, m in enumerate(msgs):
            if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
                raise ValueError(f"{where}: message {i} needs string 'role' and 'content'")
        if msgs[-1]["role"] != "assistant":
            raise ValueError(f"{where}: the last message must be the assistant's answer, got role "
                             f"{msgs[-1]['role']!r}")
        return SFTRecord([{"role": m["role"], "content": m["content"]} for m in msgs[:-1]], msgs[-1]["content"])
    if "prompt" in row and "completion" in row:
        if not isinstance(row["prompt"], str) or not isinstance(row["completion"], str):
            raise ValueError(f"{where}: 'prompt' and 'completion' must be strings")
        return SFTRecord([{"role": "user", "content": row["prompt"]}], row["completion"])
    raise ValueError(f"{where}: needs 'messages' or 'prompt' + 'completion' (has keys {sorted(row)})")


def read_sft_jsonl(path: str | Path) -> list[SFTRecord]:
    out = [parse_record(row, where) for where, row in iter_jsonl(path, "SFT file")]
    if not out:
        raise ValueError(f"{path}: no examples")
    return out


def encode_examples(records: Iterable[SFTRecord], tok: "DiffuTokenizer",
                    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT) -> list[SFTExample]:
    out = []
    for r in records:
        prompt = tok.apply_chat_template(r.prompt_messages, add_generation_prompt=True, system_prompt=system_prompt)
        out.append(SFTExample(tok.encode(prompt), encode_answer(tok, r.answer)))
    return out


def encode_answer(tok: "DiffuTokenizer", answer: str) -> list[int]:
    """An assistant answer's ids as SFT trains them: the text, then ``<|im_end|>`` (the turn's end token)."""
    return tok.encode(answer) + [tok.im_end_id]


def fits(example: SFTExample, max_length: int, answer_length: int = 0) -> bool:
    """Room for prompt, answer and (as in fixed-length SFT) at least one pad target; with ``answer_length``
    (packing), room for the example's whole segment (:func:`segment_length`)."""
    return segment_length(example, answer_length) <= max_length


def segment_length(example: SFTExample, answer_length: int = 0) -> int:
    """Tokens of a packed example: its prompt, then its answer region of ``max(len(answer) + 1, answer_length)``
    tokens (answer, ``<|im_end|>``, then pad targets: at least one, so every example learns where to stop)."""
    return len(example.prompt_ids) + max(len(example.answer_ids) + 1, answer_length)


def collate_sft(examples: Sequence[SFTExample], max_length: int, pad_id: int, padding: str = "fixed"
                ) -> SFTBatch:
    """Pad to ``max_length`` ("fixed") or to the longest example + 1 pad ("flexible")."""
    if not examples:
        raise ValueError("collate_sft needs at least one example")
    if padding == "fixed":
        L = max_length
    elif padding == "flexible":
        L = min(max_length, max(len(e.prompt_ids) + len(e.answer_ids) for e in examples) + 1)
    else:
        raise ValueError(f"padding must be 'fixed' or 'flexible', got {padding!r}")
    x0 = torch.full((len(examples), L), pad_id, dtype=torch.long)
    prompt_len = torch.empty(len(examples), dtype=torch.long)
    for b, e in enumerate(examples):
        ids = e.prompt_ids + e.answer_ids
        if len(ids) > L:
            raise ValueError(f"example {b} has {len(ids)} tokens, more than the row length {L}")
        x0[b, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        prompt_len[b] = len(e.prompt_ids)
    return SFTBatch(x0, prompt_len)


# ------------------------------------------------------------------------------------------------------------
# packing
# ------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Segment:
    """One example inside a packed row: tokens ``[start, start + length)``, the first ``prompt_len`` the prompt."""

    start: int
    prompt_len: int
    length: int


@dataclass
class PackedSFTBatch:
    """Packed rows: ``segments[b]`` lists the examples of row ``b`` in order; positions after the last segment
    are filler (pad ids that belong to no example: never attended by an example, never scored)."""

    x0: torch.Tensor  # (B, L) long
    segments: list[list[Segment]]

    @property
    def num_examples(self) -> int:
        return sum(len(s) for s in self.segments)


def first_fit_pack(lengths: Sequence[int], row_length: int, order: Iterable[int]) -> list[list[int]]:
    """Greedy first-fit bin packing: the items of ``order`` (indices into ``lengths``), in that order, each go
    into the first row (in opening order) with room for it, else into a new row. Returns the rows as lists of
    item indices, in placement order. O(n log n): a max-segment tree over the rows' free space, whose leftmost
    leaf with enough room is the first-fit row (unopened rows have ``row_length`` free, so a new row opens
    exactly when no opened one fits).
    """
    order = list(order)
    for i in order:
        if not 1 <= lengths[i] <= row_length:
            raise ValueError(f"item {i} has length {lengths[i]}, outside [1, row_length={row_length}]")
    size = 1
    while size < max(1, len(order)):
        size *= 2
    free = [row_length] * (2 * size)  # free[size + r]: free tokens of row r; inner nodes: max of children
    rows: list[list[int]] = []
    for i in order:
        need = lengths[i]
        node = 1
        while node < size:  # descend to the leftmost leaf with free >= need (the root always has one)
            node = 2 * node if free[2 * node] >= need else 2 * node + 1
        r = node - size
        if r == len(rows):
            rows.append([])
        rows[r].append(i)
        free[node] -= need
        node //= 2
        while node:
            free[node] = max(free[2 * node], free[2 * node + 1])
            node //= 2
    return rows


def collate_packed(rows: Sequence[Sequence[SFTExample]], length: int, pad_id: int, answer_length: int = 0
                   ) -> PackedSFTBatch:
    """Lay out packed rows of ``length`` tokens: each example as ``prompt + answer + pad targets``
    (:func:`segment_length`), one after the other; filler pad ids after the last one."""
    if not rows or any(not r for r in rows):
        raise ValueError("collate_packed needs at least one row, each with at least one example")
    x0 = torch.full((len(rows), length), pad_id, dtype=torch.long)
    segments: list[list[Segment]] = []
    for b, row in enumerate(rows):
        pos, segs = 0, []
        for e in row:
            n = segment_length(e, answer_length)
            if pos + n > length:
                raise ValueError(f"row {b}: its examples need more than {length} tokens")
            ids = e.prompt_ids + e.answer_ids
            x0[b, pos: pos + len(ids)] = torch.tensor(ids, dtype=torch.long)
            segs.append(Segment(pos, len(e.prompt_ids), n))
            pos += n
        segments.append(segs)
    return PackedSFTBatch(x0, segments)
