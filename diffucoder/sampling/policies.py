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

    Same rule and result as the reference: an id is removed when the cumulative probability of the ids ranked
    before it already exceeds ``top_p``; removed ids get the dtype's most negative finite value. The reference
    sorts the whole vocabulary at every masked position, which dominates decoding time for small models on a
    CPU; for float32/float64 logits :func:`_top_p_keep_threshold` finds the same kept set from a partial top-k
    and only rows it cannot decide safely (a cumulative mass within 1e-4 of ``top_p``, a tie across the cut, a
    nucleus larger than 1024 ids) take the full sort.
    """
    keep_from = _top_p_keep_threshold(logits, top_p) if logits.dtype in (torch.float32, torch.float64) else None
    if keep_from is not None:
        undecided = torch.isnan(keep_from)
        out = logits.masked_fill(logits < keep_from[:, None], torch.finfo(logits.dtype).min)
        if not bool(undecided.any()):
            return out
        out[undecided] = _top_p_full_sort(logits[undecided], top_p)
        return out
    return _top_p_full_sort(logits, top_p)


def _top_p_full_sort(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """The reference's nucleus filter, verbatim in effect: full sort, cumulative softmax, shift by one."""
    sorted_logits, sorted_idx = torch.sort(logits, descending=True)  # (N, V)
    cum = torch.cumsum(F.softmax(sorted_logits, dim=-1), dim=-1)  # (N, V)
    remove_sorted = cum > top_p
    remove_sorted[..., 1:] = remove_sorted[..., :-1].clone()
    remove_sorted[..., 0] = False
    remove = torch.zeros_like(logits, dtype=torch.bool).scatter_(-1, sorted_idx, remove_sorted)
    return logits.masked_fill(remove, torch.finfo(logits.dtype).min)


_TOP_P_MARGIN = 1e-4  # far above the float32 rounding of a softmax normaliser summed in another order


def _top_p_keep_threshold(logits: torch.Tensor, top_p: float) -> torch.Tensor | None:
    """Per row the smallest kept logit value of the nucleus (keep ``logits >= value``), NaN where undecided.

    The nucleus is ranks 0..m with m the first rank whose cumulative probability exceeds ``top_p``. It is the set
    ``logits >= v_m`` provided v_m > v_(m+1) (no tie across the cut); and the decision cum[m] > top_p >= cum[m-1]
    is the reference's whenever both sit further than ``_TOP_P_MARGIN`` from ``top_p`` (the two computations
    differ only in the rounding of the softmax normaliser).
    """
    N, V = logits.shape
    if V <= 64 or N == 0:
        return None
    probs = torch.softmax(logits, dim=-1)  # (N, V)
    result = torch.full((N,), float("nan"), dtype=logits.dtype, device=logits.device)
    todo = torch.arange(N, device=logits.device)
    for k in (64, 1024):
        if k >= V or todo.numel() == 0:
            break
        vals, idx = torch.topk(logits[todo], k, dim=-1)  # (n, k) descending
        cum = torch.cumsum(probs[todo].gather(-1, idx), dim=-1)  # (n, k)
        over = cum > top_p
        has = over[:, :-1].any(-1)  # the cut m lies before the last rank, so v_(m+1) is known
        m = over.to(torch.int8).argmax(-1)  # first rank over top_p
        r = torch.arange(todo.numel(), device=logits.device)
        m1 = (m + 1).clamp_max(k - 1)
        cum_m = cum[r, m]
        cum_prev = torch.where(m > 0, cum[r, (m - 1).clamp_min(0)], torch.full_like(cum_m, -1.0))
        safe = (has & ((cum_m - top_p) > _TOP_P_MARGIN) & ((top_p - cum_prev) > _TOP_P_MARGIN)
                & (vals[r, m] > vals[r, m1]))
        result[todo[safe]] = vals[r, m][safe]
        todo = todo[~safe]
    return result


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


def categorical_draw(probs: torch.Tensor, generator: torch.Generator | None = None,
                     forbidden_ids: tuple[int, ...] = (), uniforms: torch.Tensor | None = None) -> torch.Tensor:
    """One id per row of ``probs`` (N, V) (non-negative weights), by inverse CDF; ``forbidden_ids`` never drawn.

    One uniform per row: ``torch.multinomial(probs, 1)`` instead draws one exponential per *vocabulary entry*
    (its Gumbel-max fast path), which dominates small-model decoding on a CPU. Zero-weight ids are never drawn;
    a row with no allowed weight gets -1. Returns (N,) long.
    """
    N, V = probs.shape
    w = probs.double()  # (N, V), a copy we may edit
    if forbidden_ids:
        w[:, list(forbidden_ids)] = 0.0
    cdf = w.cumsum_(-1)  # (N, V)
    total = cdf[:, -1:]
    if uniforms is None:
        uniforms = torch.rand(N, 1, dtype=torch.float64, device=probs.device, generator=generator)
    u = uniforms.reshape(N, 1).to(torch.float64) * total
    idx = torch.searchsorted(cdf, u, right=True).squeeze(-1)  # first id whose cdf exceeds u
    # rounding can put u at the very top: take the last id that adds weight (the cdf's first maximum)
    last = cdf.argmax(-1)
    idx = torch.minimum(idx, last)
    return torch.where(total.squeeze(-1) > 0, idx, torch.full_like(idx, -1))


def sample_tokens(logits: torch.Tensor, alg: str, temperature: float = 0.0, top_p: float | None = None,
                  top_k: int | None = None, generator: torch.Generator | None = None,
                  forbidden_ids: tuple[int, ...] = (), reference_draws: bool = False) -> StepChoice:
    """Choose a token for each row of ``logits`` (N, V) and score it with ``alg``'s confidence.

    With ``temperature > 0`` the token is drawn by :func:`categorical_draw`, or with ``reference_draws`` by
    ``torch.multinomial(probs, 1, replacement=True, generator=generator)``, the draw the reference's
    ``Categorical.sample`` makes (same seed, same tokens as the reference; much slower on a CPU). At
    temperature 0 it is the arg-max. A row whose whole mass sits on forbidden ids gets its best allowed logit.
    """
    if alg not in ALGORITHMS:
        raise ValueError(f"unknown alg {alg!r}; choose one of {list(ALGORITHMS)}")
    if top_k is not None and top_k < logits.shape[-1] and not reference_draws and logits.shape[0]:
        return _sample_top_k(logits, alg, temperature, top_p, top_k, generator, forbidden_ids)
    return _sample_full(logits, alg, temperature, top_p, top_k, generator, forbidden_ids, reference_draws)


def _sample_top_k(logits: torch.Tensor, alg: str, temperature: float, top_p: float | None, top_k: int,
                  generator: torch.Generator | None, forbidden_ids: tuple[int, ...]) -> StepChoice:
    """:func:`sample_tokens` with a top-k filter, computed on the (N, k) kept logits instead of (N, V).

    Outside the top k the reference's probabilities are exactly 0 (its filled logits underflow in the softmax),
    so the probabilities, the entropy, the margin and the chosen token are the same numbers up to the rounding of
    the softmax normaliser (summed over k terms instead of V). Sampled tokens use the same uniform and the same
    inverse-CDF draw over the kept ids in vocabulary order (the cdf of the full row, whose other terms are 0).
    Rows this cannot settle exactly take the full computation with their own uniform: a tie across the cut (the
    reference then keeps every tied id), a tie of the arg-max probability, a row whose kept mass is all on
    forbidden ids.
    """
    N, V = logits.shape
    x = logits / temperature if temperature > 0 else logits
    if top_p is not None and top_p < 1:
        x = top_p_filter(x, top_p)
    vals, idx = torch.topk(x, min(top_k + 1, V), dim=-1)  # (N, k+1), descending
    kept_v, kept_i = vals[:, :top_k], idx[:, :top_k]  # (N, k)
    filled = torch.finfo(x.dtype).min
    fallback = torch.zeros(N, dtype=torch.bool, device=x.device)
    if vals.shape[1] > top_k:  # a tie across the cut (among logits top-p kept) would keep more than k ids
        fallback |= (vals[:, top_k - 1] == vals[:, top_k]) & (vals[:, top_k - 1] > filled)
    forbidden = torch.zeros_like(kept_i, dtype=torch.bool)
    if forbidden_ids:
        forbidden = torch.isin(kept_i, torch.tensor(list(forbidden_ids), device=x.device))  # (N, k)
    probs = torch.softmax(kept_v, dim=-1)  # (N, k)
    allowed = ~forbidden & (probs > 0)
    fallback |= ~allowed.any(-1)  # no allowed mass: the reference falls back on the best allowed logit
    uniforms = None
    if temperature > 0:
        uniforms = torch.rand(N, 1, dtype=torch.float64, device=x.device, generator=generator)
        order = kept_i.argsort(dim=-1)  # the kept ids in vocabulary order, as the full row's cdf sees them
        w = probs.gather(-1, order).masked_fill(~allowed.gather(-1, order), 0.0)  # (N, k)
        pick = categorical_draw(w, uniforms=uniforms).clamp_min(0)  # (N,) column among the sorted ids
        col = order.gather(-1, pick[:, None]).squeeze(-1)  # (N,) column in top-k order
    else:
        col = allowed.to(torch.int8).argmax(-1)  # the most probable allowed id (columns are descending)
        if top_k > 1:  # its probability tied with the next one's: let the full arg-max decide, as the reference
            nxt = (col + 1).clamp_max(top_k - 1)
            fallback |= (probs.gather(-1, col[:, None]) == probs.gather(-1, nxt[:, None])).squeeze(-1) & (nxt > col)
    tokens = kept_i.gather(-1, col[:, None]).squeeze(-1)  # (N,)
    chosen_prob = probs.gather(-1, col[:, None]).squeeze(-1)
    if alg == "topk_margin":
        confidence = probs[:, 0] - probs[:, 1] if top_k > 1 else probs[:, 0]
    elif alg == "entropy":
        confidence = torch.sum(probs * torch.log(probs + 1e-10), dim=-1)
    else:  # maskgit_plus, origin
        confidence = chosen_prob
    if bool(fallback.any()):
        full = _sample_full(logits[fallback], alg, temperature, top_p, top_k, generator, forbidden_ids, False,
                            uniforms[fallback] if uniforms is not None else None)
        tokens, confidence, chosen_prob = tokens.clone(), confidence.clone(), chosen_prob.clone()
        tokens[fallback], confidence[fallback], chosen_prob[fallback] = full.tokens, full.confidence, full.chosen_prob
    return StepChoice(tokens=tokens, confidence=confidence, chosen_prob=chosen_prob)


def _sample_full(logits: torch.Tensor, alg: str, temperature: float, top_p: float | None, top_k: int | None,
                 generator: torch.Generator | None, forbidden_ids: tuple[int, ...],
                 reference_draws: bool, uniforms: torch.Tensor | None = None) -> StepChoice:
    """:func:`sample_tokens` over the whole vocabulary, the reference's computation (``uniforms``: the rows'
    inverse-CDF draws, when already made)."""
    probs = torch.softmax(process_logits(logits, temperature, top_p, top_k), dim=-1)  # (N, V)
    forbid = list(forbidden_ids)

    def best_allowed(rows: torch.Tensor) -> torch.Tensor:
        return logits[rows].index_fill(-1, torch.tensor(forbid, device=logits.device), float("-inf")).argmax(-1)

    if temperature > 0:
        if reference_draws:
            choose_from = probs.index_fill(-1, torch.tensor(forbid, device=probs.device), 0.0) if forbid else probs
            dead = choose_from.sum(-1) <= 0
            if bool(dead.any()):
                choose_from[dead] = F.one_hot(best_allowed(dead), probs.shape[-1]).to(choose_from.dtype)
            tokens = torch.multinomial(choose_from, 1, replacement=True, generator=generator).squeeze(-1)  # (N,)
        else:
            tokens = categorical_draw(probs, generator, forbidden_ids, uniforms)  # (N,)
            dead = tokens < 0
            if bool(dead.any()):
                tokens[dead] = best_allowed(dead)
        chosen_prob = probs.gather(-1, tokens[:, None]).squeeze(-1)
    else:
        chosen_prob, tokens = probs.max(dim=-1)
        if forbid:
            # rare: a forbidden id is the maximum; redo those rows without it (the same arg-max otherwise)
            bad = torch.isin(tokens, torch.tensor(forbid, device=tokens.device))
            if bool(bad.any()):
                rows = probs[bad].index_fill(-1, torch.tensor(forbid, device=probs.device), -1.0)
                fixed = rows.max(-1).indices
                no_mass = rows.amax(-1) <= 0
                if bool(no_mass.any()):
                    fixed[no_mass] = best_allowed(bad.nonzero().squeeze(-1)[no_mass])
                tokens[bad] = fixed
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
