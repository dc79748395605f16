"""ELBO-weighted masked cross-entropy with hand-computed expectations (diffucoder.diffusion.losses)."""

import math

import pytest
import torch

from diffucoder.diffusion.losses import (masked_diffusion_loss, masked_diffusion_loss_sums, model_loss_sums,
                                         normalize, select_masked)
from diffucoder.diffusion.noise import mask_tokens, maskable_positions
from diffucoder.model import DreamConfig, DreamModel


def test_loss_by_hand():
    # V = 2. Logits (0, 0) give CE = log 2 for either target; logits (log 3, 0) give p = 3/4 for token 0.
    ln2, ln3 = math.log(2), math.log(3)
    logits = torch.zeros(2, 3, 2)
    logits[1, 2] = torch.tensor([ln3, 0.0])
    x0 = torch.tensor([[0, 1, 1], [0, 0, 0]])
    is_masked = torch.tensor([[False, True, False], [False, False, True]])
    t = torch.tensor([0.5, 0.25])
    # masked: (0,1) CE = ln2, weight 1/0.5 = 2 ; (1,2) CE = -ln(3/4), weight 4
    wce = 2 * ln2 + 4 * (-math.log(0.75))
    sums = masked_diffusion_loss_sums(logits, x0, is_masked, t)
    assert sums.weighted_ce.item() == pytest.approx(wce, rel=1e-6)
    assert sums.ce.item() == pytest.approx(ln2 - math.log(0.75), rel=1e-6)
    assert int(sums.n_masked) == 2 and int(sums.n_maskable) == 6
    # DiffuCoder: / masked count (2); LLaDA: / B*L (6)
    assert masked_diffusion_loss(logits, x0, is_masked, t).item() == pytest.approx(wce / 2, rel=1e-6)
    assert masked_diffusion_loss(logits, x0, is_masked, t, normalization="all_tokens").item() == \
        pytest.approx(wce / 6, rel=1e-6)
    assert normalize(sums, "masked_tokens", denominator=10).item() == pytest.approx(wce / 10, rel=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_cross_entropy_matches_torch(dtype):
    from diffucoder.diffusion.losses import masked_ce_sums

    g = torch.Generator().manual_seed(0)
    logits = (3 * torch.randn(7, 11, generator=g)).to(dtype).requires_grad_()
    ref_logits = logits.detach().clone().requires_grad_()
    y = torch.randint(0, 11, (7,), generator=g)
    w = torch.rand(7, generator=g) + 0.5
    wce, ce = masked_ce_sums(logits, y, w)
    ref_ce = torch.nn.functional.cross_entropy(ref_logits.float(), y, reduction="none")
    ref = (ref_ce * w).sum()
    torch.testing.assert_close(wce, ref, rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(ce, ref_ce.detach().sum(), rtol=1e-6, atol=1e-5)
    (2.0 * wce).backward()
    (2.0 * ref).backward()
    assert logits.grad.dtype == dtype
    tol = 1e-6 if dtype == torch.float32 else 1e-2
    torch.testing.assert_close(logits.grad.float(), ref_logits.grad.float(), rtol=tol, atol=tol)


def test_empty_mask_is_zero_not_nan():
    logits = torch.zeros(1, 3, 4, requires_grad=True)
    loss = masked_diffusion_loss(logits, torch.zeros(1, 3, dtype=torch.long), torch.zeros(1, 3, dtype=torch.bool),
                                 torch.tensor([0.5]))
    assert loss.item() == 0.0
    loss.backward()


def test_bad_normalization_and_t():
    sums = masked_diffusion_loss_sums(torch.zeros(1, 2, 3), torch.zeros(1, 2, dtype=torch.long),
                                      torch.tensor([[True, False]]), torch.tensor([1.0]))
    with pytest.raises(ValueError, match="normalization"):
        normalize(sums, "per_sequence")
    with pytest.raises(ValueError, match="t must be > 0"):
        masked_diffusion_loss_sums(torch.zeros(1, 2, 3), torch.zeros(1, 2, dtype=torch.long),
                                   torch.tensor([[True, False]]), torch.tensor([0.0]))


def test_shift_never_masks_position_zero():
    with pytest.raises(ValueError, match="position 0"):
        select_masked(torch.tensor([[True, False]]), shift=True)
    rows, cols, src = select_masked(torch.tensor([[False, True, True]]), shift=True)
    assert cols.tolist() == [1, 2] and src.tolist() == [0, 1]


@pytest.mark.parametrize("shift", [True, False])
def test_masked_rows_only_equals_full_logits(shift):
    """The efficient path (LM head only at masked rows) equals the loss from model.token_logits."""
    cfg = DreamConfig.preset("tiny", vocab_size=50, mask_token_id=49, shift_logits=shift)
    model = DreamModel(cfg)
    g = torch.Generator().manual_seed(0)
    x0 = torch.randint(0, 49, (3, 12), generator=g)
    maskable = maskable_positions(x0.shape, shift=shift)
    noised = mask_tokens(x0, torch.tensor([0.3, 0.6, 0.9]), 49, g, maskable)
    fast = model_loss_sums(model, noised.xt, x0, noised.is_masked, noised.t, maskable)
    slow = masked_diffusion_loss_sums(model.token_logits(noised.xt), x0, noised.is_masked, noised.t, maskable)
    assert torch.allclose(fast.weighted_ce, slow.weighted_ce, atol=1e-5)
    assert int(fast.n_maskable) == 36 - (3 if shift else 0)
    fast.weighted_ce.backward()
    assert model.lm_head.weight.grad is not None
