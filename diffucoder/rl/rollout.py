"""Rollouts for GRPO: prompts from jsonl rows, G diffusion decodes per prompt, completion masks, text, rewards.

A row's user message (``prompt``, else ``question``) is wrapped in the tokenizer's chat template (or used
verbatim with ``chat_template=False``), encoded,
and **left-padded** with a 2-D attention mask; each prompt is repeated G times so that a group is G contiguous
rows. Decoding is :func:`diffucoder.sampling.diffusion_generate` at the rollout temperature; the whole canvas of
``max_completion_length`` tokens is produced, and the answer is its prefix up to the first stop token (EOS,
``<|dlm_pad|>`` or ``<|im_end|>``). The same ``(prompt ids, prompt mask, canvas)`` layout is what the
log-likelihood estimators see later, so a row is scored exactly as it was decoded.

Rewards are TRL-signature callables ``fn(completions: list[str], **columns) -> list[float]``; a reward that
raises, returns the wrong number of values or non-finite values does not stop the run: the affected values
become 0 and are counted (:class:`RewardStats`).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from diffucoder.rl.loss import completion_mask_from_ids

if TYPE_CHECKING:  # pragma: no cover
    from diffucoder.model import DreamModel
    from diffucoder.tokenizer import DiffuTokenizer

RewardFunc = Callable[..., Sequence[float | None]]


@dataclass
class DatasetStats:
    """What :func:`load_prompt_rows` kept and why it dropped the rest."""

    rows_read: int = 0
    kept: int = 0
    skipped_no_tests: int = 0
    skipped_bad_row: int = 0
    skipped_too_long: int = 0


def validate_rows(rows: Sequence[dict[str, Any]], stats: DatasetStats | None = None,
                  source: str = "dataset") -> tuple[list[dict[str, Any]], DatasetStats]:
    """Keep rows with a ``question`` (or ``prompt``) string and a non-empty list of string ``test_cases``."""
    stats = stats or DatasetStats()
    out = []
    for row in rows:
        stats.rows_read += 1
        if not isinstance(row, dict) or not isinstance(row.get("question", row.get("prompt")), str):
            stats.skipped_bad_row += 1
            continue
        tests = row.get("test_cases")
        if not isinstance(tests, list) or not tests or not all(isinstance(t, str) for t in tests):
            stats.skipped_no_tests += 1
            continue
        out.append(row)
    stats.kept = len(out)
    return out, stats


def load_prompt_rows(path: str | Path) -> tuple[list[dict[str, Any]], DatasetStats]:
    """Read a jsonl of ``{"question", "test_cases", ...}`` rows; bad lines and rows without tests are counted."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: dataset file not found")
    rows: list[Any] = []
    stats = DatasetStats()
    bad_lines: list[int] = []
    from diffucoder.errors import read_text

    for lineno, line in enumerate(read_text(path, "dataset file").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            stats.rows_read += 1
            stats.skipped_bad_row += 1
            bad_lines.append(lineno)
    if bad_lines:
        import warnings

        warnings.warn(f"{path}: skipped {len(bad_lines)} line(s) that are not JSON (line "
                      f"{', '.join(map(str, bad_lines[:5]))}{' ...' if len(bad_lines) > 5 else ''})", stacklevel=2)
    kept, stats = validate_rows(rows, stats, source=str(path))
    if not kept:
        from diffucoder.errors import DatasetError

        raise DatasetError(f"{path}: no usable rows ({stats})")
    return kept, stats


def render_prompt(row: dict[str, Any], tokenizer: "DiffuTokenizer", system_prompt: str | None = None,
                  chat_template: bool = True, system_turn: bool = True) -> str:
    """A row's prompt text: its ``prompt`` (the user message) or else its ``question``, wrapped in the chat
    template (``chat_template``) with the assistant turn opened, or used verbatim. ``system_prompt``: the system
    turn (None: the tokenizer's default); ``system_turn=False``: none at all."""
    content = row["prompt"] if isinstance(row.get("prompt"), str) else row["question"]
    if not chat_template:
        return content
    if not system_turn:
        kw: dict[str, Any] = {"system_prompt": None}
    else:
        kw = {} if system_prompt is None else {"system_prompt": system_prompt}
    return tokenizer.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True, **kw)


@dataclass
class PromptBatch:
    input_ids: torch.Tensor  # (B, Lp) left-padded
    attention_mask: torch.Tensor  # (B, Lp) 1 = token


def left_pad(seqs: Sequence[Sequence[int]], pad_id: int) -> PromptBatch:
    """Left-pad id lists to a common length with a 2-D attention mask (as the rollout and estimators expect)."""
    if not seqs or any(len(s) == 0 for s in seqs):
        raise ValueError("every prompt must hold at least one token")
    Lp = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), Lp), int(pad_id), dtype=torch.long)
    mask = torch.zeros(len(seqs), Lp, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, Lp - len(s):] = torch.tensor(list(s), dtype=torch.long)
        mask[i, Lp - len(s):] = 1
    return PromptBatch(ids, mask)


@dataclass
class Rollout:
    """G completions for each of n prompts (N = n * G rows, groups contiguous)."""

    prompt_ids: torch.Tensor  # (N, Lp)
    prompt_mask: torch.Tensor  # (N, Lp)
    completion_ids: torch.Tensor  # (N, Lc) the whole canvas
    completion_mask: torch.Tensor  # (N, Lc) answer tokens up to and including the first stop token
    truncated: torch.Tensor  # (N,) bool: no stop token anywhere in the canvas
    texts: list[str]  # decoded answers (up to the first stop token)
    rows: list[dict[str, Any]]  # the dataset row of each completion
    seconds: float = 0.0

    @property
    def input_ids(self) -> torch.Tensor:
        return torch.cat([self.prompt_ids, self.completion_ids], dim=1)  # (N, L)

    @property
    def attention_mask(self) -> torch.Tensor:
        ones = torch.ones_like(self.completion_ids)
        return torch.cat([self.prompt_mask, ones], dim=1)  # (N, L)


def generate_rollouts(model: "DreamModel", tokenizer: "DiffuTokenizer", rows: Sequence[dict[str, Any]],
                      num_generations: int, max_completion_length: int, steps: int, temperature: float,
                      top_p: float | None, alg: str, generator: torch.Generator,
                      system_prompt: str | None = None, batch_size: int | None = None,
                      chat_template: bool = True, system_turn: bool = True, **decoding: Any) -> Rollout:
    """Decode ``num_generations`` completions for every row (see the module docstring). ``decoding``: further
    ``diffusion_generate`` options (``top_k``, ``block_length``, ``threshold``, ``use_cache``, ``early_stop``)."""
    from diffucoder.sampling import diffusion_generate

    device = model.device
    texts_in = [render_prompt(r, tokenizer, system_prompt, chat_template, system_turn) for r in rows]
    enc = [tokenizer.encode(t) for t in texts_in]
    rep_rows = [r for r in rows for _ in range(num_generations)]
    rep_enc = [e for e in enc for _ in range(num_generations)]
    pb = left_pad(rep_enc, tokenizer.pad_token_id)
    N = len(rep_enc)
    bs = batch_size or N
    vocab_limit = tokenizer.vocab_size if tokenizer.vocab_size < model.config.vocab_size else None
    start = time.perf_counter()
    outs = []
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for s in range(0, N, bs):
                # rows of a chunk share the global left padding, so the canvas starts at the same column
                out = diffusion_generate(
                    model, pb.input_ids[s:s + bs].to(device), attention_mask=pb.attention_mask[s:s + bs].to(device),
                    max_new_tokens=max_completion_length, steps=steps, temperature=temperature, top_p=top_p,
                    alg=alg, generator=generator, mask_token_id=tokenizer.mask_token_id, vocab_limit=vocab_limit,
                    stop_token_ids=tokenizer.stop_token_ids(), **decoding,
                )
                seq = out.sequences if hasattr(out, "sequences") else out
                outs.append(seq[:, pb.input_ids.shape[1]:].cpu())
    finally:
        model.train(was_training)
    completion_ids = torch.cat(outs, 0)  # (N, Lc)
    cmask, truncated = completion_mask_from_ids(completion_ids, tokenizer.stop_token_ids())
    texts = []
    for i in range(N):
        n = int(cmask[i].sum()) - (0 if bool(truncated[i]) else 1)  # drop the stop token itself
        texts.append(tokenizer.decode(completion_ids[i, :n].tolist(), skip_special_tokens=True))
    return Rollout(prompt_ids=pb.input_ids, prompt_mask=pb.attention_mask, completion_ids=completion_ids,
                   completion_mask=cmask, truncated=truncated, texts=texts, rows=rep_rows,
                   seconds=time.perf_counter() - start)


@dataclass
class RewardStats:
    """Per-function outcomes of one scoring call (counters add up over a run)."""

    calls: int = 0
    raised: int = 0
    bad_values: int = 0  # None, non-numeric or non-finite values (scored 0)
    messages: list[str] = field(default_factory=list)


def resolve_reward_funcs(names: Sequence[str | RewardFunc], pool: Callable[[], Any] | None = None,
                         timeout: float = 5.0) -> list[RewardFunc]:
    """Map names to ``diffucoder.rewards`` functions (``code_format``, ``code``) or ``module:function`` imports;
    callables pass through. Rewards that take a ``pool`` (the code reward) get ``pool()`` (created on first use,
    so a run without code rewards starts no sandbox) and ``timeout_s=timeout``."""
    out: list[RewardFunc] = []
    for n in names:
        if callable(n):
            out.append(n)
            continue
        from diffucoder.errors import InputError

        if ":" in n:  # "package.module:function", a reward of the user's own
            import importlib

            mod, _, attr = n.partition(":")
            try:
                fn = getattr(importlib.import_module(mod), attr, None)
            except ImportError as e:
                raise InputError(f"reward function {n!r}: cannot import {mod!r} ({e})") from None
            if fn is None or not callable(fn):
                raise InputError(f"reward function {n!r}: {mod!r} has no callable {attr!r}")
            out.append(fn)
            continue
        import diffucoder.rewards as R

        fn = getattr(R, f"{n}_reward", None) or getattr(R, n, None)
        if fn is None:
            import diffucoder.rewards.code as RC

            fn = getattr(RC, f"{n}_reward", None)
        if fn is None or not callable(fn):
            raise InputError(f"unknown reward function {n!r} (diffucoder.rewards has no {n}_reward; "
                             f"use 'module:function' for your own)")
        out.append(_bind_pool(fn, pool, timeout))
    return out


def _bind_pool(fn: RewardFunc, pool: Callable[[], Any] | None, timeout: float) -> RewardFunc:
    import functools
    import inspect

    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return fn
    if "pool" not in params or pool is None:
        return fn

    @functools.wraps(fn)
    def bound(completions: Sequence[str], **cols: Any) -> Sequence[float | None]:
        kw = {"pool": pool()}
        if "timeout_s" in params:
            kw["timeout_s"] = timeout
        return fn(completions, **cols, **kw)

    return bound


def score_completions(texts: Sequence[str], rows: Sequence[dict[str, Any]], reward_funcs: Sequence[RewardFunc],
                      weights: Sequence[float], stats: Sequence[RewardStats],
                      extra_kwargs: dict[str, Any] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted sum of rewards (N,) and the per-function values (N, F); failures become 0 and are counted."""
    N = len(texts)
    cols: dict[str, list[Any]] = {}
    keys = sorted({k for r in rows for k in r})
    for k in keys:
        cols[k] = [r.get(k) for r in rows]
    per = torch.zeros(N, len(reward_funcs), dtype=torch.float64)
    for j, fn in enumerate(reward_funcs):
        st = stats[j]
        st.calls += 1
        try:
            vals = list(fn(list(texts), **cols, **(extra_kwargs or {})))
            if len(vals) != N:
                raise ValueError(f"returned {len(vals)} values for {N} completions")
        except Exception as e:  # a reward must never end the run
            st.raised += 1
            if len(st.messages) < 5:
                st.messages.append(f"{type(e).__name__}: {e}")
            continue
        for i, v in enumerate(vals):
            try:
                f = float(v)  # type: ignore[arg-type]
            except (TypeError, ValueError):
                f = math.nan
            if not math.isfinite(f):
                st.bad_values += 1
                continue
            per[i, j] = f
    w = torch.tensor(list(weights), dtype=torch.float64)
    return (per * w).sum(1).float(), per.float()
