"""GRPO pieces as small pure functions: group advantages, the clipped objective with k3 KL, completion masks.

For a prompt with G completions and rewards r_1..r_G (reference.md section 5):

- advantages ``A_i = r_i - mean(r)`` (``baseline="mean"``) or leave-one-out ``A_i = r_i - mean_{j != i} r_j``
  (``"loo"``, DiffuCoder's released setting; equal to ``G / (G - 1) * (r_i - mean(r))``), optionally divided by
  the group's standard deviation (``scale_rewards``; DiffuCoder: off);
- per completion token k: ``-min(rho * A, clip(rho, 1 - eps_low, 1 + eps_high) * A) + beta * KL`` with
  ``rho = exp(logp - logp_old)`` and the k3 estimator ``KL = exp(ref - logp) - (ref - logp) - 1``;
- optionally (``kl_clamp = c``, not in DiffuCoder) the per-token k3 term clamped to at most ``c`` (the log-ratio
  first limited to +-20 so that ``exp`` stays finite): a token whose estimated log-likelihood moved far from the
  reference's adds the constant ``beta * c`` and no gradient, so one token cannot dominate a batch (the KL spikes
  of 1,800-3,200 per token in docs/rl-experiment's earlier design). This follows the clamped "low_var_kl" of
  other RL libraries (e.g. verl's, which clamps k3 to +-10);
- token-level normalisation: the sum over completion tokens of the whole batch divided by their number
  (``normalizer`` lets a trainer that splits the batch into micro-batches and ranks divide by the global count).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def group_advantages(rewards: torch.Tensor, num_generations: int, baseline: str = "loo",
                     scale_rewards: bool = False, eps: float = 1e-4) -> torch.Tensor:
    """Advantages of rewards laid out group by group: (N,) with N = num_prompts * G, rows [g*G, (g+1)*G).

    Example (G = 3, rewards 1, 0, 0): mean baseline -> 2/3, -1/3, -1/3; leave-one-out -> 1, -1/2, -1/2.
    """
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1-D (N,), got shape {tuple(rewards.shape)}")
    G = int(num_generations)
    if G < 2:
        raise ValueError(f"GRPO needs num_generations >= 2 (a group baseline), got {G}")
    if rewards.numel() % G:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of num_generations={G}")
    r = rewards.float().view(-1, G)  # (n, G)
    mean = r.mean(1, keepdim=True)  # (n, 1)
    if baseline == "mean":
        adv = r - mean
    elif baseline == "loo":
        adv = r - (r.sum(1, keepdim=True) - r) / (G - 1)
    else:
        raise ValueError(f"advantage baseline must be 'mean' or 'loo', got {baseline!r}")
    if scale_rewards:
        adv = adv / (r.std(1, keepdim=True) + eps)
    return adv.reshape(-1)


def zero_variance_groups(rewards: torch.Tensor, num_generations: int, tol: float = 1e-8) -> torch.Tensor:
    """(n,) bool: groups whose rewards are all equal (no learning signal from the policy term)."""
    r = rewards.float().view(-1, num_generations)
    return (r.max(1).values - r.min(1).values) <= tol


def completion_mask_from_ids(completion_ids: torch.Tensor, stop_ids: list[int] | tuple[int, ...]
                             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask (N, Lc) of the tokens up to and including the first stop token, and (N,) bool "no stop token".

    Tokens after the first EOS / pad are padding of the canvas (the decoder fills the whole canvas); the loss
    is taken over the answer and its terminating token. A row without any stop token filled the canvas
    (truncated): all its tokens count.
    """
    if completion_ids.dim() != 2:
        raise ValueError(f"completion_ids must be (N, Lc), got shape {tuple(completion_ids.shape)}")
    N, Lc = completion_ids.shape
    is_stop = torch.zeros_like(completion_ids, dtype=torch.bool)
    for s in stop_ids:
        if s is not None:
            is_stop |= completion_ids == int(s)
    has_stop = is_stop.any(1)  # (N,)
    first = torch.where(has_stop, is_stop.float().argmax(1), torch.full((N,), Lc, device=completion_ids.device))
    pos = torch.arange(Lc, device=completion_ids.device)[None]  # (1, Lc)
    return (pos <= first[:, None]).long() & (pos < Lc).long(), ~has_stop


@dataclass
class GRPOLossOutput:
    """The loss of a (micro-)batch and what the trainer logs about it (sums, to be aggregated)."""

    loss: torch.Tensor
    """Scalar: sum of per-token losses over completion tokens divided by ``normalizer``."""
    num_tokens: float
    """Completion tokens in this batch (sum of ``completion_mask``)."""
    kl_sum: float
    """Sum over completion tokens of the k3 KL (0 when beta == 0 / no reference)."""
    clipped_tokens: float
    """Completion tokens where the clipped branch was active (ratio outside the band on the advantage's side)."""
    ratio_sum: float
    """Sum over completion tokens of rho."""
    kl_clamped_tokens: float = 0.0
    """Completion tokens whose k3 term was clamped (``kl_clamp``)."""


def grpo_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor,
              completion_mask: torch.Tensor, ref_logp: torch.Tensor | None = None, beta: float = 0.0,
              epsilon_low: float = 0.2, epsilon_high: float | None = None,
              normalizer: float | torch.Tensor | None = None, kl_clamp: float | None = None) -> GRPOLossOutput:
    """The clipped GRPO objective with k3 KL, token-level normalised.

    Shapes: ``logp``, ``old_logp``, ``ref_logp``, ``completion_mask``: (N, Lc); ``advantages``: (N,).
    ``normalizer`` defaults to ``completion_mask.sum()`` (token-level mean over this batch). ``kl_clamp``: upper
    bound of the per-token k3 term (None: unclamped, DiffuCoder's loss); see the module docstring.
    """
    if kl_clamp is not None and not kl_clamp > 0:
        raise ValueError(f"kl_clamp must be > 0 (or None), got {kl_clamp}")
    if logp.shape != old_logp.shape or logp.shape != completion_mask.shape:
        raise ValueError(f"logp {tuple(logp.shape)}, old_logp {tuple(old_logp.shape)} and completion_mask "
                         f"{tuple(completion_mask.shape)} must have the same (N, Lc) shape")
    if advantages.shape != logp.shape[:1]:
        raise ValueError(f"advantages must be (N,) = {tuple(logp.shape[:1])}, got {tuple(advantages.shape)}")
    eps_hi = epsilon_low if epsilon_high is None else epsilon_high
    m = completion_mask.to(logp.dtype)  # (N, Lc)
    A = advantages.to(logp.dtype)[:, None]  # (N, 1)
    ratio = torch.exp(logp - old_logp.detach())  # (N, Lc)
    clipped = torch.clamp(ratio, 1.0 - epsilon_low, 1.0 + eps_hi)
    per_token = -torch.min(ratio * A, clipped * A)  # (N, Lc)
    kl_sum = 0.0
    kl_clamped = 0.0
    if ref_logp is not None and beta != 0.0:
        d = ref_logp.detach() - logp  # (N, Lc)
        if kl_clamp is not None:
            d = d.clamp(-20.0, 20.0)
        kl = torch.exp(d) - d - 1.0  # (N, Lc) k3, >= 0
        if kl_clamp is not None:
            kl_clamped = float(((kl.detach() > kl_clamp).to(m.dtype) * m).sum())
            kl = kl.clamp(max=float(kl_clamp))
        per_token = per_token + beta * kl
        kl_sum = float((kl.detach() * m).sum())
    n_tok = m.sum()
    denom = n_tok.clamp_min(1.0) if normalizer is None else normalizer
    loss = (per_token * m).sum() / denom
    with torch.no_grad():
        is_clipped = ((ratio < 1.0 - epsilon_low) & (A < 0)) | ((ratio > 1.0 + eps_hi) & (A > 0))
        clipped_tokens = float((is_clipped.to(m.dtype) * m).sum())
        ratio_sum = float((ratio.detach() * m).sum())
    return GRPOLossOutput(loss=loss, num_tokens=float(n_tok), kl_sum=kl_sum, clipped_tokens=clipped_tokens,
                          ratio_sum=ratio_sum, kl_clamped_tokens=kl_clamped)
