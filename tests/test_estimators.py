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
    assert names == ["coupled(l=1)", "decoupled(l=1)", "coupled_normalized(l=1)", "d1(p=0.15,x2)", "full_mask"]
    fm = res["rows"][-1]
    assert fm["tok_sd"] == 0.0, "full_mask is deterministic"
    assert abs(fm["own_bias"]) < 1e-5, "full_mask's expectation is the exact full-mask pass"
    assert res["rows"][3]["own_bias"] is None, "d1's expectation is not derived from the clean-prompt means"
    assert all(0.0 <= r["tok_sd_lo"] <= r["tok_sd_hi"] and r["seq_sd_lo"] <= r["seq_sd_hi"] for r in res["rows"])
    assert "tok_sd" in capsys.readouterr().out


# -- coupled_normalized ----------------------------------------------------------------------------------------
class _ContextModel(torch.nn.Module):
    """A stand-in with Dream's scoring interface (``config.shift_logits``, ``model(xt, attn) -> (N, L, H)``,
    ``lm_head``) for a two-token completion ``x = [A, A]`` after a one-token prompt.

    log p(A at completion position j) is -3 when the other completion position holds [MASK] and -1 when it
    holds its token, whatever is at j itself. The hidden state is the log-probability vector
    ``[lp, log(1 - e^lp), -1e4]`` over the vocabulary {A, B, MASK} and the head is the identity, so the
    log-softmax returns lp exactly. With the AR shift, output i predicts token i + 1.
    """

    A, B, MASK = 0, 1, 2

    def __init__(self) -> None:
        super().__init__()
        from types import SimpleNamespace

        self.config = SimpleNamespace(shift_logits=True)
        self.lm_head = torch.nn.Linear(3, 3, bias=False)
        with torch.no_grad():
            self.lm_head.weight.copy_(torch.eye(3))
        self.model = self._backbone

    def _backbone(self, xt: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        N, L = xt.shape  # L = 3: prompt, c0, c1
        other_masked = torch.stack([xt[:, 2], xt[:, 1]], 1) == self.MASK  # (N, 2): for c0 look at c1 and back
        lp = torch.where(other_masked, torch.tensor(-3.0), torch.tensor(-1.0))  # (N, 2)
        h = torch.zeros(N, L, 3)
        vec = torch.stack([lp, torch.log1p(-lp.exp()), torch.full_like(lp, -1e4)], -1)  # (N, 2, 3)
        h[:, 0:2] = vec  # shift: output 0 predicts c0 (position 1), output 1 predicts c1 (position 2)
        return h


def test_coupled_normalized_by_hand():
    """Expectations worked out for _ContextModel (c(tau) = -1 - 2 tau, see draw_mask_plan's docstring).

    c(tau) = E[logp_j | j masked at ratio tau] = (1 - tau) * (-1) + tau * (-3) = -1 - 2 tau.
    coupled_normalized, no full pass: E[est | t] = t c(t) + (1 - t) c(1 - t); over t ~ U(0.2, 0.8),
      E[t^2] = Var + mean^2 = 0.6^2 / 12 + 0.25 = 0.28 = E[(1 - t)^2], so
      E = -t - 2t^2 - (1 - t) - 2(1 - t)^2 -> -1 - 2 * 0.56 = -2.12
      (= E_q c(tau) with q(tau) = 2 tau / 0.6: E_q tau = 0.56). With the full pass: (c(1) + Q) / 2
      = (-3 - 2.12) / 2 = -2.56.
    coupled (1/t weights): E[est | t] = c(t) + c(1 - t) = -4 for every t: twice a log-probability.
    And the uniform-t mean m = E_U c(t) = -2, so Q - m = -0.12 = 2 Cov(t, c(t)) = -4 Var(t) = -4 * 0.03.
    """
    model = _ContextModel()
    B = 20000
    ids = torch.tensor([[1, 0, 0]]).repeat(B, 1)  # prompt B, completion A A
    pm = torch.ones(B, 1)
    out = {}
    with torch.no_grad():
        for name, full in (("coupled_normalized", False), ("coupled_normalized", True), ("coupled", False)):
            plan = draw_mask_plan(EstimatorConfig(name, full_mask_pass=full), pm, 2, generator=gen(21))
            out[name, full] = (plan, estimate_logp(model, ids, None, plan, _ContextModel.MASK))
    plan, est = out["coupled_normalized", False]
    # per draw: the token's value is the one pass that masks it: -3 if that pass also masks the other token
    M = plan.is_masked[0, :, 1:]  # (B, 2) first half of the pair
    same_half = M[:, 0] == M[:, 1]  # both tokens in the same half -> each sees the other masked
    expected = torch.where(same_half, -3.0, -1.0)[:, None].expand(B, 2)
    torch.testing.assert_close(est.logp, expected)
    torch.testing.assert_close(plan.weights.sum(0), torch.ones(B, 2))  # weights sum to 1 per token, every draw
    se = float(est.logp.std()) / (2 * B) ** 0.5  # ~0.007
    assert abs(float(est.logp.mean()) - (-2.12)) < 5 * se
    _, est_full = out["coupled_normalized", True]
    assert abs(float(est_full.logp.mean()) - (-2.56)) < 5 * se
    plan_c, est_c = out["coupled", False]
    assert torch.equal(plan_c.is_masked, plan.is_masked), "same generator -> the same complementary masks"
    se_c = float(est_c.logp.std()) / (2 * B) ** 0.5
    assert abs(float(est_c.logp.mean()) - (-4.0)) < 5 * se_c


def test_coupled_normalized_plan_structure():
    B, Lp, Lc = 3, 4, 23
    pm = torch.ones(B, Lp)
    cfg = EstimatorConfig("coupled_normalized", num_pairs=2)
    assert cfg.passes == EstimatorConfig("coupled", num_pairs=2).passes == 5
    plan = draw_mask_plan(cfg, pm, Lc, generator=gen(4))
    ref = draw_mask_plan(EstimatorConfig("coupled", num_pairs=2), pm, Lc, generator=gen(4))
    assert torch.equal(plan.is_masked, ref.is_masked) and torch.equal(plan.t, ref.t)
    # weight 1/(lambda+1) on every pass that masks the token: full pass + one pass of each pair
    torch.testing.assert_close(plan.weights, plan.is_masked[:, :, Lp:].float() / 3)
    torch.testing.assert_close(plan.weights.sum(0), torch.ones(B, Lc))
    # a non-maskable position gets no weight
    maskable = torch.ones(B, Lc, dtype=torch.bool)
    maskable[:, -3:] = False
    p2 = draw_mask_plan(cfg, pm, Lc, generator=gen(4), completion_maskable=maskable)
    assert float(p2.weights[:, :, -3:].abs().sum()) == 0.0
    torch.testing.assert_close(p2.weights[:, :, :-3].sum(0), torch.ones(B, Lc - 3))


# -- the lean scorer equals the full-logits computation ---------------------------------------------------------
def _pair_models(shift: bool, tied: bool, seed: int) -> tuple[DreamModel, DreamModel]:
    torch.manual_seed(seed)  # test-only: model init
    cfg = DreamConfig.preset("tiny", vocab_size=V, mask_token_id=MASK, shift_logits=shift, tie_word_embeddings=tied)
    a = DreamModel(cfg)
    b = DreamModel(cfg, init_weights=False)
    b.load_state_dict(a.state_dict())
    return a, b


@pytest.mark.parametrize("shift,tied,chunk", [(True, True, 1024), (True, False, 5), (False, True, 7)])
def test_lean_scorer_equal_values_and_gradients(shift, tied, chunk):
    """completion_token_logp (head at completion positions, chunked log-softmax recomputed in backward) gives the
    GRPO loss and every parameter gradient of the full-logits computation, to fp32 rounding; padded rows, a
    prompt-masking estimator (d1) and chunk sizes that split rows included."""
    from diffucoder.diffusion.estimators import completion_token_logp, full_logits_token_logp
    from diffucoder.rl.loss import grpo_loss

    lean, full = _pair_models(shift, tied, seed=3)
    g = gen(8)
    B, Lp, Lc = 3, 6, 9
    ids = torch.randint(0, MASK, (B, Lp + Lc), generator=g)
    attn = torch.ones(B, Lp + Lc, dtype=torch.long)
    attn[0, :2] = 0  # left padding
    adv = torch.tensor([1.0, -0.5, -0.5])
    cmask = torch.ones(B, Lc)
    cmask[1, 6:] = 0
    for name in ("coupled", "d1"):
        plan = draw_mask_plan(EstimatorConfig(name, num_passes=2 if name == "d1" else None), attn[:, :Lp], Lc,
                              generator=gen(9))
        losses = []
        for model, fn in ((lean, lambda x, y, lp, a: completion_token_logp(lean, x, y, lp, a, chunk_tokens=chunk)),
                          (full, lambda x, y, lp, a: full_logits_token_logp(full, x, y, lp, a))):
            model.zero_grad(set_to_none=True)
            est = estimate_logp(model, ids, attn, plan, MASK, logp_fn=fn)
            old = est.logp.detach() - 0.3 * torch.rand(B, Lc, generator=gen(1))  # ratios away from 1 (some clipped)
            out = grpo_loss(est.logp, old, adv, cmask, ref_logp=old + 0.1, beta=0.05, epsilon_low=0.2)
            out.loss.backward()
            losses.append((est.logp.detach(), out.loss.detach(), out.clipped_tokens))
        torch.testing.assert_close(losses[0][0], losses[1][0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(losses[0][1], losses[1][1], atol=1e-6, rtol=1e-5)
        assert losses[0][2] == losses[1][2] and losses[0][2] > 0
        for (n, pa), (_, pb) in zip(lean.named_parameters(), full.named_parameters()):
            torch.testing.assert_close(pa.grad, pb.grad, atol=1e-6, rtol=1e-4, msg=f"{name}: gradient of {n}")


def test_chunked_target_logp_under_bf16_autocast():
    """Under autocast the head's matmul runs in bf16 as nn.Linear's would; the statistics stay fp32."""
    from diffucoder.diffusion.estimators import chunked_target_logp

    g = gen(2)
    h = torch.randn(2, 5, 16, generator=g, requires_grad=True)
    w = torch.randn(40, 16, generator=g, requires_grad=True)
    y = torch.randint(0, 40, (2, 5), generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        lean = chunked_target_logp(h, w, y, chunk_tokens=3)
        ref = torch.log_softmax((h @ w.t()).float(), -1).gather(-1, y[..., None])[..., 0]
    assert lean.dtype == torch.float32
    torch.testing.assert_close(lean, ref, atol=1e-3, rtol=1e-3)
    (gl_h, gl_w) = torch.autograd.grad(lean.sum(), (h, w))
    (gr_h, gr_w) = torch.autograd.grad(ref.sum(), (h, w))
    assert gl_w.dtype == w.dtype
    torch.testing.assert_close(gl_h, gr_h, atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(gl_w, gr_w, atol=2e-2, rtol=2e-2)
    with pytest.raises(ValueError, match="disagree"):
        chunked_target_logp(h, w, y[:, :3])
