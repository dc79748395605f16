"""Forward noising of masked (absorbing-state) diffusion, linear schedule (reference.md section 2).

A clean sequence ``x0`` is corrupted at "time" ``t`` in (0, 1] by replacing each *maskable* token independently
with [MASK] with probability ``t`` (LLaDA eq. 1, Dream, DiffuCoder section 2). Training draws one ``t`` per
sequence, ``t ~ U(eps, 1)``; the ELBO weight of a masked token is then ``1 / t`` (see ``losses.py``).

Everything here is a small pure function of its inputs and an explicit ``torch.Generator``: the same generator
state gives the same noise, nothing touches the global RNG. Typical use::

    g = torch.Generator().manual_seed(0)
    t = sample_t(x0.shape[0], g, eps=1e-3, method="uniform")           # (B,)
    maskable = maskable_positions(x0.shape, shift=True, prompt_len=prompt_len)
    noised = mask_tokens(x0, t, mask_token_id, g, maskable=maskable)    # .xt, .is_masked, .t

The RL log-likelihood estimators (``estimators.py``) reuse ``maskable_positions`` / ``mask_with_uniforms``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

TSampling = Literal["uniform", "antithetic", "stratified"]
T_SAMPLING_METHODS: tuple[str, ...] = ("uniform", "antithetic", "stratified")


@dataclass
class NoisedBatch:
    """A batch corrupted by the forward process."""

    xt: torch.Tensor  # (B, L) long: x0 with the masked positions replaced by the mask id
    is_masked: torch.Tensor  # (B, L) bool: True where xt holds [MASK] (always a subset of the maskable positions)
    t: torch.Tensor  # (B,) float: the noise level (mask probability) each row was corrupted with


def sample_t(batch_size: int, generator: torch.Generator, eps: float = 1e-3, method: TSampling = "uniform",
             device: torch.device | str | None = None) -> torch.Tensor:
    """Draw one noise level per sequence, ``t in [eps, 1]`` (B,), float32.

    - ``"uniform"``: ``t = eps + (1 - eps) * u`` with ``u ~ U(0, 1)`` i.i.d. (the reference).
    - ``"antithetic"``: ``u`` for the first half of the batch and ``1 - u`` for the second (odd sizes: the
      last row draws its own ``u``); each ``t`` is still marginally ``U(eps, 1)``, pairs are negatively
      correlated, so the batch-mean loss has lower variance.
    - ``"stratified"``: ``u_i = (i + v_i) / B`` with ``v_i ~ U(0, 1)``, then randomly permuted: exactly one
      draw per 1/B-stratum (as in Kingma et al.'s low-discrepancy sampler), unbiased and lower variance.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not 0.0 <= eps < 1.0:
        raise ValueError(f"eps must be in [0, 1), got {eps}")
    gdev = generator.device
    if method == "uniform":
        u = torch.rand(batch_size, generator=generator, device=gdev)  # (B,)
    elif method == "antithetic":
        half = batch_size // 2
        v = torch.rand(batch_size - half, generator=generator, device=gdev)  # (B - B//2,)
        u = torch.cat([v[:half], 1.0 - v[:half], v[half:]])  # (B,)
    elif method == "stratified":
        v = torch.rand(batch_size, generator=generator, device=gdev)  # (B,)
        strata = (torch.arange(batch_size, device=gdev, dtype=torch.float32) + v) / batch_size
        u = strata[torch.randperm(batch_size, generator=generator, device=gdev)]
    else:
        raise ValueError(f"unknown t sampling method {method!r}; choose one of {list(T_SAMPLING_METHODS)}")
    t = eps + (1.0 - eps) * u
    return t.to(device) if device is not None else t


def maskable_positions(shape: tuple[int, int] | torch.Size, shift: bool = False,
                       prompt_len: torch.Tensor | int | None = None, valid: torch.Tensor | None = None,
                       device: torch.device | str | None = None) -> torch.Tensor:
    """Positions the forward process may mask (B, L) bool.

    - ``shift``: with the AR shift, output i predicts token i+1, so position 0 has no prediction and must stay
      clean.
    - ``prompt_len``: positions ``< prompt_len`` (per row (B,) or one int) are the condition (SFT prompt,
      clean prefix) and are never masked.
    - ``valid``: (B, L) bool, False at positions that are not part of the sequence (truncation padding).
    """
    B, L = int(shape[0]), int(shape[1])
    if valid is not None and device is None:
        device = valid.device
    pos = torch.arange(L, device=device).expand(B, L)  # (B, L)
    out = torch.ones(B, L, dtype=torch.bool, device=device)
    if shift:
        out &= pos > 0
    if prompt_len is not None:
        pl = torch.as_tensor(prompt_len, device=device).reshape(-1, 1)  # (B, 1) or (1, 1)
        out &= pos >= pl
    if valid is not None:
        if tuple(valid.shape) != (B, L):
            raise ValueError(f"valid has shape {tuple(valid.shape)}, expected {(B, L)}")
        out &= valid.bool()
    return out


def mask_with_uniforms(x0: torch.Tensor, t: torch.Tensor, u: torch.Tensor, mask_token_id: int,
                       maskable: torch.Tensor | None = None) -> NoisedBatch:
    """Deterministic core: mask position (b, j) iff ``u[b, j] < t[b]`` and it is maskable.

    ``u`` (B, L) uniform draws; sharing ``u`` between calls gives coupled masks (``u < t`` and ``u >= t`` are
    exact complements over the maskable positions).
    """
    if x0.dim() != 2:
        raise ValueError(f"x0 must be (B, L), got shape {tuple(x0.shape)}")
    if t.shape != (x0.shape[0],):
        raise ValueError(f"t must have shape ({x0.shape[0]},), got {tuple(t.shape)}")
    is_masked = u < t.to(u.dtype)[:, None]  # (B, L)
    if maskable is not None:
        is_masked &= maskable
    xt = torch.where(is_masked, torch.full_like(x0, mask_token_id), x0)  # (B, L)
    return NoisedBatch(xt=xt, is_masked=is_masked, t=t)


def mask_tokens(x0: torch.Tensor, t: torch.Tensor, mask_token_id: int, generator: torch.Generator,
                maskable: torch.Tensor | None = None) -> NoisedBatch:
    """Mask each maskable token of row b independently with probability ``t[b]`` (the forward process q_t)."""
    u = torch.rand(x0.shape, generator=generator, device=generator.device).to(x0.device)  # (B, L)
    return mask_with_uniforms(x0, t.to(x0.device), u, mask_token_id, maskable)


def noise_batch(x0: torch.Tensor, mask_token_id: int, generator: torch.Generator, eps: float = 1e-3,
                method: TSampling = "uniform", maskable: torch.Tensor | None = None) -> NoisedBatch:
    """``sample_t`` then ``mask_tokens``: one training corruption of a batch."""
    t = sample_t(x0.shape[0], generator, eps=eps, method=method, device=x0.device)
    return mask_tokens(x0, t, mask_token_id, generator, maskable=maskable)


def annealed_attention_mask(L: int, p_full: float, generator: torch.Generator, batch_size: int = 1,
                            device: torch.device | str | None = None) -> torch.Tensor | None:
    """AR-adaptation attention: ``causal OR Bernoulli(p_full)`` per (query, key), (B, 1, L, L) bool.

    ``p_full = min(1, step / anneal_steps)`` anneals a causal LM into a bidirectional one (DiffuLLaMA's
    attention-mask annealing, used by DiffuCoder's adaptation). Returns None (full attention) once
    ``p_full >= 1``, so no mask is built after the annealing ends.
    """
    if p_full >= 1.0:
        return None
    causal = torch.ones(L, L, dtype=torch.bool, device=device).tril()  # (L, L)
    if p_full <= 0.0:
        return causal.expand(batch_size, 1, L, L).clone()
    r = torch.rand(batch_size, 1, L, L, generator=generator, device=generator.device).to(device)
    return causal | (r < p_full)  # (B, 1, L, L)
