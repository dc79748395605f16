"""Token choice and confidence for one diffusion step (Dream's ``sample_tokens``, re-stated).

Given the logits of the masked positions, :func:`sample_tokens` applies temperature, top-p and top-k, picks a
token per position (arg-max at temperature 0, a sample otherwise) and scores each position with the confidence
of the unmasking policy (reference.md section 3):

- ``maskgit_plus``: the probability of the chosen token;
- ``topk_margin``:  p1 - p2, the gap between the two most likely tokens;
- ``entropy``:      sum_v p_v log p_v (negative entropy; higher = more certain);
- ``origin``:       no ordering confidence (positions are revealed at random); the chosen token's probability is
                    returned for the trace.

Computations stay in the logits' dtype, as in the reference, so confidences (and therefore reveal orders) are
the reference's. Two deliberate differences, both inert for a model that behaves:

- ids listed in ``forbidden_ids`` (the [MASK] id) are never *chosen*, but the distribution the confidences are
  computed on is left untouched. The reference can choose [MASK] and then leave masks in its output; we cannot,
  and whenever the reference does not choose [MASK] our tokens and confidences equal its own.
- logits beyond the tokenizer's vocabulary are removed earlier, by :func:`limit_vocab` (the reference keeps
  them and can emit undecodable ids).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

ALGORITHMS = ("origin", "maskgit_plus", "topk_margin", "entropy")


@dataclass
class StepChoice:
    """Tokens and scores for N positions (flattened masked positions of one step)."""

    tokens: torch.Tensor  # (N,) long, the chosen ids
    confidence: torch.Tensor  # (N,) the policy's confidence (logits dtype)
    chosen_prob: torch.Tensor  # (N,) probability of the chosen token under the processed distribution


def limit_vocab(logits: torch.Tensor, vocab_limit: int | None) -> torch.Tensor:
    """Set logits of ids >= ``vocab_limit`` to -inf (ids the tokenizer cannot decode). (..., V) -> (..., V)."""
    if vocab_limit is None or vocab_limit >= logits.shape[-1]:
        return logits
    logits = logits.clone()
    logits[..., vocab_limit:] = float("-inf")
    return logits


def top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Nucleus filter: keep the smallest set of most likely ids whose mass reaches ``top_p`` (the first id always).

    Same rule as the reference: an id is removed when the cumulative probability *before* it already exceeds
    ``top_p``; removed ids get the dtype's most negative finite value.
    """
    sorted_logits, sorted_idx = torch.sort(logits, descending=True)  # (N, V)
    cum = torch.cumsum(F.softmax(sorted_logits, dim=-1), dim=-1)  # (N, V)
    remove_sorted = cum > top_p
    remove_sorted[..., 1:] = remove_sorted[..., :-1].clone()
    remove_sorted[..., 0] = False
    remove = torch.zeros_like(logits, dtype=torch.bool).scatter_(-1, sorted_idx, remove_sorted)
    return logits.masked_fill(remove, torch.finfo(logits.dtype).min)


def top_k_filter(logits: torch.Tensor, top_k: int) -> torch.Tensor:
    """Keep the ``top_k`` largest logits per row (ties with the k-th value kept, as in the reference)."""
    top_k = min(top_k, logits.shape[-1])
    kth = torch.topk(logits, top_k)[0][..., -1, None]  # (N, 1)
    return logits.masked_fill(logits < kth, torch.finfo(logits.dtype).min)


def process_logits(logits: torch.Tensor, temperature: float, top_p: float | None, top_k: int | None
                   ) -> torch.Tensor:
    """Temperature, then top-p, then top-k, as the reference orders them. (N, V) -> (N, V)."""
    if temperature > 0:
        logits = logits / temperature
    if top_p is not None and top_p < 1:
        logits = top_p_filter(logits, top_p)
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    return logits


def sample_tokens(logits: torch.Tensor, alg: str, temperature: float = 0.0, top_p: float | None = None,
                  top_k: int | None = None, generator: torch.Generator | None = None,
                  forbidden_ids: tuple[int, ...] = ()) -> StepChoice:
    """Choose a token for each row of ``logits`` (N, V) and score it with ``alg``'s confidence.

    With ``temperature > 0`` the token is drawn with ``torch.multinomial(probs, 1, replacement=True,
    generator=generator)`` (the draw ``torch.distributions.Categorical.sample`` makes in the reference), else it
    is the arg-max.
    """
    if alg not in ALGORITHMS:
        raise ValueError(f"unknown alg {alg!r}; choose one of {list(ALGORITHMS)}")
    probs = torch.softmax(process_logits(logits, temperature, top_p, top_k), dim=-1)  # (N, V)
    forbid = None
    if forbidden_ids:
        forbid = torch.zeros(probs.shape[-1], dtype=torch.bool, device=probs.device)
        forbid[list(forbidden_ids)] = True
    if temperature > 0:
        choose_from = probs if forbid is None else probs.masked_fill(forbid, 0.0)
        if forbid is not None:
            # a row whose whole mass sits on forbidden ids falls back to the best allowed logit
            dead = choose_from.sum(-1) <= 0
            if bool(dead.any()):
                best = logits[dead].masked_fill(forbid, float("-inf")).argmax(-1)
                choose_from[dead] = F.one_hot(best, probs.shape[-1]).to(choose_from.dtype)
        tokens = torch.multinomial(choose_from, 1, replacement=True, generator=generator).squeeze(-1)  # (N,)
        chosen_prob = probs.gather(-1, tokens[:, None]).squeeze(-1)
    elif forbid is None:
        chosen_prob, tokens = probs.max(dim=-1)
    else:
        # the same arg-max as probs.max() unless a forbidden id is the maximum
        tokens = probs.masked_fill(forbid, -1.0).max(dim=-1).indices
        dead = probs.masked_fill(forbid, 0.0).amax(-1) <= 0
        if bool(dead.any()):
            tokens[dead] = logits[dead].masked_fill(forbid, float("-inf")).argmax(-1)
        chosen_prob = probs.gather(-1, tokens[:, None]).squeeze(-1)
    if alg == "topk_margin":
        top2 = torch.topk(probs, 2, dim=-1).values if probs.shape[-1] > 1 else torch.cat(
            [probs, torch.zeros_like(probs)], -1)
        confidence = top2[:, 0] - top2[:, 1]
    elif alg == "entropy":
        confidence = torch.sum(probs * torch.log(probs + 1e-10), dim=-1)
    else:  # maskgit_plus, origin
        confidence = chosen_prob
    return StepChoice(tokens=tokens, confidence=confidence, chosen_prob=chosen_prob)
