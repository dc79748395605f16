"""Per-token log-likelihood estimators of a masked diffusion LM, chosen by name.

A diffusion LM has no exact per-token log-probability of a completion: it is estimated from forward passes in
which some completion tokens are replaced by [MASK] and the model's prediction at each masked position is read
off. GRPO needs such per-token log-probabilities for the policy ratio and the KL term. Four estimators
(DiffuCoder arXiv 2506.20639 section 5 and its ablations; reference.md section 5):

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

Scale (measured by ``benchmarks/estimator_variance.py``): a token's pair term ``1{j in M} logp_t / t`` has
expectation ``E[logp | j masked at t]``, and the complement's term likewise at ``1 - t``, so one pair's
per-token expectation is the *sum* of two conditional log-likelihoods, about twice a log-probability;
``coupled`` / ``decoupled`` estimates are therefore on a larger scale than ``full_mask`` / ``d1`` ones (with the
full pass, ``(logp_full + 2 m) / 2``). GRPO only uses differences of the same estimator (ratio, k3 KL), and we
keep the released weighting.

The prompt is never masked except by ``d1``. Masks come from an explicit ``torch.Generator``; plans
(:class:`MaskPlan`) are drawn once and can be re-used (GRPO's mu inner iterations evaluate the same masks with
the current, old and reference models). Padding follows the rollout: prompts are left-padded and described by a
2-D attention mask (1 = token) that the model turns into hidden pad keys and positions ``cumsum(mask) - 1``; the
completion canvas (``max_completion_length`` positions, possibly holding EOS / pad tokens after the end of the
answer) is all real tokens, exactly as it was when it was decoded.

Deviation from the released trainer (reference.md "defects"): it reset the global RNG in every pass and ignored
the padding mask; we use an explicit generator and the rollout's attention mask, and draw ``t`` per sequence
(the released code drew one t per batch).

Usage::

    cfg = EstimatorConfig("coupled", num_pairs=1, full_mask_pass=True)
    plan = draw_mask_plan(cfg, prompt_attention_mask, completion_len, generator=g)   # (P, B, L) masks
    est = estimate_logp(model, input_ids, attention_mask, plan, mask_token_id)       # est.logp: (B, Lc)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:  # pragma: no cover
    from diffucoder.model import DreamModel

ESTIMATORS: tuple[str, ...] = ("coupled", "decoupled", "full_mask", "d1")


@dataclass(frozen=True)
class EstimatorConfig:
    """Which estimator, and its knobs."""

    name: str = "coupled"
    """One of ``coupled``, ``decoupled``, ``full_mask``, ``d1``."""
    num_pairs: int = 1
    """lambda: complementary mask pairs per estimate (``coupled``; ``decoupled`` uses 2*lambda random passes)."""
    full_mask_pass: bool = True
    """Add the pass with the whole completion masked (``coupled`` / ``decoupled``; the released code does)."""
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
        if self.name in ("coupled", "decoupled"):
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
    if cfg.name in ("coupled", "decoupled"):
        norm = float(cfg.num_pairs + int(cfg.full_mask_pass))
        if cfg.full_mask_pass:
            masks.append(full())
            weights.append(compf / norm)
            ts.append(ones_b)
        for _ in range(cfg.num_pairs):
            t = ratio()  # (B,)
            m = (_uniform((B, Lc), generator, device) < t[:, None]) & comp  # (B, Lc)
            masks.append(torch.cat([no_prompt, m], dim=1))
            weights.append(m.float() / (t[:, None] * norm))
            ts.append(t)
            if cfg.name == "coupled":
                mc = comp & ~m  # the exact complement within the canvas: ratio 1 - t
                tc = 1.0 - t
            else:
                tc = ratio()
                mc = (_uniform((B, Lc), generator, device) < tc[:, None]) & comp
            masks.append(torch.cat([no_prompt, mc], dim=1))
            weights.append(mc.float() / (tc[:, None] * norm))
            ts.append(tc)
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


def completion_token_logp(model: "DreamModel", xt: torch.Tensor, targets: torch.Tensor, prompt_len: int,
                          attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """log p(targets[:, j] | xt) at the completion positions ``[prompt_len, L)`` in fp32.

    xt: (N, L) noised ids; targets: (N, Lc) clean completion ids; returns (N, Lc). Uses ``model.token_logits``
    (the AR shift is undone there), so with ``shift_logits`` the prompt must hold at least one position.
    """
    if prompt_len < 1 and getattr(model.config, "shift_logits", False):
        raise ValueError("with shift_logits the sequence must start with at least one prompt position "
                         "(position 0 carries no prediction)")
    logits = model.token_logits(xt, attention_mask)[:, prompt_len:]  # (N, Lc, V)
    logp = F.log_softmax(logits.float(), dim=-1)  # (N, Lc, V)
    return logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # (N, Lc)


def estimate_logp(model: "DreamModel", input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                  plan: MaskPlan, mask_token_id: int, micro_batch_size: int | None = None) -> LogpEstimate:
    """Estimate per-token log-likelihoods of the completion ``input_ids[:, plan.prompt_len:]``.

    Args:
        model: a Dream model (``token_logits`` is used; gradients flow unless called under ``no_grad``).
        input_ids: (B, L) left-padded prompt followed by the completion canvas.
        attention_mask: (B, L) 2-D padding mask as used at rollout (1 = token), or None (no padding).
        plan: masks and weights from :func:`draw_mask_plan` for this batch.
        mask_token_id: the [MASK] id (from the tokenizer / model config, never a literal).
        micro_batch_size: rows (pass x sequence) per forward call; None = all P * B at once.
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
    chunks = []
    for s in range(0, P * B, mb):
        chunks.append(completion_token_logp(model, xt[s:s + mb], targets[s:s + mb], Lp,
                                            None if attn is None else attn[s:s + mb]))
    pass_logp = torch.cat(chunks, dim=0).view(P, B, Lc)  # (P, B, Lc)
    w = plan.weights.to(device=device, dtype=pass_logp.dtype)
    logp = (pass_logp * w).sum(0)  # (B, Lc)
    return LogpEstimate(logp=logp, pass_logp=pass_logp, forward_rows=P * B)


def combine_pass_logp(pass_logp: torch.Tensor, plan: MaskPlan) -> torch.Tensor:
    """Re-weight already computed per-pass log-probs (P, B, Lc) with a plan's weights -> (B, Lc)."""
    return (pass_logp * plan.weights.to(pass_logp.device, pass_logp.dtype)).sum(0)
