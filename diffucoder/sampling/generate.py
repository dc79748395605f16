"""``diffusion_generate``: Dream's masked-diffusion decoding, re-stated, with a KV cache, early stop and a trace.

The canvas is the prompt followed by ``max_new_tokens`` [MASK]s. With ``timesteps = linspace(1, eps, steps+1)``
each step ``i`` runs one forward pass, re-aligns the AR shift, and with ``t = timesteps[i]``,
``s = timesteps[i+1]`` (reference.md section 3; Dream / DiffuCoder ``generation_utils``):

- ``alg="origin"``: every masked position is revealed independently with probability ``1 - s/t`` (1 on the last
  step), its token drawn from the processed distribution;
- ``maskgit_plus`` / ``topk_margin`` / ``entropy``: every masked position gets a token and a confidence (see
  :mod:`diffucoder.sampling.policies`); the ``k = int(n_masked * (1 - s/t))`` most confident are revealed
  (all remaining ones on the last step), or, with ``alg_temp > 0``, ``k`` positions drawn without replacement
  from ``softmax(confidence / alg_temp)``.

**Defaults are the reference's as users run it.** Dream's ``diffusion_generate`` builds its settings with
``DreamGenerationConfig.from_model_config(model.config)``; under transformers 4.x (what Dream and DiffuCoder pin) a
``PretrainedConfig`` carries the legacy generation defaults ``temperature=1.0, top_p=1.0, top_k=50``, so a call that
passes none of them samples at temperature 1 from the top 50 ids, and every confidence is computed on that
renormalised top-50 distribution. We resolve ``temperature``, ``top_p`` and ``top_k`` the same way
(:func:`inherited_sampling_defaults`): the argument when given, else the checkpoint's own ``config.json`` value,
else the legacy default (a ``null`` in config.json means Dream's own default: 0, None, None). Switch top-k off
with ``top_k=None`` (the reference's ``None`` means off too) or ``top_k=0`` (which crashes the reference).

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
- **The LM head runs only where a token is chosen** (the masked positions of the current block), unless a hook
  asks for the full (B, L, V) logits; the chosen rows' logits are the same numbers.

Same choices, also where it is easy to drift: confidence ties (frequent in bf16) are broken by ``torch.topk``
exactly as the reference calls it, confidences are computed in the logits' dtype as the reference does, and the
top-p nucleus is the reference's (found from a partial top-k; rows too close to call take the full sort).

Extensions (off by default):

- LLaDA-style semi-autoregressive blocks (``block_length``; the last block may be shorter);
- Fast-dLLM-style parallel threshold decoding (``threshold``: reveal every position of the block whose chosen
  token has probability above it, at least one per row and step);
- **a KV cache** (``use_cache``, Fast-dLLM's block-wise approximate cache). At the start of every block one full
  forward computes every layer's keys/values for the whole canvas; while the block is decoded, each step
  recomputes only a window and reuses the cached keys/values of the rest: ``"prefix"`` recomputes the block and
  everything after it (the prompt and finished blocks are cached), ``"dual"`` only the block (the masked suffix is
  cached too). With the AR shift the window starts one position early (output j-1 predicts token j). This is an
  approximation: the cached keys/values of the other positions were computed when the block started, before its
  tokens changed (Fast-dLLM: neighbouring steps' keys/values are nearly identical). ``cache_refresh=n`` also
  refreshes every n steps inside a block; ``cache_refresh=1`` is exact decoding. A tokens hook that rewrites
  positions outside the recomputed window forces a refresh at the next step (never silently stale keys).
  Without ``block_length`` the completion is one block and only the prompt is cached.
- **early stop** (``early_stop``): once every row holds a stop token (end-of-text / pad) with no mask before it,
  decoding ends and the remaining masks become pad; before that, a row that has finished gets pad in its
  remaining masks and is left out of the forward passes (at once without a cache, from the next block with one).
  The text cut at the first stop token is exactly what full decoding gives, because revealed tokens never change,
  nothing after the stop token is read and rows never attend to each other.
- **per-row settings**: ``temperature``, ``top_p``, ``top_k`` may be sequences with one value per row, and
  ``generator`` a sequence of generators; rows sharing settings and a generator are sampled together, so a
  request decoded alone or inside a batch draws the same numbers (what a server batching requests needs).
- **streaming** (``step_callback``): called after every step with a :class:`DecodeStep` (the canvas, how many
  leading completion tokens are final, which rows are finished); returning True ends decoding there, returning
  a (B,) bool tensor stops those rows (their remaining masks become pad and they leave the forward passes, as
  finished rows do under early stop: e.g. a server's rows that met a stop sequence or lost their client).
- a confidence penalty on end-of-text / pad tokens (``stop_token_penalty``) against EOS flooding, and a
  :class:`~diffucoder.sampling.trace.DecodeTrace`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from diffucoder.errors import InputError
from diffucoder.sampling.policies import ALGORITHMS, StepChoice, limit_vocab, process_logits, sample_tokens
from diffucoder.sampling.trace import DecodeTrace, GenerationOutput

TokensHook = Callable[[int | None, torch.Tensor, torch.Tensor | None], torch.Tensor]
LogitsHook = Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor]

DEFAULT_MAX_NEW_TOKENS = 20  # Dream's generation config: max_length 20 when nothing is given
# What a transformers-4.x PretrainedConfig carries for every model (``_get_global_generation_defaults``), and so
# what Dream's ``from_model_config`` hands its sampler when the call passes nothing.
LEGACY_SAMPLING_DEFAULTS: dict[str, Any] = {"temperature": 1.0, "top_p": 1.0, "top_k": 50}
# DreamGenerationConfig's own defaults: what a key set to null in config.json falls back to.
DREAM_SAMPLING_DEFAULTS: dict[str, Any] = {"temperature": 0.0, "top_p": None, "top_k": None}
CACHE_MODES = ("prefix", "dual")
# generation-config keys of the reference that need no handling here
_IGNORED_KWARGS = {"bos_token_id", "output_attentions", "output_hidden_states", "do_sample"}


class GenerationError(InputError):
    """Bad arguments to :func:`diffusion_generate` (raised before any forward pass); a ``ValueError``."""


class _Inherit:
    """Marker of an argument not given (``None`` means "off" for top_p / top_k, as in the reference)."""

    def __repr__(self) -> str:
        return "<from the model config>"


INHERIT: Any = _Inherit()


class DiffusionLM(Protocol):
    """What the sampler needs of a model (``DreamModel`` is one); the sampler never imports the model package."""

    config: Any

    @property
    def device(self) -> torch.device: ...

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, *,
                 kv_cache: Any = None, cache_start: int = 0, logits_mask: torch.Tensor | None = None) -> Any: ...

    def new_kv_cache(self) -> Any: ...


@dataclass
class DecodeStep:
    """What ``step_callback`` receives after every step (read it; do not modify the tensors)."""

    step: int
    """0-based forward-pass step of the whole call."""
    block: int
    """Block being decoded (0 without ``block_length``)."""
    x: torch.Tensor
    """(B, L) the canvas after this step."""
    prompt_length: int
    """P: columns before the first generated one (left padding included)."""
    settled: torch.Tensor
    """(B,) long: leading completion tokens that are final (revealed, no mask before them)."""
    finished: torch.Tensor
    """(B,) bool: the row holds a stop token with no mask before it (its text is final)."""
    forward_passes: int
    """Model calls so far."""


def inherited_sampling_defaults(config: Any) -> dict[str, Any]:
    """``temperature``, ``top_p``, ``top_k`` as Dream's ``from_model_config`` resolves them for ``config``.

    A key present in the checkpoint's config.json (kept in ``config.extra``) wins; a key present as ``null`` means
    DreamGenerationConfig's own default (temperature 0, top_p / top_k None); an absent key means the legacy
    transformers-4.x default (temperature 1.0, top_p 1.0, top_k 50).
    """
    extra = getattr(config, "extra", None) or {}
    out = {}
    for key, legacy in LEGACY_SAMPLING_DEFAULTS.items():
        if key in extra:
            out[key] = extra[key] if extra[key] is not None else DREAM_SAMPLING_DEFAULTS[key]
        else:
            out[key] = legacy
    return out


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


# -- per-row sampling settings ------------------------------------------------------------------------------------
@dataclass
class _Group:
    """Rows sampled together: same temperature / top-p / top-k and the same generator."""

    rows: torch.Tensor | None  # (n,) row indices, None = every row
    temperature: float
    top_p: float | None
    top_k: int | None
    generator: torch.Generator | None


def _per_row(name: str, value: Any, B_in: int, B: int, check: Callable[[Any], Any]) -> list[Any]:
    """One checked value per output row from a scalar or a sequence of B_in (input rows) or B (output rows)."""
    if isinstance(value, torch.Tensor):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        if len(value) not in (B_in, B):
            raise GenerationError(f"{name} has {len(value)} values; give one, or one per row ({B_in}"
                                  f"{'' if B == B_in else f' prompts or {B} sequences'})")
        vals = [check(v) for v in value]
        return [vals[i // (B // B_in)] for i in range(B)] if len(vals) == B_in and B != B_in else vals
    v = check(value)
    return [v] * B


def _check_temperature(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
        raise GenerationError(f"temperature must be a finite number >= 0, got {v!r}")
    return float(v)


def _check_top_p(v: Any) -> float | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= 1:
        raise GenerationError(f"top_p must be in (0, 1] (or None: off), got {v!r}")
    return float(v)


def _check_top_k(v: Any) -> int | None:
    if v is None or (isinstance(v, int) and not isinstance(v, bool) and v == 0):
        return None  # 0 = off (the reference would crash on it)
    return _check_int("top_k", v, 0)


def _groups(temperature: list[float], top_p: list[float | None], top_k: list[int | None],
            generators: list[torch.Generator | None]) -> list[_Group]:
    """Rows with identical settings and the same generator object, in order of their first row."""
    keys: dict[tuple, list[int]] = {}
    for r in range(len(temperature)):
        keys.setdefault((temperature[r], top_p[r], top_k[r], id(generators[r])), []).append(r)
    if len(keys) == 1:
        return [_Group(None, temperature[0], top_p[0], top_k[0], generators[0])]
    return [_Group(torch.tensor(rows), temperature[rows[0]], top_p[rows[0]], top_k[rows[0]], generators[rows[0]])
            for rows in keys.values()]


def _flat_subset(group: _Group, flat_rows: torch.Tensor) -> torch.Tensor | None:
    """Which flattened candidate positions (rows ``flat_rows``) belong to ``group``; None = all."""
    if group.rows is None:
        return None
    return torch.isin(flat_rows, group.rows.to(flat_rows.device))


def _sample_groups(flat_logits: torch.Tensor, flat_rows: torch.Tensor, groups: list[_Group], alg: str,
                   forbidden: tuple[int, ...], reference_draws: bool) -> StepChoice:
    """:func:`sample_tokens` over the candidate positions, one call per group of rows."""
    if len(groups) == 1:
        g = groups[0]
        return sample_tokens(flat_logits, alg, g.temperature, g.top_p, g.top_k, generator=g.generator,
                             forbidden_ids=forbidden, reference_draws=reference_draws)
    N = flat_logits.shape[0]
    tokens = torch.zeros(N, dtype=torch.long, device=flat_logits.device)
    conf = torch.zeros(N, dtype=flat_logits.dtype, device=flat_logits.device)
    prob = torch.zeros(N, dtype=flat_logits.dtype, device=flat_logits.device)
    for g in groups:
        sel = _flat_subset(g, flat_rows)
        if not bool(sel.any()):
            continue
        c = sample_tokens(flat_logits[sel], alg, g.temperature, g.top_p, g.top_k, generator=g.generator,
                          forbidden_ids=forbidden, reference_draws=reference_draws)
        tokens[sel], conf[sel], prob[sel] = c.tokens, c.confidence.to(conf.dtype), c.chosen_prob.to(prob.dtype)
    return StepChoice(tokens=tokens, confidence=conf, chosen_prob=prob)


# -- one step's forward: exact, or with the KV cache --------------------------------------------------------------
class _StepForward:
    """The logits of each step's candidate positions, from a full forward or a cached window forward.

    ``candidate`` (B, L) marks the masked positions of the current block; the logits returned are (N_c, V) in
    row-major order of the candidates. With the AR shift, candidate j is predicted by output j - 1.
    """

    def __init__(self, model: DiffusionLM, attn: torch.Tensor | None, use_cache: str | None, shift: bool,
                 full_logits: bool) -> None:
        self.model, self.attn, self.use_cache, self.shift = model, attn, use_cache, shift
        self.full_logits = full_logits
        self.cache = model.new_kv_cache() if use_cache else None
        self.passes = 0  # model calls
        self.full_passes = 0  # of which over the whole canvas
        self.positions = 0  # canvas positions computed, summed over calls (the compute actually spent)

    def _pred_mask(self, candidate: torch.Tensor) -> torch.Tensor:
        if not self.shift:
            return candidate
        return torch.cat([candidate[:, 1:], torch.zeros_like(candidate[:, :1])], dim=1)  # output j-1 -> token j

    def window(self, block_start: int, block_end: int, L: int) -> tuple[int, int]:
        """[a, b) recomputed while the block [block_start, block_end) is decoded from the cache."""
        a = block_start - 1 if self.shift else block_start
        return a, (block_end if self.use_cache == "dual" else L)

    def __call__(self, x: torch.Tensor, candidate: torch.Tensor, block_start: int, block_end: int,
                 refresh: bool, rows: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(flat candidate logits (N_c, V), full aligned logits (B, L, V) when hooks need them, else None).

        ``rows``: compute only these rows (finished rows left out; they hold no candidate). With a cache the
        rows may change only on a refresh, which refills the cache for them."""
        attn = self.attn
        if rows is not None:
            x, candidate = x[rows], candidate[rows]
            attn = attn[rows] if attn is not None else None
        B, L = x.shape
        self.passes += 1
        if self.full_logits:  # exact mode with hooks: the reference's full-canvas logits
            self.full_passes += 1
            self.positions += B * L
            logits = self.model(x, self.attn).logits  # (B, L, V)
            if self.shift:
                logits = torch.cat([logits[:, :1], logits[:, :-1]], dim=1)  # logits[:, j] predicts x[:, j]
            return logits[candidate], logits
        pred = self._pred_mask(candidate)  # (B, L)
        if self.cache is None or refresh:
            self.full_passes += 1
            self.positions += B * L
            if self.cache is not None:
                self.cache.reset()
            out = self.model(x, attn, kv_cache=self.cache, logits_mask=pred)
            return out.logits, None
        a, b = self.window(block_start, block_end, L)
        self.positions += B * (b - a)
        out = self.model(x[:, a:b], kv_cache=self.cache, cache_start=a, logits_mask=pred[:, a:b])
        return out.logits, None


@torch.no_grad()
def diffusion_generate(
    model: DiffusionLM,
    inputs: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
    *,
    max_new_tokens: int | None = None,
    max_length: int | None = None,
    steps: int = 512,
    eps: float = 1e-3,
    temperature: float | Sequence[float] = INHERIT,
    top_p: float | None | Sequence[float | None] = INHERIT,
    top_k: int | None | Sequence[int | None] = INHERIT,
    alg: str = "origin",
    alg_temp: float | None = None,
    output_history: bool = False,
    return_dict_in_generate: bool = False,
    generation_tokens_hook_func: TokensHook | None = None,
    generation_logits_hook_func: LogitsHook | None = None,
    generator: torch.Generator | Sequence[torch.Generator | None] | None = None,
    mask_token_id: int | None = None,
    num_return_sequences: int = 1,
    block_length: int | None = None,
    threshold: float | None = None,
    use_cache: str | bool | None = None,
    cache_refresh: int | None = None,
    early_stop: bool = False,
    step_callback: Callable[[DecodeStep], bool | torch.Tensor | None] | None = None,
    vocab_limit: int | None = None,
    stop_token_ids: Sequence[int] | None = None,
    stop_token_penalty: float = 0.0,
    progress: bool = False,
    reference_draws: bool = False,
    input_ids: torch.Tensor | None = None,
    **kwargs: Any,
) -> torch.Tensor | GenerationOutput:
    """Decode ``max_new_tokens`` positions after ``inputs`` by iterative unmasking (see the module docstring).

    Arguments and defaults are Dream's ``diffusion_generate`` as run under transformers 4.x: ``inputs`` (B, P)
    prompt ids (left-padded with ``attention_mask`` (B, P), 1 = token, when rows differ in length);
    ``max_new_tokens`` (else ``max_length`` = prompt + new, else 20 new); ``steps`` 512; ``eps`` 1e-3;
    ``temperature`` / ``top_p`` / ``top_k``: when not given, the checkpoint config's values, else the legacy
    defaults **1.0 / 1.0 / 50** (:func:`inherited_sampling_defaults`; pass ``temperature=0`` for arg-max decoding
    and ``top_k=None`` to switch top-k off); ``alg`` "origin" (DiffuCoder uses "entropy"); ``alg_temp``;
    ``output_history`` and ``return_dict_in_generate``; the two hooks, called as ``tokens_hook(step, x, logits)
    -> x`` (also once before the loop with ``step=None, logits=None``) and ``logits_hook(step, x, logits) ->
    logits``.

    The number revealed per step uses **each row's own masked count**; the reference uses the batch average,
    which coincides with ours whenever rows have equal masked counts (see the module docstring).

    Extras: ``generator`` (all randomness; or one per row), ``mask_token_id`` (default: the config's),
    ``num_return_sequences``, ``block_length`` (semi-AR blocks, the last may be shorter; ``steps`` is split
    evenly between them), ``threshold`` (parallel decoding, ``steps`` then unused), ``use_cache`` (``"prefix"``,
    ``"dual"`` or None; ``True`` means "dual"), ``cache_refresh`` (also refresh the cache every n steps inside a
    block), ``early_stop``, ``step_callback`` (see :class:`DecodeStep`), ``vocab_limit`` (the tokenizer's size:
    larger ids are never produced), ``stop_token_ids`` (end-of-text / pad ids for the penalty and early stop;
    default: the config's eos and pad) + ``stop_token_penalty`` (subtracted from the confidence of positions
    whose chosen token is one of them), ``progress`` (a tqdm bar), ``reference_draws`` (sample tokens with
    ``torch.multinomial`` exactly as the reference; by default an inverse-CDF draw with one uniform per position,
    the same distribution at a fraction of the cost). With ``use_cache`` the tokens hook receives
    ``logits=None`` and a logits hook is refused (only the block's logits are computed).

    Returns the (B, P + max_new_tokens) sequences, or with ``return_dict_in_generate=True`` a
    :class:`GenerationOutput` with ``.sequences``, ``.history`` (a list of canvases when ``output_history``) and
    ``.trace`` (:class:`DecodeTrace`). Cut text at EOS / pad afterwards
    (:func:`diffucoder.sampling.completion_ids`).
    """
    cfg = model.config
    # -- validation (no forward pass before this block ends) -----------------------------------------------
    if input_ids is not None:
        if inputs is not None:
            raise GenerationError("pass the prompt as `inputs` or `input_ids`, not both")
        inputs = input_ids
    if "generation_config" in kwargs:
        raise GenerationError("generation_config objects are not supported: pass the settings as arguments")
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
    B_in, P = inputs.shape
    if B_in == 0:
        raise GenerationError("inputs holds no rows")
    _check_int("num_return_sequences", num_return_sequences, 1)
    B = B_in * num_return_sequences
    _check_int("steps", steps, 1)
    if alg not in ALGORITHMS:
        raise GenerationError(f"unknown alg {alg!r}; choose one of {list(ALGORITHMS)}")
    inherited = inherited_sampling_defaults(cfg)
    temps = _per_row("temperature", inherited["temperature"] if temperature is INHERIT else temperature, B_in, B,
                     _check_temperature)
    top_ps = _per_row("top_p", inherited["top_p"] if top_p is INHERIT else top_p, B_in, B, _check_top_p)
    top_ks = _per_row("top_k", inherited["top_k"] if top_k is INHERIT else top_k, B_in, B, _check_top_k)
    if alg_temp is not None and not (isinstance(alg_temp, (int, float)) and alg_temp >= 0):
        raise GenerationError(f"alg_temp must be None or >= 0, got {alg_temp!r}")
    if not isinstance(eps, (int, float)) or not 0 <= eps < 1:
        raise GenerationError(f"eps must be in [0, 1), got {eps!r}")
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
        if attention_mask.shape != (B_in, P):
            raise GenerationError(f"attention_mask must have the prompt's shape {(B_in, P)}, got "
                                  f"{tuple(attention_mask.shape)}")
        am = attention_mask.long()
        if bool(((am != 0) & (am != 1)).any()):
            raise GenerationError("attention_mask must hold only 0 (pad) and 1 (token)")
        if P > 1 and bool((am[:, 1:] < am[:, :-1]).any()):
            raise GenerationError("attention_mask must describe LEFT padding (zeros before ones in every row); "
                                  "right-padded prompts would put pads between the prompt and the canvas")
        if bool((am.sum(1) == 0).any()) and cfg.shift_logits:
            raise GenerationError("a row of attention_mask has no token: every prompt needs at least one")
    block_len = N
    if block_length is not None:
        block_len = min(_check_int("block_length", block_length, 1), N)
    n_blocks = -(-N // block_len)
    if threshold is None and steps % n_blocks:
        raise GenerationError(f"steps ({steps}) must be a multiple of the number of blocks ({n_blocks} = "
                              f"ceil({N} / {block_len}))")
    if threshold is not None:
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < threshold <= 1:
            raise GenerationError(f"threshold must be in (0, 1], got {threshold!r}")
        if alg == "origin":
            raise GenerationError("threshold decoding needs a confidence: use alg maskgit_plus, topk_margin "
                                  "or entropy, not origin")
    if use_cache is True:
        use_cache = "dual"
    elif use_cache is False:
        use_cache = None
    if use_cache is not None and use_cache not in CACHE_MODES:
        raise GenerationError(f"use_cache must be None, 'prefix' or 'dual', got {use_cache!r}")
    if cache_refresh is not None:
        _check_int("cache_refresh", cache_refresh, 1)
        if use_cache is None:
            raise GenerationError("cache_refresh needs use_cache ('prefix' or 'dual')")
    if use_cache is not None and generation_logits_hook_func is not None:
        raise GenerationError("generation_logits_hook_func needs the full canvas's logits, but use_cache computes "
                              "only the current block's: pass use_cache=None to use a logits hook")
    if stop_token_ids is None:
        ids = [kwargs.get("eos_token_id", cfg.eos_token_id), kwargs.get("pad_token_id", cfg.pad_token_id)]
        stop_ids = sorted({int(i) for i in ids if i is not None})
    else:
        stop_ids = sorted({int(i) for i in stop_token_ids})
    if stop_token_penalty and not stop_ids:
        raise GenerationError("stop_token_penalty needs stop_token_ids (the config has no eos/pad id)")
    if early_stop and not stop_ids:
        raise GenerationError("early_stop needs stop_token_ids (the config has no eos/pad id)")
    fill_id = cfg.pad_token_id if cfg.pad_token_id is not None else (stop_ids[0] if stop_ids else mask_id)
    if threshold is None and steps // n_blocks > block_len:
        warnings.warn(f"steps per block ({steps // n_blocks}) exceed the tokens per block ({block_len}): "
                      f"the extra steps reveal nothing but still cost a forward pass each", stacklevel=2)
    device = model.device
    if isinstance(generator, (list, tuple)):
        gens = _per_row("generator", list(generator), B_in, B, lambda g: g)
    else:
        gens = [generator] * B
    for g in gens:
        if g is not None and not isinstance(g, torch.Generator):
            raise GenerationError(f"generator must be a torch.Generator (or one per row), got {type(g).__name__}")
        if g is not None and g.device.type != device.type:
            raise GenerationError(f"generator is on {g.device} but the model on {device}: create it with "
                                  f"torch.Generator(device=...) on the model's device")
    if step_callback is not None and not callable(step_callback):
        raise GenerationError("step_callback must be callable")
    groups = _groups(temps, top_ps, top_ks, gens)
    tokens_hook = generation_tokens_hook_func or (lambda step, x, logits: x)
    logits_hook = generation_logits_hook_func

    # -- canvas ----------------------------------------------------------------------------------------------
    x = inputs.to(device=device, dtype=torch.long)
    if attention_mask is not None:
        attention_mask = attention_mask.to(device)
    if num_return_sequences > 1:
        x = x.repeat_interleave(num_return_sequences, dim=0)
        if attention_mask is not None:
            attention_mask = attention_mask.repeat_interleave(num_return_sequences, dim=0)
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
    hooks_read_logits = logits_hook is not None or generation_tokens_hook_func is not None
    forward = _StepForward(model, attn, use_cache, bool(cfg.shift_logits),
                           full_logits=use_cache is None and hooks_read_logits)

    def completion_state(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(settled (B,), finished (B,)) of the completion part of the canvas."""
        comp = x[:, P:]  # (B, N)
        unmasked = comp != mask_id
        settled = unmasked.long().cumprod(1).sum(1)  # leading revealed tokens
        if stop_t is None:
            return settled, torch.zeros(B, dtype=torch.bool, device=device)
        is_stop = torch.isin(comp, stop_t) & unmasked
        first = torch.where(is_stop.any(1), is_stop.long().argmax(1), torch.full_like(settled, N))
        return settled, is_stop.any(1) & (settled >= first)

    x = tokens_hook(None, x, None)
    steps_per_block = steps // n_blocks
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=None if threshold is not None else steps_per_block * n_blocks, desc="diffusion",
                   unit="step", leave=False)
    global_step = 0
    row_done = torch.zeros(B, dtype=torch.bool, device=device)  # finished (early stop) or stopped rows
    rows: torch.Tensor | None = None  # rows the forward computes (None: all)
    stopped = False
    aborted = False
    early_stopped_at: int | None = None
    for b in range(n_blocks):
        block_start = P + b * block_len
        block_end = min(P + (b + 1) * block_len, L)
        timesteps = torch.linspace(1, eps, steps_per_block + 1, device=device)
        i = 0
        max_iters = L + 1  # threshold mode reveals >= 1 per row and step
        refresh = True  # every block starts from a fresh cache
        while True:
            candidate = (x == mask_id) & (col < block_end) & (col >= block_start)  # (B, L)
            if threshold is None:
                if i >= steps_per_block:
                    break
            elif not bool(candidate.any()):
                break
            elif i >= max_iters:  # only a hook that keeps re-masking gets here
                warnings.warn(f"threshold decoding stopped after {i} steps with masks left", stacklevel=2)
                break
            if cache_refresh is not None and i % cache_refresh == 0:
                refresh = True
            if bool(row_done.any()) and not forward.full_logits and (refresh or use_cache is None):
                # leave finished rows out of the forward (with a cache only where it is refilled anyway)
                live = (~row_done).nonzero().squeeze(1)
                rows = None if live.numel() == B else live
            candidate &= ~row_done[:, None]
            flat_logits, logits = forward(x, candidate, block_start, block_end, refresh, rows)
            refresh = False
            if logits_hook is not None:
                logits = logits_hook(global_step, x, logits)
                flat_logits = logits[candidate]
            flat_logits = limit_vocab(flat_logits, vocab_limit)  # (N_c, V), row-major over (b, j)
            flat_rows = candidate.nonzero()[:, 0]  # (N_c,)
            n_masked = candidate.sum(1)  # (B,)
            new_x = torch.full_like(x, mask_id)
            selected = torch.zeros_like(candidate)
            full_conf = torch.full((B, L), float("-inf"), dtype=flat_logits.dtype, device=device)
            raw_conf = full_conf  # the policy's confidence (full_conf also carries the stop-token penalty)
            draw_rank: torch.Tensor | None = None

            if alg == "origin":
                t, s = timesteps[i], timesteps[i + 1]
                p_transfer = 1 - s / t if i < steps_per_block - 1 else 1
                transfer = torch.zeros(flat_logits.shape[0], dtype=torch.bool, device=device)
                for g in groups:
                    sel = _flat_subset(g, flat_rows)
                    n = flat_logits.shape[0] if sel is None else int(sel.sum())
                    draw = torch.rand(n, device=device, generator=g.generator) < p_transfer
                    if sel is None:
                        transfer = draw
                    else:
                        transfer[sel] = draw
                if global_step == 0 and flat_logits.shape[0]:
                    # arg-max probability of the processed distribution; no random draw, so the RNG stream
                    # stays the reference's
                    probe = torch.zeros(flat_logits.shape[0], device=device)
                    for g in groups:
                        sel = _flat_subset(g, flat_rows)
                        part = flat_logits if sel is None else flat_logits[sel]
                        p_max = torch.softmax(process_logits(part, g.temperature, g.top_p, g.top_k), -1).max(-1)
                        if sel is None:
                            probe = p_max.values.float()
                        else:
                            probe[sel] = p_max.values.float()
                    first_conf[candidate] = probe
                if bool(transfer.any()):
                    choice = _sample_groups(flat_logits[transfer], flat_rows[transfer], groups, "origin", forbidden,
                                            reference_draws)
                    idx = candidate.nonzero()[transfer]  # (n, 2)
                    selected[idx[:, 0], idx[:, 1]] = True
                    new_x[idx[:, 0], idx[:, 1]] = choice.tokens
                    full_conf[idx[:, 0], idx[:, 1]] = choice.confidence
            elif flat_logits.shape[0]:
                choice = _sample_groups(flat_logits, flat_rows, groups, alg, forbidden, reference_draws)
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
                    else:
                        draw_rank = _draw_positions(full_conf, k, alg_temp, groups)
                    selected = candidate & (draw_rank >= 0)

            x = torch.where(selected, new_x, x)
            ranks = draw_rank if draw_rank is not None else _ranks_of(full_conf, selected)
            reveal_step[selected] = global_step
            reveal_rank[selected] = ranks[selected]
            reveal_conf[selected] = raw_conf[selected].float()
            reveal_tok[selected] = new_x[selected]
            per_step.append(selected.sum(1))

            if generation_tokens_hook_func is not None:
                x_hooked = tokens_hook(global_step, x, logits)
                if use_cache is not None:
                    a, w_end = forward.window(block_start, block_end, L)
                    changed = (x_hooked != x)
                    changed[:, a:w_end] = False
                    refresh = refresh or bool(changed.any())  # never decode against stale keys
                x = x_hooked
            if histories is not None:
                histories.append(x.clone())
            i += 1
            global_step += 1
            if bar is not None:
                bar.update(1)
            settled = finished = None
            if early_stop or step_callback is not None:
                settled, finished = completion_state(x)
            newly_done = finished & ~row_done if early_stop else torch.zeros_like(row_done)
            if step_callback is not None:
                answer = step_callback(DecodeStep(step=global_step - 1, block=b, x=x, prompt_length=P,
                                                  settled=settled, finished=finished, forward_passes=forward.passes))
                if isinstance(answer, torch.Tensor) and answer.dim() == 1:
                    if answer.shape[0] != B:
                        raise GenerationError(f"step_callback returned {answer.shape[0]} row flags for {B} rows")
                    newly_done |= answer.to(device=device, dtype=torch.bool) & ~row_done
                elif answer:
                    aborted = stopped = True
                    break
            if bool(newly_done.any()):
                # a finished (or stopped) row's text is final: its remaining masks become pad and it stops
                # being computed
                row_done |= newly_done
                x = torch.where(row_done[:, None] & (x == mask_id), torch.full_like(x, fill_id), x)
            if bool(row_done.all()):  # every row finished or stopped: nothing is left to decode
                early_stopped_at = global_step
                stopped = True
                break
        if stopped:
            break
    if bar is not None:
        bar.close()

    if not return_dict_in_generate:
        return x
    trace = DecodeTrace(
        prompt_length=P, reveal_step=reveal_step, reveal_rank=reveal_rank, reveal_confidence=reveal_conf,
        reveal_token=reveal_tok, first_step_confidence=first_conf,
        revealed_per_step=torch.stack(per_step) if per_step else torch.zeros(0, B, dtype=torch.long),
        alg=alg, num_forward_passes=forward.passes, block_length=block_length,
        extra={"steps": steps, "eps": eps, "temperature": temps[0] if len(set(temps)) == 1 else temps,
               "top_p": top_ps[0] if len(set(top_ps)) == 1 else top_ps,
               "top_k": top_ks[0] if len(set(top_ks)) == 1 else top_ks, "alg_temp": alg_temp,
               "threshold": threshold, "use_cache": use_cache, "cache_refresh": cache_refresh,
               "full_forward_passes": forward.full_passes, "positions_computed": forward.positions,
               "early_stopped_at_step": early_stopped_at, "aborted": aborted},
    )
    return GenerationOutput(sequences=x, history=histories, trace=trace)


def _draw_positions(full_conf: torch.Tensor, k: torch.Tensor, alg_temp: float, groups: list[_Group]) -> torch.Tensor:
    """``alg_temp > 0``: ``k[b]`` positions per row drawn without replacement from softmax(conf / alg_temp).

    One batched ``torch.multinomial`` when every row takes the same number and one generator serves all rows (the
    reference's draw); otherwise row by row, each row from its group's generator. Returns draw ranks (B, L)."""
    B, L = full_conf.shape
    device = full_conf.device
    weights = torch.softmax(full_conf / alg_temp, dim=-1)  # (B, L)
    draw_rank = torch.full((B, L), -1, dtype=torch.long, device=device)
    if len(groups) == 1 and bool((k == k[0]).all()):
        if int(k[0]) > 0:
            pick = torch.multinomial(weights, int(k[0]), generator=groups[0].generator)  # (B, k)
            draw_rank.scatter_(1, pick, torch.arange(int(k[0]), device=device).expand_as(pick))
        return draw_rank
    gen_of = [groups[0].generator] * B
    if len(groups) > 1:
        for g in groups:
            for r in g.rows.tolist():
                gen_of[r] = g.generator
    for r in range(B):
        if int(k[r]) > 0:
            pick = torch.multinomial(weights[r], int(k[r]), generator=gen_of[r])
            draw_rank[r, pick] = torch.arange(int(k[r]), device=device)
    return draw_rank
