"""Supervised fine-tuning data: chat-templated prompt/answer pairs, padded rows with the answer region marked.

A jsonl line is either ``{"messages": [{"role": ..., "content": ...}, ...]}`` (the last message is the
assistant's answer, the earlier ones the prompt) or ``{"prompt": ..., "completion": ...}``. The prompt is
rendered with the tokenizer's chat template and the generation prompt (``<|im_start|>assistant\\n``); the answer
is followed by ``<|im_end|>`` and then by pad tokens up to the row length. The pad token is an ordinary target
of the answer region, which is how a diffusion model learns where its answer stops (DiffuCoder / LLaDA SFT).

    examples = encode_examples(read_sft_jsonl("train.jsonl"), tok)
    batch = collate_sft(examples[:8], max_length=256, pad_id=tok.pad_token_id)  # .x0 (B, L), .prompt_len (B,)
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


def fits(example: SFTExample, max_length: int) -> bool:
    """Room for prompt, answer and (as in fixed-length SFT) at least one pad target."""
    return len(example.prompt_ids) + len(example.answer_ids) < max_length


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
