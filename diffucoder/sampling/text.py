"""From canvases to completions: cut at end-of-text / the SFT pad token, decode, render a partial canvas.

The sampler always fills the whole canvas (no early stop, as the reference); a model that learned to end
(SFT pads the answer with ``<|dlm_pad|>``) writes EOS / pad tokens after the answer. These helpers cut there.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:  # pragma: no cover
    from diffucoder.tokenizer import DiffuTokenizer


def cut_at_stop(ids: Sequence[int], stop_ids: Sequence[int]) -> list[int]:
    """``ids`` up to (not including) the first id in ``stop_ids``."""
    stops = set(int(i) for i in stop_ids)
    out = []
    for i in ids:
        if int(i) in stops:
            break
        out.append(int(i))
    return out


def completion_ids(sequences: torch.Tensor, prompt_length: int, stop_ids: Sequence[int]) -> list[list[int]]:
    """The generated ids of every row of ``sequences`` (B, L), each cut at its first stop id."""
    return [cut_at_stop(row, stop_ids) for row in sequences[:, prompt_length:].tolist()]


def decode_completions(tokenizer: "DiffuTokenizer", sequences: torch.Tensor, prompt_length: int,
                       stop_ids: Sequence[int] | None = None) -> list[str]:
    """Decoded completions cut at end-of-text, the SFT pad token or ``<|im_end|>`` (the tokenizer's stop ids)."""
    stops = tokenizer.stop_token_ids() if stop_ids is None else list(stop_ids)
    return [tokenizer.decode(ids) for ids in completion_ids(sequences, prompt_length, stops)]


def render_canvas(tokenizer: "DiffuTokenizer", ids: Sequence[int], mask_token_id: int,
                  mask_symbol: str = "\u2591") -> str:
    """Text of a partially unmasked canvas: runs of revealed ids decoded together, each [MASK] as ``mask_symbol``."""
    parts: list[str] = []
    run: list[int] = []
    for i in ids:
        if int(i) == mask_token_id:
            if run:
                parts.append(tokenizer.decode(run))
                run = []
            parts.append(mask_symbol)
        else:
            run.append(int(i))
    if run:
        parts.append(tokenizer.decode(run))
    return "".join(parts)
