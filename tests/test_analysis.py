"""AR-ness metrics against hand-computed values (paper section 4.1 / reference.md section 4)."""

from __future__ import annotations

import pytest
import torch

from diffucoder.analysis import (ar_ness_curves, global_ar_ness, local_ar_ness, reveal_heatmap,
                                 first_step_profile)


@pytest.mark.parametrize("k", [1, 2, 5, 8])
def test_left_to_right_is_fully_autoregressive(k):
    order = list(range(8))
    assert local_ar_ness(order, k) == 1.0
    assert global_ar_ness(order, k) == 1.0


@pytest.mark.parametrize("k", [1, 2, 3])
def test_right_to_left(k):
    order = list(range(7, -1, -1))  # T = 8
    assert local_ar_ness(order, k) == 0.0
    # only the last k steps pick one of the k left-most masks
    assert global_ar_ness(order, k) == pytest.approx(min(k, 8) / 8)


def test_worked_mixed_example():
    order = [0, 1, 3, 2]
    # local@1: 0 after prompt -1 (yes), 1 after 0 (yes), 3 after 1 (no), 2 after 3 (no) -> 2/4
    assert local_ar_ness(order, 1) == 0.5
    # local@2: (-1,-2) before 0 yes; (0,-1) before 1 yes; the rest no -> 2/4
    assert local_ar_ness(order, 2) == 0.5
    # global@1: {0123}->0 yes, {123}->1 yes, {23}->3 no, {2}->2 yes -> 3/4
    assert global_ar_ness(order, 1) == 0.75
    # global@2: 0 in {0,1}; 1 in {1,2}; 3 in {2,3}; 2 in {2} -> 4/4
    assert global_ar_ness(order, 2) == 1.0


def test_another_worked_example_and_monotonicity():
    order = [2, 3, 4, 0, 1, 5]
    # local@1: 2 after -1 no; 3 after 2 yes; 4 after 3 yes; 0 after 4 no; 1 after 0 yes; 5 after 1 no -> 3/6
    assert local_ar_ness(order, 1) == 0.5
    # local@2: 4 after (3,2) yes; 1 needs (0,-1) but has (0,4) no -> 1/6
    assert local_ar_ness(order, 2) == pytest.approx(1 / 6)
    # global@1: {0..5}->2 no; {0,1,3,4,5}->3 no; {0,1,4,5}->4 no; {0,1,5}->0 yes; {1,5}->1 yes; {5}->5 yes
    assert global_ar_ness(order, 1) == 0.5
    # global@3: 2 is 3rd yes; 3 is 3rd of {0,1,3,..} yes; 4 is 3rd yes; then yes, yes, yes -> 1
    assert global_ar_ness(order, 3) == 1.0
    loc = [local_ar_ness(order, k) for k in range(1, 7)]
    glo = [global_ar_ness(order, k) for k in range(1, 7)]
    assert loc == sorted(loc, reverse=True) and glo == sorted(glo)


def test_prompt_length_limits_the_history():
    # left to right with a 1-token prompt: step 1 cannot look back 2 positions
    assert local_ar_ness([0, 1, 2, 3], 2, prompt_length=1) == 0.75
    assert local_ar_ness([0, 1, 2, 3], 2) == 1.0


def test_bad_orders():
    with pytest.raises(ValueError, match="twice"):
        local_ar_ness([0, 0, 1], 1)
    with pytest.raises(ValueError, match="empty"):
        global_ar_ness([], 1)
    with pytest.raises(ValueError, match="k must"):
        global_ar_ness([0, 1], 0)


def test_curves_average_orders():
    c = ar_ness_curves([list(range(4)), [3, 2, 1, 0]], ks=[1, 2])
    assert c.local == [0.5, 0.5]  # (1 + 0) / 2
    assert c.global_ == [pytest.approx((1 + 0.25) / 2), pytest.approx((1 + 0.5) / 2)]


def test_heatmap_and_profile_from_a_real_trace():
    from diffucoder.model import DreamConfig, DreamModel

    cfg = DreamConfig.preset("tiny", vocab_size=32, mask_token_id=31, tie_word_embeddings=False)
    m = DreamModel(cfg, init_weights=False)
    m.init_weights(torch.Generator().manual_seed(0))
    p = torch.randint(0, 31, (3, 4), generator=torch.Generator().manual_seed(1))
    out = m.diffusion_generate(p, max_new_tokens=6, steps=6, alg="maskgit_plus", return_dict_in_generate=True)
    hm = reveal_heatmap([out.trace])
    assert hm.shape == (6, 6)
    # 3 samples, each position revealed once, each step revealing one position per sample (after step 0's
    # floor and the last step's two, the columns still sum to one)
    assert torch.allclose(hm.sum(0), torch.ones(6))
    assert hm.sum() == pytest.approx(6)
    prof = first_step_profile([out.trace])
    assert prof.shape == (6,) and ((prof > 0) & (prof <= 1)).all()
