"""Per-token log-likelihood estimators of a masked diffusion LM, chosen by name.

A diffusion LM has no exact per-token log-probability of a completion: it is estimated from forward passes in
which some completion tokens are replaced by [MASK] and the model's prediction at each masked position is read
off. GRPO needs such per-token log-probabilities for the policy ratio and the KL term. Four estimators from
DiffuCoder (arXiv 2506.20639 section 5 and its ablations; reference.md section 5) and one of ours:

- ``coupled`` (DiffuCoder's Coupled-GRPO): per pair, ``t ~ U(t_min, t_max)``; a mask M over the completion with
  ratio t and its exact complement, so every completion token is masked exactly once across the pair. A token
  masked in the first pass contributes ``logp_t / t``, otherwise ``logp_{1-t} / (1 - t)`` (the ELBO weights).
  With ``full_mask_pass`` a pass with the whole completion masked (weight 1) is added, and the sum is divided by
  ``num_pairs + 1`` (paper: lambda pairs plus the full pass, divided by lambda + 1; for one pair this is the
  released code's ``(logp_full + where(M, logp_t / t, logp_{1-t} / (1 - t))) / 2``). Without it the sum is
  divided by ``num_pairs``. The pair is an antithetic draw: its two halves are negatively correlated.
- ``decoupled``: the same passes and weights, but the second mask of each pair is drawn independently (its own
  ``t' ~ U(t_min, t_max)``, weight ``1 / t'``) instead of being the complement. Same expectation as ``coupled``
  (U(t_min, t_max) symmetric about 1/2 gives 1 - t the same law as t), so it isolates the effect of coupling.
- ``full_mask``: one pass with the whole completion masked (deterministic, biased: early tokens see nothing).
- ``d1``: the whole completion masked and each real prompt token masked independently with probability
  ``prompt_mask_prob`` (d1's one-step estimator); ``num_passes`` independent draws are averaged.
- ``coupled_normalized`` (ours, not in the paper): ``coupled``'s masks (a pair M, M^c per ``t``, the prompt
  clean, the optional full-mask pass) with weight 1 instead of ``1/t`` / ``1/(1-t)``: every completion token is
  scored by exactly one pass of each pair, and its weights over all passes sum to 1 in *every* draw, so the
  estimate is a convex combination of real conditional log-probabilities (never below the worst of them, never
  inflated). Its expectation is derived in :func:`draw_mask_plan`'s "Expectations" section.

Scale (derived in :func:`draw_mask_plan`, measured by ``benchmarks/estimator_variance.py``): a token's pair term
under ``coupled`` / ``decoupled`` has expectation ``c_j(t) + c_j(1 - t)`` (``c_j`` below), the *sum* of two
conditional log-likelihoods, about twice a log-probability, and a single draw can reach ``1/t`` = 5 times one
(t = 0.2). Log-ratios between two models evaluated under the same masks, hence GRPO's clip band and its k3 KL,
inherit that scale; ``full_mask`` / ``d1`` / ``coupled_normalized`` are on the scale of one log-probability. We
keep the released weighting for ``coupled`` (the default) and offer ``coupled_normalized`` beside it.

The prompt is never masked except by ``d1``. Masks come from an explicit ``torch.Generator``; plans
(:class:`MaskPlan`) are drawn once and can be re-used (GRPO's mu inner iterations evaluate the same masks with
the current, old and reference models). Padding follows the rollout: prompts are left-padded and described by a
2-D attention mask (1 = token) that the model turns into hidden pad keys and positions ``cumsum(mask) - 1``; the
completion canvas (``max_completion_length`` positions, possibly holding EOS / pad tokens after the end of the
answer) is all real tokens, exactly as it was when it was decoded.

Scoring a pass (:func:`completion_token_logp`) runs the backbone, then the LM head only on the Lc hidden states
that predict completion tokens, with a chunked log-softmax whose logits are recomputed in backward: a pass never
holds (N, L, V) logits or their fp32 log-softmax, which at a 152k vocabulary would dwarf the activations.

Deviation from the released trainer (reference.md "defects"): it reset the global RNG in every pass and ignored
the padding mask; we use an explicit generator and the rollout's attention mask, and draw ``t`` per sequence
(the released code drew one t per batch).

Usage::

    cfg = EstimatorConfig("coupled", num_pairs=1, full_mask_pass=True)
    plan = draw_mask_plan(cfg, prompt_attention_mask, completion_len, generator=g)   # (P, B, L) masks
    est = estimate_logp(model, input_ids, attention_mask, plan, mask_token_id)       # est.logp: (B, Lc)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:  # pragma: no cover
    from diffucoder.model import DreamModel

ESTIMATORS: tuple[str, ...] = ("coupled", "decoupled", "full_mask", "d1", "coupled_normalized")
PAIRED: tuple[str, ...] = ("coupled", "decoupled", "coupled_normalized")
"""Estimators built from mask pairs (``num_pairs``, ``full_mask_pass``, ``t_min`` / ``t_max`` apply)."""


@dataclass(frozen=True)
class EstimatorConfig:
    """Which estimator, and its knobs."""

    name: str = "coupled"
    """One of ``coupled``, ``decoupled``, ``full_mask``, ``d1``, ``coupled_normalized``."""
    num_pairs: int = 1
    """lambda: complementary mask pairs per estimate (``coupled`` / ``coupled_normalized``; ``decoupled`` uses
    2*lambda random passes)."""
    full_mask_pass: bool = True
    """Add the pass with the whole completion masked (paired estimators; the released code does)."""
    t_min: float = 0.2
    """Lower end of the mask ratio t ~ U(t_min, t_max); keeps the 1/t weight bounded."""
    t_max: float = 0.8
    """Upper end of the mask ratio range (1/(1-t) bounded too)."""
    prompt_mask_prob: float = 0.15
    """``d1``: probability of masking each real prompt token."""
    num_passes: int | None = None
    """``d1``: independent draws averaged (default 1). ``decoupled``: must equal the coupled pass count if set.
    ``full_mask`` is deterministic and always uses one pass."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if self.name not in ESTIMATORS:
            raise ValueError(f"unknown estimator {self.name!r}; choose one of {list(ESTIMATORS)}")
        if not isinstance(self.num_pairs, int) or self.num_pairs < 1:
            raise ValueError(f"num_pairs must be a positive integer, got {self.num_pairs!r}")
        if not (0.0 < self.t_min <= self.t_max < 1.0):
            raise ValueError(f"need 0 < t_min <= t_max < 1 (1/t and 1/(1-t) weights), got "
                             f"t_min={self.t_min}, t_max={self.t_max}")
        if not (0.0 <= self.prompt_mask_prob < 1.0):
            raise ValueError(f"prompt_mask_prob must be in [0, 1), got {self.prompt_mask_prob}")
        if self.num_passes is not None and (not isinstance(self.num_passes, int) or self.num_passes < 1):
            raise ValueError(f"num_passes must be a positive integer or None, got {self.num_passes!r}")
        if self.name == "decoupled" and self.num_passes is not None and self.num_passes != self._paired_passes():
            raise ValueError(f"decoupled uses the coupled pass count ({self._paired_passes()} for num_pairs="
                             f"{self.num_pairs}, full_mask_pass={self.full_mask_pass}); got num_passes="
                             f"{self.num_passes}. Change num_pairs / full_mask_pass instead.")

    def _paired_passes(self) -> int:
        return 2 * self.num_pairs + int(self.full_mask_pass)

    @property
    def passes(self) -> int:
        """Forward passes per estimate (per sequence)."""
        if self.name in PAIRED:
            return self._paired_passes()
        if self.name == "full_mask":
            return 1
        return self.num_passes or 1


@dataclass
class MaskPlan:
    """The masks of one estimate, drawn once and re-usable across models / iterations.

    ``P`` passes over a batch of ``B`` sequences of length ``L = prompt_len + Lc``.
    """

    is_masked: torch.Tensor
    """(P, B, L) bool: positions replaced by [MASK] in pass p (prompt only for ``d1``)."""
    weights: torch.Tensor
    """(P, B, Lc) float: weight of pass p's log-prob of completion token j (0 where not masked)."""
    t: torch.Tensor
    """(P, B) float: mask ratio of each pass over the completion (1.0 for the full-mask pass)."""
    prompt_len: int
    """Lp: the completion occupies positions ``[Lp, L)``."""
    estimator: str

    @property
    def num_passes(self) -> int:
        return self.is_masked.shape[0]

    def to(self, device: torch.device | str) -> "MaskPlan":
        return MaskPlan(self.is_masked.to(device), self.weights.to(device), self.t.to(device), self.prompt_len,
                        self.estimator)

    def select(self, rows: torch.Tensor | slice) -> "MaskPlan":
        """The plan restricted to some batch rows (for micro-batching)."""
        return MaskPlan(self.is_masked[:, rows], self.weights[:, rows], self.t[:, rows], self.prompt_len,
                        self.estimator)


@dataclass
class LogpEstimate:
    """What :func:`estimate_logp` returns."""

    logp: torch.Tensor
    """(B, Lc) estimated per-token log-likelihood of the completion tokens (differentiable)."""
    pass_logp: torch.Tensor
    """(P, B, Lc) raw log-prob of the target token in each pass (all positions, masked or not)."""
    forward_rows: int
    """Sequences pushed through the model (P * B)."""


def _uniform(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    gen_device = generator.device if generator is not None else torch.device("cpu")
    return torch.rand(shape, generator=generator, device=gen_device).to(device)


def draw_mask_plan(cfg: EstimatorConfig, prompt_attention_mask: torch.Tensor, completion_len: int,
                   generator: torch.Generator | None = None,
                   completion_maskable: torch.Tensor | None = None) -> MaskPlan:
    """Draw the masks of one estimate for a batch.

    Expectations (what each estimator is unbiased for). Fix the model, a prompt and a completion x of length
    Lc. For a completion position j and a ratio tau in (0, 1], let

        c_j(tau) = E_M[ log p(x_j | x with M masked) | j in M ],

    M masking each (maskable) completion position independently with probability tau, the prompt clean;
    ``c_j(1)`` is the deterministic full-mask log-probability. Draw ``t ~ U(a, b)`` (``a, b = t_min, t_max``)
    per pair and sequence, M ~ Bernoulli(t) and its complement M^c (a Bernoulli(1 - t) mask); j lies in M with
    probability t and in M^c otherwise. Per pair and token:

    - ``coupled``: ``1{j in M} logp_M / t + 1{j in M^c} logp_Mc / (1 - t)``, expectation given t
      ``c_j(t) + c_j(1 - t)``; over t (symmetric range, a + b = 1): ``2 m_j`` with
      ``m_j = E_{t ~ U(a, b)} c_j(t)``. With the full-mask pass the estimate is
      ``(c_j(1) + 2 lambda m_j) / (lambda + 1)`` in expectation: twice a log-probability in the pair part.
    - ``decoupled``: the same expectation (its second ratio t' has the law of 1 - t when a + b = 1).
    - ``coupled_normalized``: ``1{j in M} logp_M + 1{j in M^c} logp_Mc`` (weight 1), expectation given t
      ``t c_j(t) + (1 - t) c_j(1 - t)``, and over t

          Q_j = E_{tau ~ q} c_j(tau),   q(tau) = tau * (1[a <= tau <= b] + 1[1 - b <= tau <= 1 - a]) / (b - a),

      a probability density (it integrates to (a + b)/2 + (2 - a - b)/2 = 1); for a + b = 1 (the default 0.2,
      0.8) it is ``q(tau) = 2 tau / (b - a)`` on [a, b]. So the estimator is *exactly unbiased* for the
      conditional log-likelihood of x_j at a masking level tau drawn from q: the ratio of the half of the pair
      that holds j, size-biased because a larger half is more likely to hold it. With the full-mask pass:
      ``(c_j(1) + lambda Q_j) / (lambda + 1)``. Its weights over all passes sum to 1 per token in every draw.
      It is *not* unbiased for (i) ``m_j``, the uniform-t average that DiffuCoder's weights double:
      ``Q_j - m_j = 2 Cov_{t ~ U(a, b)}(t, c_j(t))`` (a + b = 1), negative when more masking makes a token
      harder to predict, the usual case; (ii) the per-token ELBO term ``int_0^1 c_j(t) dt`` (the range is cut
      to [a, b] and reweighted); (iii) any exact ``log p(x_j | prompt)``, which a masked diffusion LM does not
      define. (``coupled`` halved would target ``m_j`` but keeps per-draw weights ``1 / (2t)``, up to 2.5 at
      t = 0.2, so single tokens stay inflated.)
    - ``full_mask``: exactly ``c_j(1)`` (no randomness). ``d1``: ``E[log p(x_j | prompt with random masks,
      completion masked)]``, a t = 1 quantity with a noised prompt.

    Args:
        cfg: the estimator.
        prompt_attention_mask: (B, Lp) 1 for real prompt tokens, 0 for (left) padding.
        completion_len: Lc, the canvas length.
        generator: source of randomness (the only one used).
        completion_maskable: (B, Lc) bool, completion positions that may be masked (default all of the canvas,
            as during rollout). Positions not maskable get weight 0 (their log-prob is not estimated).
    """
    if prompt_attention_mask.dim() != 2:
        raise ValueError(f"prompt_attention_mask must be (B, Lp), got shape {tuple(prompt_attention_mask.shape)}")
    B, Lp = prompt_attention_mask.shape
    Lc = int(completion_len)
    if Lc < 1:
        raise ValueError(f"completion_len must be >= 1, got {completion_len}")
    device = prompt_attention_mask.device
    if completion_maskable is None:
        comp = torch.ones(B, Lc, dtype=torch.bool, device=device)
    else:
        if completion_maskable.shape != (B, Lc):
            raise ValueError(f"completion_maskable must be {(B, Lc)}, got {tuple(completion_maskable.shape)}")
        comp = completion_maskable.bool().to(device)
    compf = comp.float()
    no_prompt = torch.zeros(B, Lp, dtype=torch.bool, device=device)

    def full(prompt_mask: torch.Tensor = no_prompt) -> torch.Tensor:
        return torch.cat([prompt_mask, comp], dim=1)  # (B, L)

    def ratio() -> torch.Tensor:
        return cfg.t_min + (cfg.t_max - cfg.t_min) * _uniform((B,), generator, device)  # (B,)

    masks: list[torch.Tensor] = []
    weights: list[torch.Tensor] = []
    ts: list[torch.Tensor] = []
    ones_b = torch.ones(B, device=device)
    if cfg.name in PAIRED:
        norm = float(cfg.num_pairs + int(cfg.full_mask_pass))
        elbo_weighted = cfg.name != "coupled_normalized"  # 1/t weights (DiffuCoder) or weight 1
        if cfg.full_mask_pass:
            masks.append(full())
            weights.append(compf / norm)
            ts.append(ones_b)
        for _ in range(cfg.num_pairs):
            t = ratio()  # (B,)
            m = (_uniform((B, Lc), generator, device) < t[:, None]) & comp  # (B, Lc)
            if cfg.name == "decoupled":
                tc = ratio()
                mc = (_uniform((B, Lc), generator, device) < tc[:, None]) & comp
            else:
                mc = comp & ~m  # the exact complement within the canvas: ratio 1 - t
                tc = 1.0 - t
            for mask, ratio_p in ((m, t), (mc, tc)):
                masks.append(torch.cat([no_prompt, mask], dim=1))
                scale = ratio_p[:, None] * norm if elbo_weighted else torch.full_like(ratio_p[:, None], norm)
                weights.append(mask.float() / scale)  # (B, Lc)
                ts.append(ratio_p)
    elif cfg.name == "full_mask":
        masks.append(full())
        weights.append(compf)
        ts.append(ones_b)
    else:  # d1
        P = cfg.passes
        real = prompt_attention_mask.bool().to(device)
        for _ in range(P):
            pm = (_uniform((B, Lp), generator, device) < cfg.prompt_mask_prob) & real
            masks.append(full(pm))
            weights.append(compf / P)
            ts.append(ones_b)
    return MaskPlan(is_masked=torch.stack(masks), weights=torch.stack(weights), t=torch.stack(ts),
                    prompt_len=Lp, estimator=cfg.name)


LOGITS_CHUNK_TOKENS = 1024
"""Completion tokens whose (V,) logits exist at once in :func:`chunked_target_logp` (fp32: 4 * V bytes each)."""


class _TargetLogp(torch.autograd.Function):
    """``log_softmax(h @ W.T)[target]`` per row, chunked over rows, logits recomputed in backward.

    Forward keeps only ``logsumexp`` per row (T floats); the (chunk, V) logits exist one chunk at a time. Backward
    recomputes them and writes ``dlogits = g * (onehot(target) - softmax)`` chunk by chunk, so neither pass holds
    (T, V) tensors. The matmuls run in ``compute_dtype`` (the autocast dtype at forward time, else the weight's),
    the softmax statistics in fp32; ``dW`` accumulates in fp32 over chunks and is returned in the weight's dtype.
    """

    @staticmethod
    def forward(ctx, h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,  # type: ignore[override]
                chunk: int, compute_dtype: torch.dtype) -> torch.Tensor:
        T = h.shape[0]
        out = torch.empty(T, dtype=torch.float32, device=h.device)  # (T,)
        lse = torch.empty(T, dtype=torch.float32, device=h.device)  # (T,)
        with torch.autocast(h.device.type, enabled=False):
            w = weight.to(compute_dtype)  # (V, H)
            for s in range(0, T, chunk):
                logits = h[s:s + chunk].to(compute_dtype) @ w.t()  # (c, V)
                lse[s:s + chunk] = torch.logsumexp(logits.float(), dim=-1)
                out[s:s + chunk] = logits.gather(-1, targets[s:s + chunk, None])[:, 0].float() - lse[s:s + chunk]
        ctx.save_for_backward(h, weight, targets, lse)
        ctx.chunk, ctx.compute_dtype = chunk, compute_dtype
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):  # type: ignore[override]
        h, weight, targets, lse = ctx.saved_tensors
        chunk, dt = ctx.chunk, ctx.compute_dtype
        T = h.shape[0]
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_h = torch.empty_like(h) if need_h else None  # (T, H)
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None  # (V, H)
        w = weight.to(dt)  # (V, H)
        g = grad_out.float()  # (T,)
        for s in range(0, T, chunk):
            hc = h[s:s + chunk].to(dt)  # (c, H)
            gc = g[s:s + chunk]  # (c,)
            probs = (hc @ w.t()).float().sub_(lse[s:s + chunk, None]).exp_()  # (c, V) softmax
            dlogits = probs.mul_(-gc[:, None])  # (c, V): -g * softmax ...
            dlogits.scatter_add_(1, targets[s:s + chunk, None], gc[:, None])  # ... + g * onehot(target)
            dlogits = dlogits.to(dt)
            if need_h:
                grad_h[s:s + chunk] = (dlogits @ w).to(h.dtype)  # (c, H)
            if need_w:
                grad_w.add_((dlogits.t() @ hc).float())  # (V, H)
        return grad_h, (grad_w.to(weight.dtype) if need_w else None), None, None, None


def chunked_target_logp(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                        chunk_tokens: int = LOGITS_CHUNK_TOKENS) -> torch.Tensor:
    """``log_softmax(hidden @ weight.T)[..., targets]`` (fp32) without materialising all the logits.

    hidden: (..., H) final hidden states; weight: (V, H) the LM head; targets: (...) ids. Returns (...) fp32.
    Equal (to rounding) to ``F.log_softmax((hidden @ weight.T).float(), -1).gather(-1, targets[..., None])``, with
    gradients for ``hidden`` and ``weight``, at a memory cost of ``chunk_tokens`` rows of logits instead of all;
    the price is one more (chunk, H) x (H, V) matmul per chunk in backward (the logits are recomputed).
    Under autocast the matmuls run in the autocast dtype, as ``nn.Linear`` would.
    """
    if hidden.shape[:-1] != targets.shape:
        raise ValueError(f"hidden {tuple(hidden.shape)} and targets {tuple(targets.shape)} disagree")
    if chunk_tokens < 1:
        raise ValueError(f"chunk_tokens must be >= 1, got {chunk_tokens}")
    dev = hidden.device.type
    compute_dtype = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else weight.dtype
    flat = hidden.reshape(-1, hidden.shape[-1])  # (T, H)
    out = _TargetLogp.apply(flat, weight, targets.reshape(-1), int(chunk_tokens), compute_dtype)  # (T,)
    return out.view(targets.shape)


def completion_hidden_states(model: "DreamModel", xt: torch.Tensor, prompt_len: int,
                             attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """The final-normed hidden states whose LM-head outputs predict the completion ``xt[:, prompt_len:]``.

    (N, Lc, H). With ``config.shift_logits`` (the AR convention, reference.md section 1) token j is predicted by
    output j - 1, so the slice is ``[prompt_len - 1, L - 1)`` (the prompt must hold a position); else
    ``[prompt_len, L)``. Uses the backbone ``model.model`` directly, so no logits are computed anywhere.
    """
    L = xt.shape[1]
    shift = bool(getattr(model.config, "shift_logits", False))
    if shift and prompt_len < 1:
        raise ValueError("with shift_logits the sequence must start with at least one prompt position "
                         "(position 0 carries no prediction)")
    h = model.model(xt, attention_mask)  # (N, L, H)
    start = prompt_len - 1 if shift else prompt_len
    return h[:, start:start + (L - prompt_len)]  # (N, Lc, H)


def completion_token_logp(model: "DreamModel", xt: torch.Tensor, targets: torch.Tensor, prompt_len: int,
                          attention_mask: torch.Tensor | None = None,
                          chunk_tokens: int = LOGITS_CHUNK_TOKENS) -> torch.Tensor:
    """log p(targets[:, j] | xt) at the completion positions ``[prompt_len, L)``, fp32, (N, Lc).

    xt: (N, L) noised ids; targets: (N, Lc) clean completion ids. The LM head runs only on the Lc positions that
    predict completion tokens (:func:`completion_hidden_states`), and the log-softmax is chunked with
    recomputation (:func:`chunked_target_logp`): no (N, L, V) logits and no fp32 log-softmax of them. Same
    value and gradients as :func:`full_logits_token_logp` (tested).
    """
    if getattr(model.lm_head, "bias", None) is not None:
        raise ValueError("the LM head has a bias; completion_token_logp assumes none (Dream's has none)")
    h = completion_hidden_states(model, xt, prompt_len, attention_mask)  # (N, Lc, H)
    return chunked_target_logp(h, model.lm_head.weight, targets, chunk_tokens)  # (N, Lc)


def full_logits_token_logp(model: "DreamModel", xt: torch.Tensor, targets: torch.Tensor, prompt_len: int,
                           attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """The plain computation :func:`completion_token_logp` replaces (tests and benchmarks compare against it).

    Full aligned logits ``model.token_logits`` (N, L, V), sliced to the completion, fp32 log-softmax, gather.
    """
    if prompt_len < 1 and getattr(model.config, "shift_logits", False):
        raise ValueError("with shift_logits the sequence must start with at least one prompt position "
                         "(position 0 carries no prediction)")
    logits = model.token_logits(xt, attention_mask)[:, prompt_len:]  # (N, Lc, V)
    logp = F.log_softmax(logits.float(), dim=-1)  # (N, Lc, V)
    return logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # (N, Lc)


LogpFn = Callable[[torch.Tensor, torch.Tensor, int, "torch.Tensor | None"], torch.Tensor]
"""``fn(xt (N, L), targets (N, Lc), prompt_len, attention_mask) -> (N, Lc)`` per-token log-probs of one pass."""


def estimate_logp(model: "DreamModel", input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                  plan: MaskPlan, mask_token_id: int, micro_batch_size: int | None = None,
                  logp_fn: LogpFn | None = None) -> LogpEstimate:
    """Estimate per-token log-likelihoods of the completion ``input_ids[:, plan.prompt_len:]``.

    Args:
        model: a Dream model (scored by :func:`completion_token_logp`; gradients flow unless under ``no_grad``).
        input_ids: (B, L) left-padded prompt followed by the completion canvas.
        attention_mask: (B, L) 2-D padding mask as used at rollout (1 = token), or None (no padding).
        plan: masks and weights from :func:`draw_mask_plan` for this batch.
        mask_token_id: the [MASK] id (from the tokenizer / model config, never a literal).
        micro_batch_size: rows (pass x sequence) per forward call; None = all P * B at once.
        logp_fn: how one pass is scored (default ``completion_token_logp`` on ``model``); the GRPO trainer passes
            the FSDP-registered form of it, so that a sharded model gathers its parameters around the call.
    """
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be (B, L), got shape {tuple(input_ids.shape)}")
    P, B, L = plan.is_masked.shape
    if input_ids.shape != (B, L):
        raise ValueError(f"input_ids shape {tuple(input_ids.shape)} does not match the mask plan {(B, L)}")
    if attention_mask is not None and attention_mask.shape != (B, L):
        raise ValueError(f"attention_mask shape {tuple(attention_mask.shape)} does not match input_ids {(B, L)}")
    Lp = plan.prompt_len
    Lc = L - Lp
    device = input_ids.device
    is_masked = plan.is_masked.to(device)
    x0 = input_ids.unsqueeze(0).expand(P, B, L)
    xt = torch.where(is_masked, torch.full_like(x0, mask_token_id), x0).reshape(P * B, L)  # (P*B, L)
    targets = input_ids[:, Lp:].unsqueeze(0).expand(P, B, Lc).reshape(P * B, Lc)  # (P*B, Lc)
    attn = None if attention_mask is None else attention_mask.unsqueeze(0).expand(P, B, L).reshape(P * B, L)
    mb = micro_batch_size or P * B
    if logp_fn is None:
        def logp_fn(x: torch.Tensor, y: torch.Tensor, lp: int, a: torch.Tensor | None) -> torch.Tensor:
            return completion_token_logp(model, x, y, lp, a)
    chunks = []
    for s in range(0, P * B, mb):
        chunks.append(logp_fn(xt[s:s + mb], targets[s:s + mb], Lp, None if attn is None else attn[s:s + mb]))
    pass_logp = torch.cat(chunks, dim=0).view(P, B, Lc)  # (P, B, Lc)
    w = plan.weights.to(device=device, dtype=pass_logp.dtype)
    logp = (pass_logp * w).sum(0)  # (B, Lc)
    return LogpEstimate(logp=logp, pass_logp=pass_logp, forward_rows=P * B)


def combine_pass_logp(pass_logp: torch.Tensor, plan: MaskPlan) -> torch.Tensor:
    """Re-weight already computed per-pass log-probs (P, B, Lc) with a plan's weights -> (B, Lc)."""
    return (pass_logp * plan.weights.to(pass_logp.device, pass_logp.dtype)).sum(0)
