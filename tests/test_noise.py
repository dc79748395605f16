"""Forward noising: t sampling, maskable positions, masks (diffucoder.diffusion.noise)."""

import pytest
import torch

from diffucoder.diffusion.noise import (annealed_attention_mask, mask_tokens, mask_with_uniforms,
                                        maskable_positions, noise_batch, sample_t)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("method", ["uniform", "antithetic", "stratified"])
def test_sample_t_range_and_determinism(method):
    t = sample_t(1001, gen(1), eps=0.1, method=method)
    assert t.shape == (1001,) and t.dtype == torch.float32
    assert float(t.min()) >= 0.1 and float(t.max()) <= 1.0
    assert torch.equal(t, sample_t(1001, gen(1), eps=0.1, method=method))
    assert not torch.equal(t, sample_t(1001, gen(2), eps=0.1, method=method))
    # marginally U(0.1, 1): mean 0.55
    assert abs(float(t.mean()) - 0.55) < 0.03


def test_sample_t_does_not_touch_global_rng():
    torch.manual_seed(123)
    a = torch.rand(3)
    torch.manual_seed(123)
    sample_t(10, gen(), method="stratified")
    mask_tokens(torch.zeros(2, 5, dtype=torch.long), torch.tensor([0.5, 0.5]), 9, gen())
    assert torch.equal(a, torch.rand(3))


def test_antithetic_pairs_sum_to_one_plus_eps():
    # t = eps + (1-eps) u and t' = eps + (1-eps)(1-u)  =>  t + t' = 1 + eps
    t = sample_t(7, gen(), eps=0.2, method="antithetic")
    assert torch.allclose(t[:3] + t[3:6], torch.full((3,), 1.2))


def test_stratified_one_draw_per_stratum():
    eps = 0.0
    t = sample_t(8, gen(5), eps=eps, method="stratified")
    strata = torch.sort((t * 8).floor().long()).values
    assert strata.tolist() == list(range(8))


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="unknown t sampling"):
        sample_t(3, gen(), method="sobol")
    with pytest.raises(ValueError, match="eps"):
        sample_t(3, gen(), eps=1.0)


def test_maskable_positions_shift_prompt_valid():
    valid = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    m = maskable_positions((2, 5), shift=True, prompt_len=torch.tensor([2, 0]), valid=valid)
    # row 0: prompt covers 0,1; position 4 is padding -> 2,3 maskable
    # row 1: no prompt but shift keeps position 0 clean -> 1..4
    assert m.int().tolist() == [[0, 0, 1, 1, 0], [0, 1, 1, 1, 1]]


def test_mask_with_uniforms_by_hand():
    x0 = torch.tensor([[10, 11, 12, 13]])
    u = torch.tensor([[0.1, 0.6, 0.3, 0.9]])
    out = mask_with_uniforms(x0, torch.tensor([0.5]), u, mask_token_id=99,
                             maskable=torch.tensor([[False, True, True, True]]))
    # u < 0.5 at columns 0 and 2; column 0 is not maskable -> only column 2 masked
    assert out.xt.tolist() == [[10, 11, 99, 13]]
    assert out.is_masked.tolist() == [[False, False, True, False]]
    # the complement mask (u >= t) covers exactly the other maskable positions (coupled sampling)
    comp = mask_with_uniforms(x0, torch.tensor([0.5]), 1 - u + 1e-9, 99, torch.tensor([[False, True, True, True]]))
    assert (comp.is_masked ^ out.is_masked).tolist() == [[False, True, True, True]]


def test_mask_rate_matches_t_and_never_masks_unmaskable():
    x0 = torch.randint(0, 50, (4, 4000), generator=gen(3))
    t = torch.tensor([0.1, 0.5, 0.9, 1.0])
    maskable = maskable_positions(x0.shape, shift=True)
    out = mask_tokens(x0, t, 77, gen(4), maskable=maskable)
    rate = out.is_masked.float().mean(1)
    assert torch.allclose(rate, t, atol=0.03)
    assert not bool(out.is_masked[:, 0].any())
    assert torch.equal(out.xt[~out.is_masked], x0[~out.is_masked])
    assert bool((out.xt[out.is_masked] == 77).all())


def test_noise_batch_reproducible():
    x0 = torch.randint(0, 50, (3, 20), generator=gen(3))
    a, b = noise_batch(x0, 77, gen(9)), noise_batch(x0, 77, gen(9))
    assert torch.equal(a.xt, b.xt) and torch.equal(a.t, b.t)


def test_annealed_attention_mask():
    L = 64
    assert annealed_attention_mask(L, 1.0, gen()) is None
    causal = annealed_attention_mask(L, 0.0, gen(), batch_size=2)
    assert causal.shape == (2, 1, L, L) and torch.equal(causal[0, 0], torch.ones(L, L, dtype=torch.bool).tril())
    m = annealed_attention_mask(L, 0.3, gen(), batch_size=2)
    assert bool(m[:, :, torch.ones(L, L, dtype=torch.bool).tril()].all())  # the causal part is always open
    upper = torch.ones(L, L, dtype=torch.bool).triu(1)
    frac = m[:, 0][:, upper].float().mean()
    assert abs(float(frac) - 0.3) < 0.03
