"""The masked-diffusion training loss: ELBO-weighted cross-entropy on masked positions (reference.md section 2).

For a sequence corrupted at level ``t`` (``noise.py``), the negative ELBO of masked diffusion with the linear
schedule is (LLaDA eq. 3; Shi et al. / Sahoo et al. for the continuous-time form)

    -ELBO(x0) = E_t E_{xt ~ q_t} [ (1 / t) * sum_{j masked} -log p_theta(x0_j | xt) ],

so each masked token's cross-entropy carries the weight ``1 / t`` of its row. Two normalisations of a batch:

- ``"masked_tokens"``: divide by the number of masked tokens (DiffuLLaMA / DiffuCoder);
- ``"all_tokens"``: divide by the number of maskable (loss-bearing) positions, i.e. ``B * L`` in plain
  pretraining (LLaDA). Its expectation is exactly the per-token negative ELBO (an upper bound on NLL/token).

The functions work on the *selected* masked positions only ((N, V) logits), so a caller can run the LM head on
those rows alone: :func:`masked_positions_logits` does that from hidden states, honouring the AR shift
(with ``shift``, the hidden state at ``j - 1`` predicts token ``j``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

Normalization = Literal["masked_tokens", "all_tokens"]
NORMALIZATIONS: tuple[str, ...] = ("masked_tokens", "all_tokens")


@dataclass
class LossSums:
    """Un-normalised sums over a batch; add them across micro-batches / ranks, then :func:`normalize`."""

    weighted_ce: torch.Tensor  # scalar: sum over masked tokens of CE / t (the ELBO numerator; has grad)
    ce: torch.Tensor  # scalar: sum over masked tokens of plain CE (detached)
    n_masked: torch.Tensor  # scalar long: number of masked tokens
    n_maskable: torch.Tensor  # scalar long: number of maskable positions


def elbo_weights(t: torch.Tensor) -> torch.Tensor:
    """The linear schedule's ELBO weight per row, ``1 / t`` (B,)."""
    if bool((t <= 0).any()):
        raise ValueError("t must be > 0 (sample it from [eps, 1] with eps > 0)")
    return 1.0 / t


def select_masked(is_masked: torch.Tensor, shift: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Indices of the masked positions: (rows (N,), target columns (N,), source columns (N,)).

    The source column is the output position whose logits predict the target: ``j - 1`` with the AR shift,
    ``j`` without. Masking column 0 with the shift is an error (it has no prediction).
    """
    rows, cols = is_masked.nonzero(as_tuple=True)  # (N,), (N,)
    if shift:
        if bool((cols == 0).any()):
            raise ValueError("position 0 is masked but carries no prediction with shift_logits=True; "
                             "build the mask with maskable_positions(..., shift=True)")
        return rows, cols, cols - 1
    return rows, cols, cols


class _WeightedCrossEntropy(torch.autograd.Function):
    """``sum_i w_i * CE(logits_i, y_i)`` in fp32 with a hand-written backward.

    Same value and gradient as ``(F.cross_entropy(logits.float(), y, reduction="none") * w).sum()``, but the
    backward writes ``w_i * (softmax(logits_i) - onehot(y_i))`` from the saved log-softmax in one pass,
    without the zero-filled one-hot gradient and the separate log-softmax backward: the (N, V) passes are the
    costliest non-matmul work of a small model's training step.
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        logp = torch.log_softmax(logits.float(), dim=-1)  # (N, V)
        ce = -logp.gather(1, targets[:, None]).squeeze(1)  # (N,)
        ctx.save_for_backward(logp, targets, weights)
        ctx.logits_dtype = logits.dtype
        return (ce * weights).sum(), ce

    @staticmethod
    def backward(ctx, g_sum: torch.Tensor, g_ce: torch.Tensor | None):  # type: ignore[override]
        logp, targets, weights = ctx.saved_tensors
        coef = g_sum * weights  # (N,)
        if g_ce is not None:
            coef = coef + g_ce
        grad = logp.exp()  # (N, V) softmax
        rows = torch.arange(grad.shape[0], device=grad.device)
        grad[rows, targets] -= 1.0
        grad.mul_(coef[:, None])
        return grad.to(ctx.logits_dtype), None, None


def masked_ce_sums(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor,
                                                                                                 torch.Tensor]:
    """Sum of ``weights * CE`` and of plain CE over N selected positions.

    logits (N, V) (any float dtype; CE computed in fp32), targets (N,) long, weights (N,) float.
    """
    if logits.shape[0] == 0:
        zero = logits.float().sum() * 0.0  # keeps the graph (every parameter gets a zero gradient)
        return zero, zero.detach()
    wce, ce = _WeightedCrossEntropy.apply(logits, targets, weights.float())
    return wce, ce.detach().sum()


def masked_diffusion_loss_sums(token_logits: torch.Tensor, x0: torch.Tensor, is_masked: torch.Tensor,
                               t: torch.Tensor, maskable: torch.Tensor | None = None) -> LossSums:
    """Loss sums from full, *aligned* logits (``token_logits[:, j]`` predicts ``x0[:, j]``), (B, L, V).

    The simple reference form (tests, small models); training uses :func:`masked_positions_logits` to avoid
    the LM head at unmasked positions.
    """
    rows, cols = is_masked.nonzero(as_tuple=True)
    w = elbo_weights(t)[rows]  # (N,)
    wce, ce = masked_ce_sums(token_logits[rows, cols], x0[rows, cols], w)
    n_maskable = maskable.sum() if maskable is not None else torch.tensor(x0.numel())
    return LossSums(wce, ce, is_masked.sum(), n_maskable)


def masked_positions_logits(hidden: torch.Tensor, lm_head: nn.Module, is_masked: torch.Tensor, shift: bool
                            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run the LM head only where a masked token is predicted.

    hidden (B, L, H) final hidden states; returns (logits (N, V), rows (N,), target cols (N,)).
    """
    rows, cols, src = select_masked(is_masked, shift)
    return lm_head(hidden[rows, src]), rows, cols  # (N, V)


def normalize(sums: LossSums, normalization: Normalization, denominator: torch.Tensor | float | None = None
              ) -> torch.Tensor:
    """The scalar loss: ``weighted_ce / denominator``.

    ``denominator`` defaults to ``n_masked`` ("masked_tokens") or ``n_maskable`` ("all_tokens"); pass the
    global count when the batch is split over micro-batches or ranks, so the result equals the unsplit loss.
    An empty mask gives 0 (not NaN).
    """
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"unknown normalization {normalization!r}; choose one of {list(NORMALIZATIONS)}")
    if denominator is None:
        denominator = sums.n_masked if normalization == "masked_tokens" else sums.n_maskable
    denom = torch.as_tensor(denominator, dtype=torch.float32).clamp_min(1.0)
    return sums.weighted_ce / denom.to(sums.weighted_ce.device)


def masked_diffusion_loss(token_logits: torch.Tensor, x0: torch.Tensor, is_masked: torch.Tensor, t: torch.Tensor,
                          maskable: torch.Tensor | None = None,
                          normalization: Normalization = "masked_tokens") -> torch.Tensor:
    """One-call loss on a batch: ELBO-weighted masked CE, normalised as asked (scalar)."""
    return normalize(masked_diffusion_loss_sums(token_logits, x0, is_masked, t, maskable), normalization)


def model_loss_sums(model: nn.Module, xt: torch.Tensor, x0: torch.Tensor, is_masked: torch.Tensor,
                    t: torch.Tensor, maskable: torch.Tensor, attention_mask: torch.Tensor | None = None,
                    position_ids: torch.Tensor | None = None, row_weights: torch.Tensor | None = None
                    ) -> LossSums:
    """Loss sums for a :class:`~diffucoder.model.DreamModel` on a noised batch, LM head at masked rows only.

    ``t`` (B,) is each row's noise level; packed rows (several examples a row, each with its own level) pass it
    per position, (B, L). ``row_weights`` (B,) or (B, L) like ``t``: the weight of the masked tokens in
    ``weighted_ce``; default the ELBO's 1/t."""
    hidden = model.model(xt, attention_mask, position_ids)  # (B, L, H)
    logits, rows, cols = masked_positions_logits(hidden, model.lm_head, is_masked, model.config.shift_logits)
    weights = elbo_weights(t) if row_weights is None else row_weights  # (B,) or (B, L)
    w = weights[rows, cols] if weights.dim() == 2 else weights[rows]  # (N,)
    wce, ce = masked_ce_sums(logits, x0[rows, cols], w)
    return LossSums(wce, ce, is_masked.sum(), maskable.sum())
