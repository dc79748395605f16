"""``diffusion_generate``: Dream's masked-diffusion decoding, re-stated, with a decode trace.

The canvas is the prompt followed by ``max_new_tokens`` [MASK]s. With ``timesteps = linspace(1, eps, steps+1)``
each step ``i`` runs one full forward pass (no KV cache), re-aligns the AR shift, and with ``t = timesteps[i]``,
``s = timesteps[i+1]`` (reference.md section 3; Dream / DiffuCoder ``generation_utils``):

- ``alg="origin"``: every masked position is revealed independently with probability ``1 - s/t`` (1 on the last
  step), its token drawn from the processed distribution;
- ``maskgit_plus`` / ``topk_margin`` / ``entropy``: every masked position gets a token and a confidence (see
  :mod:`diffucoder.sampling.policies`); the ``k = int(n_masked * (1 - s/t))`` most confident are revealed
  (all remaining ones on the last step), or, with ``alg_temp > 0``, ``k`` positions drawn without replacement
  from ``softmax(confidence / alg_temp)``.

With temperature 0 the tokens and the reveal order are the reference's for the same weights. Deliberate
differences (each coincides with the reference whenever the reference itself behaves):

- **Per-row counts.** The reference takes ``n_masked`` as the batch *average*; when rows hold different numbers
  of masks it then reveals too many in some rows (re-masking already revealed positions, since its top-k falls on
  ``-inf`` entries) and too few in others. We use each row's own count, which equals the reference whenever all
  rows have the same number of masked positions (always the case for a plain prompt + canvas batch).
- **[MASK] is never chosen** as a token (the reference can choose it and leave masks in the output); the
  confidences are still computed on the untouched distribution.
- **Ids beyond the tokenizer** (``vocab_limit``; the config's vocab_size may be larger) are removed from the
  logits before anything else.
- **Padding.** A left-padded batch with a 2-D ``attention_mask`` is handled by the model (pad keys hidden,
  positions ``cumsum(mask) - 1``), so each row decodes exactly as it would alone; the reference builds the
  equivalent 4-D mask. Right padding is refused.
- **Randomness** comes only from ``generator`` (every ``torch.rand`` / ``torch.multinomial`` call receives it;
  with ``generator=None`` torch's default generator is used, as the reference does). Reveal draws (``origin``'s
  ``torch.rand``, ``alg_temp``'s ``torch.multinomial``) are the reference's draws in the reference's order.
  Sampled *tokens* use an inverse-CDF draw (one uniform per position) unless ``reference_draws=True``, which
  uses the reference's ``torch.multinomial`` (one exponential per vocabulary entry per position, the main cost
  of small-model decoding on a CPU): then a generator seeded like the reference's global RNG reproduces the
  reference's sampled output too.

Same choices, also where it is easy to drift: confidence ties (frequent in bf16) are broken by ``torch.topk``
exactly as the reference calls it, confidences are computed in the logits' dtype as the reference does, and the
top-p nucleus is the reference's (found from a partial top-k; rows too close to call take the full sort).

Extensions (off by default): LLaDA-style semi-autoregressive blocks (``block_length``), Fast-dLLM-style parallel
threshold decoding (``threshold``: reveal every position whose chosen token has probability above it, at least
one per row and step), a confidence penalty on end-of-text / pad tokens (``stop_token_penalty``) against EOS
flooding, and a :class:`~diffucoder.sampling.trace.DecodeTrace`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch

from diffucoder.sampling.policies import ALGORITHMS, limit_vocab, process_logits, sample_tokens
from diffucoder.sampling.trace import DecodeTrace, GenerationOutput

if TYPE_CHECKING:  # pragma: no cover
    from diffucoder.model import DreamModel

TokensHook = Callable[[int | None, torch.Tensor, torch.Tensor | None], torch.Tensor]
LogitsHook = Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor]

DEFAULT_MAX_NEW_TOKENS = 20  # Dream's generation config: max_length 20 when nothing is given
# generation-config keys of the reference that need no handling here
_IGNORED_KWARGS = {"bos_token_id", "use_cache", "output_attentions", "output_hidden_states", "do_sample"}


class GenerationError(ValueError):
    """Bad arguments to :func:`diffusion_generate` (raised before any forward pass)."""


def reveal_counts(n_masked: torch.Tensor, step: int, steps: int, timesteps: torch.Tensor) -> torch.Tensor:
    """How many positions each row reveals at ``step``: ``int(n * (1 - s/t))``, all remaining on the last step.

    ``n_masked`` (B,) long; computed in the timesteps' dtype (float32) as the reference does, so the floor lands
    on the same integer. Example: n = 4, steps = 4, eps = 1e-3 gives 0, 1, 1, 2 over the four steps.
    """
    if step >= steps - 1:
        return n_masked.clone()
    t, s = timesteps[step], timesteps[step + 1]
    return (n_masked.to(timesteps.dtype) * (1 - s / t)).long()


def _ranks_of(key: torch.Tensor, selected: torch.Tensor) -> torch.Tensor:
    """Rank (0 = largest key) of each selected position among the selected ones of its row; -1 elsewhere."""
    B, L = key.shape
    masked_key = key.float().masked_fill(~selected, float("-inf"))
    masked_key = torch.nan_to_num(masked_key, nan=float("-inf"))
    order = torch.sort(masked_key, dim=1, descending=True, stable=True).indices  # (B, L)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(L, device=key.device).expand(B, L))
    return torch.where(selected, ranks, torch.full_like(ranks, -1))


def _top_k_ranks(conf: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Rank (0 = most confident) of the ``k[b]`` most confident positions of each row; -1 elsewhere.

    ``torch.topk`` exactly as the reference calls it (one batched call when every row takes the same number),
    so even tied confidences, common in bf16, are broken the way the reference breaks them. ``conf`` is -inf
    outside the candidates and ``k[b]`` never exceeds row b's candidate count, so only candidates are chosen.
    """
    B, L = conf.shape
    ranks = torch.full((B, L), -1, dtype=torch.long, device=conf.device)
    if bool((k == k[0]).all()):
        kk = int(k[0])
        if kk > 0:
            idx = torch.topk(conf, kk, dim=1).indices  # (B, kk), most confident first
            ranks.scatter_(1, idx, torch.arange(kk, device=conf.device).expand(B, kk))
        return ranks
    for b in range(B):
        kk = int(k[b])
        if kk > 0:
            idx = torch.topk(conf[b], kk).indices
            ranks[b, idx] = torch.arange(kk, device=conf.device)
    return ranks


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise GenerationError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


@torch.no_grad()
def diffusion_generate(
    model: "DreamModel",
    inputs: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
    *,
    max_new_tokens: int | None = None,
    max_length: int | None = None,
    steps: int = 512,
    eps: float = 1e-3,
    temperature: float = 0.0,
    top_p: float | None = None,
    top_k: int | None = None,
    alg: str = "origin",
    alg_temp: float | None = None,
    output_history: bool = False,
    return_dict_in_generate: bool = False,
    generation_tokens_hook_func: TokensHook | None = None,
    generation_logits_hook_func: LogitsHook | None = None,
    generator: torch.Generator | None = None,
    mask_token_id: int | None = None,
    num_return_sequences: int = 1,
    block_length: int | None = None,
    threshold: float | None = None,
    vocab_limit: int | None = None,
    stop_token_ids: Sequence[int] | None = None,
    stop_token_penalty: float = 0.0,
    progress: bool = False,
    reference_draws: bool = False,
    input_ids: torch.Tensor | None = None,
    **kwargs: Any,
) -> torch.Tensor | GenerationOutput:
    """Decode ``max_new_tokens`` positions after ``inputs`` by iterative unmasking (see the module docstring).

    Arguments and defaults are Dream's ``diffusion_generate``: ``inputs`` (B, P) prompt ids (left-padded with
    ``attention_mask`` (B, P), 1 = token, when rows differ in length); ``max_new_tokens`` (else ``max_length`` =
    prompt + new, else 20 new); ``steps`` 512; ``eps`` 1e-3; ``temperature`` 0 (arg-max); ``top_p``/``top_k``
    filters; ``alg`` "origin" (DiffuCoder uses "entropy"); ``alg_temp``; ``output_history`` and
    ``return_dict_in_generate``; the two hooks, called as ``tokens_hook(step, x, logits) -> x`` (also once
    before the loop with ``step=None, logits=None``) and ``logits_hook(step, x, logits) -> logits``.

    The number revealed per step uses **each row's own masked count**; the reference uses the batch average,
    which coincides with ours whenever rows have equal masked counts (see the module docstring).

    Extras: ``generator`` (all randomness), ``mask_token_id`` (default: the config's), ``num_return_sequences``,
    ``block_length`` (semi-AR blocks; ``steps`` is split evenly between them), ``threshold`` (parallel decoding,
    ``steps`` then unused), ``vocab_limit`` (the tokenizer's size: larger ids are never produced),
    ``stop_token_ids`` + ``stop_token_penalty`` (subtracted from the confidence of positions whose chosen token is
    end-of-text / pad; default ids: the config's eos and pad), ``progress`` (a tqdm bar), ``reference_draws``
    (sample tokens with ``torch.multinomial`` exactly as the reference, so that a generator seeded like the
    reference's global RNG reproduces its sampled output; by default an inverse-CDF draw with one uniform per
    position, the same distribution at a fraction of the cost).

    Returns the (B, P + max_new_tokens) sequences, or with ``return_dict_in_generate=True`` a
    :class:`GenerationOutput` with ``.sequences``, ``.history`` (a list of canvases when ``output_history``) and
    ``.trace`` (:class:`DecodeTrace`). The whole canvas is always produced: cut text at EOS / pad afterwards
    (:func:`diffucoder.sampling.completion_ids`).
    """
    cfg = model.config
    # -- validation (no forward pass before this block ends) -----------------------------------------------
    if input_ids is not None:
        if inputs is not None:
            raise GenerationError("pass the prompt as `inputs` or `input_ids`, not both")
        inputs = input_ids
    unknown = set(kwargs) - _IGNORED_KWARGS - {"eos_token_id", "pad_token_id"}
    if unknown:
        raise TypeError(f"diffusion_generate() got unexpected arguments: {sorted(unknown)}")
    if inputs is None or not isinstance(inputs, torch.Tensor):
        raise GenerationError(f"inputs must be a (B, P) tensor of token ids, got {type(inputs).__name__}")
    if inputs.dim() == 1:
        inputs = inputs[None]
    if inputs.dim() != 2 or inputs.dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64,
                                              torch.bool):
        raise GenerationError(f"inputs must be a 2-D integer tensor (B, P), got {inputs.dtype} "
                              f"of shape {tuple(inputs.shape)}")
    B, P = inputs.shape
    if B == 0:
        raise GenerationError("inputs holds no rows")
    _check_int("steps", steps, 1)
    if alg not in ALGORITHMS:
        raise GenerationError(f"unknown alg {alg!r}; choose one of {list(ALGORITHMS)}")
    if not isinstance(temperature, (int, float)) or not math.isfinite(temperature) or temperature < 0:
        raise GenerationError(f"temperature must be a finite number >= 0, got {temperature!r}")
    if top_p is not None and not (isinstance(top_p, (int, float)) and 0 < top_p <= 1):
        raise GenerationError(f"top_p must be in (0, 1], got {top_p!r}")
    if top_k is not None:
        _check_int("top_k", top_k, 1)
    if alg_temp is not None and not (isinstance(alg_temp, (int, float)) and alg_temp >= 0):
        raise GenerationError(f"alg_temp must be None or >= 0, got {alg_temp!r}")
    if not isinstance(eps, (int, float)) or not 0 <= eps < 1:
        raise GenerationError(f"eps must be in [0, 1), got {eps!r}")
    _check_int("num_return_sequences", num_return_sequences, 1)
    mask_id = mask_token_id if mask_token_id is not None else cfg.mask_token_id
    if mask_id is None:
        raise GenerationError("no mask token id: the model config has mask_token_id = None and none was passed "
                              "(pass mask_token_id=tokenizer.mask_token_id)")
    if not 0 <= mask_id < cfg.vocab_size:
        raise GenerationError(f"mask_token_id {mask_id} is outside the model vocabulary ({cfg.vocab_size})")
    if vocab_limit is not None:
        _check_int("vocab_limit", vocab_limit, 1)
    if P == 0 and cfg.shift_logits:
        raise GenerationError("an empty prompt cannot be decoded by a shifted model (position 0 carries no "
                              "prediction); give at least one prompt token")
    if max_new_tokens is not None:
        _check_int("max_new_tokens", max_new_tokens, 1)
        N = max_new_tokens
    elif max_length is not None:
        _check_int("max_length", max_length, 1)
        if max_length <= P:
            raise GenerationError(f"max_length ({max_length}) must exceed the prompt length ({P})")
        N = max_length - P
    else:
        N = min(DEFAULT_MAX_NEW_TOKENS, max(cfg.max_position_embeddings - P, 1))
    L = P + N
    if L > cfg.max_position_embeddings:
        raise GenerationError(f"prompt ({P} tokens) + {N} new tokens = {L} exceeds the model's context "
                              f"(max_position_embeddings = {cfg.max_position_embeddings})")
    if attention_mask is not None:
        if attention_mask.shape != (B, P):
            raise GenerationError(f"attention_mask must have the prompt's shape {(B, P)}, got "
                                  f"{tuple(attention_mask.shape)}")
        am = attention_mask.long()
        if bool(((am != 0) & (am != 1)).any()):
            raise GenerationError("attention_mask must hold only 0 (pad) and 1 (token)")
        if P > 1 and bool((am[:, 1:] < am[:, :-1]).any()):
            raise GenerationError("attention_mask must describe LEFT padding (zeros before ones in every row); "
                                  "right-padded prompts would put pads between the prompt and the canvas")
        if bool((am.sum(1) == 0).any()) and cfg.shift_logits:
            raise GenerationError("a row of attention_mask has no token: every prompt needs at least one")
    n_blocks = 1
    if block_length is not None:
        _check_int("block_length", block_length, 1)
        if N % block_length:
            raise GenerationError(f"max_new_tokens ({N}) must be a multiple of block_length ({block_length})")
        n_blocks = N // block_length
        if threshold is None and steps % n_blocks:
            raise GenerationError(f"steps ({steps}) must be a multiple of the number of blocks ({n_blocks} = "
                                  f"{N} / {block_length})")
    if threshold is not None:
        if not isinstance(threshold, (int, float)) or not 0 < threshold <= 1:
            raise GenerationError(f"threshold must be in (0, 1], got {threshold!r}")
        if alg == "origin":
            raise GenerationError("threshold decoding needs a confidence: use alg maskgit_plus, topk_margin "
                                  "or entropy, not origin")
    if stop_token_ids is None:
        ids = [kwargs.get("eos_token_id", cfg.eos_token_id), kwargs.get("pad_token_id", cfg.pad_token_id)]
        stop_ids = sorted({int(i) for i in ids if i is not None})
    else:
        stop_ids = sorted({int(i) for i in stop_token_ids})
    if stop_token_penalty and not stop_ids:
        raise GenerationError("stop_token_penalty needs stop_token_ids (the config has no eos/pad id)")
    if threshold is None and steps // n_blocks > N // n_blocks:
        warnings.warn(f"steps per block ({steps // n_blocks}) exceed the tokens per block ({N // n_blocks}): "
                      f"the extra steps reveal nothing but still cost a forward pass each", stacklevel=2)
    if generator is not None and generator.device.type != model.device.type:
        raise GenerationError(f"generator is on {generator.device} but the model on {model.device}: create it "
                              f"with torch.Generator(device=...) on the model's device")
    tokens_hook = generation_tokens_hook_func or (lambda step, x, logits: x)
    logits_hook = generation_logits_hook_func or (lambda step, x, logits: logits)

    # -- canvas ----------------------------------------------------------------------------------------------
    device = model.device
    x = inputs.to(device=device, dtype=torch.long)
    if attention_mask is not None:
        attention_mask = attention_mask.to(device)
    if num_return_sequences > 1:
        x = x.repeat_interleave(num_return_sequences, dim=0)
        if attention_mask is not None:
            attention_mask = attention_mask.repeat_interleave(num_return_sequences, dim=0)
        B = x.shape[0]
    x = torch.cat([x, torch.full((B, N), mask_id, dtype=torch.long, device=device)], dim=1)  # (B, L)
    attn = None
    if attention_mask is not None and bool((attention_mask == 0).any()):
        attn = torch.cat([attention_mask.long(), torch.ones(B, N, dtype=torch.long, device=device)], dim=1)

    reveal_step = torch.full((B, L), -1, dtype=torch.long, device=device)
    reveal_rank = torch.full((B, L), -1, dtype=torch.long, device=device)
    reveal_conf = torch.full((B, L), float("nan"), dtype=torch.float32, device=device)
    reveal_tok = torch.full((B, L), -1, dtype=torch.long, device=device)
    first_conf = torch.full((B, L), float("nan"), dtype=torch.float32, device=device)
    per_step: list[torch.Tensor] = []
    histories: list[torch.Tensor] | None = [] if (return_dict_in_generate and output_history) else None
    stop_t = torch.tensor(stop_ids, dtype=torch.long, device=device) if stop_ids else None
    forbidden = (int(mask_id),)
    col = torch.arange(L, device=device)

    x = tokens_hook(None, x, None)
    block_len = N // n_blocks
    steps_per_block = steps // n_blocks
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=None if threshold is not None else steps_per_block * n_blocks, desc="diffusion",
                   unit="step", leave=False)
    global_step = 0
    for b in range(n_blocks):
        block_end = P + (b + 1) * block_len
        timesteps = torch.linspace(1, eps, steps_per_block + 1, device=device)
        i = 0
        max_iters = L + 1  # threshold mode reveals >= 1 per row and step
        while True:
            candidate = (x == mask_id) & (col < block_end)  # (B, L)
            if threshold is None:
                if i >= steps_per_block:
                    break
            elif not bool(candidate.any()):
                break
            elif i >= max_iters:  # only a hook that keeps re-masking gets here
                warnings.warn(f"threshold decoding stopped after {i} steps with masks left", stacklevel=2)
                break
            logits = model.token_logits(x, attn)  # (B, L, V), logits[:, j] predicts x[:, j]
            logits = logits_hook(global_step, x, logits)
            logits = limit_vocab(logits, vocab_limit)
            flat_logits = logits[candidate]  # (N_c, V), row-major over (b, j)
            n_masked = candidate.sum(1)  # (B,)
            new_x = torch.full_like(x, mask_id)
            selected = torch.zeros_like(candidate)
            full_conf = torch.full((B, L), float("-inf"), dtype=logits.dtype, device=device)
            raw_conf = full_conf  # the policy's confidence (full_conf also carries the stop-token penalty)
            draw_rank: torch.Tensor | None = None

            if alg == "origin":
                t, s = timesteps[i], timesteps[i + 1]
                p_transfer = 1 - s / t if i < steps_per_block - 1 else 1
                transfer = torch.rand(flat_logits.shape[0], device=device, generator=generator) < p_transfer
                if global_step == 0 and flat_logits.shape[0]:
                    # arg-max probability of the processed distribution; no random draw, so the RNG stream
                    # stays the reference's
                    probe = torch.softmax(process_logits(flat_logits, temperature, top_p, top_k), dim=-1)
                    first_conf[candidate] = probe.max(-1).values.float()
                if bool(transfer.any()):
                    choice = sample_tokens(flat_logits[transfer], "origin", temperature, top_p, top_k,
                                           generator=generator, forbidden_ids=forbidden,
                                           reference_draws=reference_draws)
                    idx = candidate.nonzero()[transfer]  # (n, 2)
                    selected[idx[:, 0], idx[:, 1]] = True
                    new_x[idx[:, 0], idx[:, 1]] = choice.tokens
                    full_conf[idx[:, 0], idx[:, 1]] = choice.confidence
            elif flat_logits.shape[0]:
                choice = sample_tokens(flat_logits, alg, temperature, top_p, top_k, generator=generator,
                                       forbidden_ids=forbidden, reference_draws=reference_draws)
                conf = choice.confidence
                if stop_token_penalty and stop_t is not None:
                    raw_conf = full_conf.clone()
                    raw_conf[candidate] = conf
                    conf = conf - stop_token_penalty * torch.isin(choice.tokens, stop_t).to(conf.dtype)
                full_conf[candidate] = conf
                new_x[candidate] = choice.tokens
                if global_step == 0:
                    first_conf[candidate] = choice.confidence.float()
                if threshold is not None:
                    prob = torch.zeros((B, L), dtype=choice.chosen_prob.dtype, device=device)
                    prob[candidate] = choice.chosen_prob
                    best = _ranks_of(full_conf, candidate) == 0
                    selected = candidate & ((prob > threshold) | best)
                else:
                    k = reveal_counts(n_masked, i, steps_per_block, timesteps)  # (B,)
                    if alg_temp is None or alg_temp == 0:
                        draw_rank = _top_k_ranks(full_conf, k)
                        selected = candidate & (draw_rank >= 0)
                    else:
                        weights = torch.softmax(full_conf / alg_temp, dim=-1)  # (B, L)
                        draw_rank = torch.full((B, L), -1, dtype=torch.long, device=device)
                        if bool((k == k[0]).all()):  # one batched draw, as the reference
                            if int(k[0]) > 0:
                                pick = torch.multinomial(weights, int(k[0]), generator=generator)  # (B, k)
                                draw_rank.scatter_(1, pick, torch.arange(int(k[0]), device=device).expand_as(pick))
                        else:
                            for r in range(B):
                                if int(k[r]) > 0:
                                    pick = torch.multinomial(weights[r], int(k[r]), generator=generator)
                                    draw_rank[r, pick] = torch.arange(int(k[r]), device=device)
                        selected = candidate & (draw_rank >= 0)

            x = torch.where(selected, new_x, x)
            ranks = draw_rank if draw_rank is not None else _ranks_of(full_conf, selected)
            reveal_step[selected] = global_step
            reveal_rank[selected] = ranks[selected]
            reveal_conf[selected] = raw_conf[selected].float()
            reveal_tok[selected] = new_x[selected]
            per_step.append(selected.sum(1))

            x = tokens_hook(global_step, x, logits)
            if histories is not None:
                histories.append(x.clone())
            i += 1
            global_step += 1
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()

    if not return_dict_in_generate:
        return x
    trace = DecodeTrace(
        prompt_length=P, reveal_step=reveal_step, reveal_rank=reveal_rank, reveal_confidence=reveal_conf,
        reveal_token=reveal_tok, first_step_confidence=first_conf,
        revealed_per_step=torch.stack(per_step) if per_step else torch.zeros(0, B, dtype=torch.long),
        alg=alg, num_forward_passes=global_step, block_length=block_length,
        extra={"steps": steps, "eps": eps, "temperature": temperature, "top_p": top_p, "top_k": top_k,
               "alg_temp": alg_temp, "threshold": threshold},
    )
    return GenerationOutput(sequences=x, history=histories, trace=trace)
