"""Log-likelihood estimators: mask structure, weights, padding, determinism."""

from __future__ import annotations

import pytest
import torch

from diffucoder.diffusion.estimators import ESTIMATORS, EstimatorConfig, MaskPlan, draw_mask_plan, estimate_logp
from diffucoder.model import DreamConfig, DreamModel

V = 48
MASK = 47


def tiny_model(shift: bool = True, seed: int = 0) -> DreamModel:
    torch.manual_seed(seed)  # test-only: model init
    cfg = DreamConfig.preset("tiny", vocab_size=V, mask_token_id=MASK, shift_logits=shift)
    return DreamModel(cfg).eval()


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_coupled_pair_partitions_completion_with_inverse_ratio_weights():
    B, Lp, Lc = 3, 4, 17
    pmask = torch.ones(B, Lp, dtype=torch.long)
    cfg = EstimatorConfig("coupled", num_pairs=2, full_mask_pass=True)
    plan = draw_mask_plan(cfg, pmask, Lc, generator=gen(1))
    assert plan.num_passes == cfg.passes == 5
    assert not plan.is_masked[:, :, :Lp].any(), "prompt must never be masked by coupled"
    comp = plan.is_masked[:, :, Lp:]  # (P, B, Lc)
    assert comp[0].all(), "first pass masks the whole completion"
    norm = 3.0  # lambda + 1
    torch.testing.assert_close(plan.weights[0], torch.full((B, Lc), 1 / norm))
    for k in range(2):
        a, b = comp[1 + 2 * k], comp[2 + 2 * k]
        assert not (a & b).any() and (a | b).all(), "a pair partitions the completion exactly"
        t = plan.t[1 + 2 * k]
        assert ((t >= 0.2) & (t <= 0.8)).all()
        torch.testing.assert_close(plan.t[2 + 2 * k], 1 - t)
        # weights: 1/t on M, 1/(1-t) on the complement, each divided by lambda + 1
        torch.testing.assert_close(plan.weights[1 + 2 * k], a.float() / (t[:, None] * norm))
        torch.testing.assert_close(plan.weights[2 + 2 * k], b.float() / ((1 - t)[:, None] * norm))
    # every completion token gets exactly one pair contribution per pair plus the full pass
    assert ((plan.weights > 0).sum(0) == 3).all()


def test_one_pair_matches_released_formula():
    """(logp_full + where(M, logp_t / t, logp_{1-t} / (1-t))) / 2, computed by hand from the passes."""
    model = tiny_model()
    g = gen(3)
    B, Lp, Lc = 2, 5, 9
    ids = torch.randint(0, MASK, (B, Lp + Lc), generator=g)
    plan = draw_mask_plan(EstimatorConfig("coupled"), torch.ones(B, Lp), Lc, generator=g)
    with torch.no_grad():
        est = estimate_logp(model, ids, None, plan, MASK)
    full, lt, l1t = est.pass_logp
    M = plan.is_masked[1, :, Lp:]
    t = plan.t[1][:, None]
    expected = (full + torch.where(M, lt / t, l1t / (1 - t))) / 2
    torch.testing.assert_close(est.logp, expected)
    # and the pass inputs were the masked sequences: a pass's logp at a masked position is what the model
    # predicts for that position given that input
    xt = torch.where(plan.is_masked[1], torch.full_like(ids, MASK), ids)
    with torch.no_grad():
        lp = torch.log_softmax(model.token_logits(xt), -1).gather(-1, ids[..., None])[..., 0][:, Lp:]
    torch.testing.assert_close(lt, lp)


def test_decoupled_same_budget_independent_masks():
    B, Lp, Lc = 4, 3, 200
    pmask = torch.ones(B, Lp)
    c = EstimatorConfig("coupled", num_pairs=1)
    d = EstimatorConfig("decoupled", num_pairs=1)
    assert c.passes == d.passes == 3
    plan = draw_mask_plan(d, pmask, Lc, generator=gen(0))
    a, b = plan.is_masked[1, :, Lp:], plan.is_masked[2, :, Lp:]
    assert (a & b).any() and not (a | b).all(), "independent masks overlap and leave holes"
    assert not plan.is_masked[:, :, :Lp].any()
    torch.testing.assert_close(plan.weights[2], b.float() / (plan.t[2][:, None] * 2))
    with pytest.raises(ValueError, match="coupled pass count"):
        EstimatorConfig("decoupled", num_passes=5)


def test_full_mask_and_d1():
    B, Lp, Lc = 2, 400, 6
    pmask = torch.ones(B, Lp, dtype=torch.long)
    pmask[0, :100] = 0  # left padding on row 0
    fm = draw_mask_plan(EstimatorConfig("full_mask"), pmask, Lc, generator=gen(0))
    assert fm.num_passes == 1 and fm.is_masked[0, :, Lp:].all() and not fm.is_masked[0, :, :Lp].any()
    d1 = draw_mask_plan(EstimatorConfig("d1", prompt_mask_prob=0.25, num_passes=2), pmask, Lc, generator=gen(0))
    assert d1.num_passes == 2 and d1.is_masked[:, :, Lp:].all()
    assert not d1.is_masked[:, 0, :100].any(), "padding is never masked"
    frac = d1.is_masked[:, :, :Lp].float().sum() / (pmask.sum() * 2)
    assert 0.18 < float(frac) < 0.32
    torch.testing.assert_close(d1.weights, torch.full((2, B, Lc), 0.5))


def test_generator_determinism_and_no_global_rng():
    pmask = torch.ones(2, 3)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    for name in ESTIMATORS:
        cfg = EstimatorConfig(name)
        p1 = draw_mask_plan(cfg, pmask, 11, generator=gen(7))
        p2 = draw_mask_plan(cfg, pmask, 11, generator=gen(7))
        assert torch.equal(p1.is_masked, p2.is_masked) and torch.equal(p1.weights, p2.weights)
    assert torch.equal(before, torch.get_rng_state()), "library code must not touch the global RNG"


@pytest.mark.parametrize("shift", [True, False])
def test_padding_as_in_rollout(shift):
    """A left-padded row with its 2-D attention mask gets exactly the estimate of the same row unpadded;
    completions carrying EOS/pad ids after the answer are ordinary canvas tokens."""
    model = tiny_model(shift=shift, seed=1)
    g = gen(5)
    eos, pad = 1, 2
    Lc = 8
    short = torch.randint(3, MASK, (3,), generator=g)
    long_ = torch.randint(3, MASK, (6,), generator=g)
    comp = torch.randint(3, MASK, (2, Lc), generator=g)
    comp[0, 4:] = torch.tensor([eos, pad, pad, pad])  # answer ended early, canvas padded
    prompt = torch.stack([torch.cat([torch.full((3,), pad), short]), long_])  # left-padded (2, 6)
    pmask = torch.tensor([[0, 0, 0, 1, 1, 1], [1] * 6])
    ids = torch.cat([prompt, comp], 1)
    attn = torch.cat([pmask, torch.ones(2, Lc, dtype=torch.long)], 1)
    for name in ESTIMATORS:
        plan = draw_mask_plan(EstimatorConfig(name), pmask, Lc, generator=gen(9))
        with torch.no_grad():
            est = estimate_logp(model, ids, attn, plan, MASK)
            # row 0 alone, unpadded, with the same completion masks
            sub = MaskPlan(plan.is_masked[:, :1, 3:], plan.weights[:, :1], plan.t[:, :1], 3, name)
            alone = estimate_logp(model, ids[:1, 3:], None, sub, MASK)
        torch.testing.assert_close(est.logp[:1], alone.logp, atol=1e-5, rtol=1e-5)
        assert torch.isfinite(est.logp).all()


def test_gradients_flow_and_micro_batching_is_exact():
    model = tiny_model()
    model.train()
    g = gen(2)
    ids = torch.randint(0, MASK, (3, 12), generator=g)
    plan = draw_mask_plan(EstimatorConfig("coupled", num_pairs=2), torch.ones(3, 4), 8, generator=g)
    a = estimate_logp(model, ids, None, plan, MASK)
    b = estimate_logp(model, ids, None, plan, MASK, micro_batch_size=4)
    torch.testing.assert_close(a.logp, b.logp)
    a.logp.sum().backward()
    assert model.lm_head.weight.grad is not None and model.lm_head.weight.grad.abs().sum() > 0


def test_coupled_and_decoupled_have_same_expectation():
    """Monte-Carlo: both estimate the same quantity; coupled has lower per-token variance on average."""
    model = tiny_model(seed=4)
    g = gen(11)
    B, Lp, Lc = 2, 3, 10
    ids = torch.randint(0, MASK, (B, Lp + Lc), generator=g)
    pm = torch.ones(B, Lp)
    draws = {}
    with torch.no_grad():
        for name in ("coupled", "decoupled"):
            cfg = EstimatorConfig(name, full_mask_pass=False)
            plans = [draw_mask_plan(cfg, pm.repeat(1, 1), Lc, generator=g) for _ in range(300)]
            big = MaskPlan(torch.cat([p.is_masked for p in plans], 1), torch.cat([p.weights for p in plans], 1),
                           torch.cat([p.t for p in plans], 1), Lp, name)
            est = estimate_logp(model, ids.repeat(300, 1), None, big, MASK)
            draws[name] = est.logp.view(300, B, Lc)
    mc, md = draws["coupled"].mean(0), draws["decoupled"].mean(0)
    se = (draws["decoupled"].std(0) / 300 ** 0.5 + draws["coupled"].std(0) / 300 ** 0.5)
    assert ((mc - md).abs() < 4 * se + 1e-3).float().mean() > 0.9
    assert draws["coupled"].var(0).mean() < draws["decoupled"].var(0).mean()


def test_bad_config_errors():
    with pytest.raises(ValueError, match="unknown estimator"):
        EstimatorConfig("antithetic")
    with pytest.raises(ValueError, match="t_min"):
        EstimatorConfig("coupled", t_min=0.0)
    with pytest.raises(ValueError, match="does not match"):
        plan = draw_mask_plan(EstimatorConfig(), torch.ones(1, 2), 3, generator=gen(0))
        estimate_logp(tiny_model(), torch.zeros(2, 5, dtype=torch.long), None, plan, MASK)


def test_variance_benchmark_runs_and_budgets_match(tmp_path, capsys):
    """benchmarks/estimator_variance.py on tiny settings: equal pass budgets, a table, a JSON file."""
    import json

    from conftest import load_benchmark

    mod = load_benchmark("estimator_variance")
    for budget, label, cfg in mod.configurations([2, 3, 5]):
        if cfg.name != "full_mask":
            assert cfg.passes == budget, label
    out = tmp_path / "ev.json"
    assert mod.main(["--random", "--seqs", "2", "--canvas", "12", "--draws", "6", "--budgets", "2",
                     "--ref-grid", "2", "--ref-per-t", "2", "--boot", "5", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    names = [r["estimator"] for r in res["rows"]]
    assert names == ["coupled(l=1)", "decoupled(l=1)", "d1(p=0.15,x2)", "full_mask"]
    fm = res["rows"][-1]
    assert fm["tok_sd"] == 0.0, "full_mask is deterministic"
    assert all(0.0 <= r["tok_sd_lo"] <= r["tok_sd_hi"] and r["seq_sd_lo"] <= r["seq_sd_hi"] for r in res["rows"])
    assert "tok_sd" in capsys.readouterr().out
