"""Coupled-GRPO: hand-computed losses and advantages, configs, and a tiny trainer end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from diffucoder.rl import GRPOConfig, RLConfigError, completion_mask_from_ids, group_advantages, grpo_loss
from diffucoder.rl.loss import zero_variance_groups
from diffucoder.rl.rollout import RewardStats, left_pad, score_completions

ROOT = Path(__file__).resolve().parents[1]


# -- pure functions ------------------------------------------------------------------------------------------
def test_group_advantages_by_hand():
    r = torch.tensor([1.0, 0.0, 0.0, 2.0, 2.0, 2.0])  # two groups of G = 3
    # mean baseline: group 1 mean 1/3 -> 2/3, -1/3, -1/3; group 2 all equal -> 0
    torch.testing.assert_close(group_advantages(r, 3, "mean"), torch.tensor([2 / 3, -1 / 3, -1 / 3, 0, 0, 0]))
    # leave-one-out: 1 - 0 = 1; 0 - (1 + 0)/2 = -1/2
    torch.testing.assert_close(group_advantages(r, 3, "loo"), torch.tensor([1.0, -0.5, -0.5, 0, 0, 0]))
    # std scaling: group 1 std (unbiased) = sqrt(1/3) -> (2/3)/0.57735 = 1.1547
    a = group_advantages(r, 3, "mean", scale_rewards=True)
    assert abs(float(a[0]) - (2 / 3) / math.sqrt(1 / 3)) < 1e-3 and float(a[3:].abs().max()) == 0.0
    assert zero_variance_groups(r, 3).tolist() == [False, True]
    with pytest.raises(ValueError, match="num_generations >= 2"):
        group_advantages(r, 1)
    with pytest.raises(ValueError, match="do not split"):
        group_advantages(r, 4)


def test_grpo_loss_by_hand():
    # one sequence, two tokens; A = 1; ratios exp(0) = 1 and exp(log 2) = 2 with eps 0.5 -> clipped to 1.5
    old = torch.zeros(1, 2)
    logp = torch.tensor([[0.0, math.log(2.0)]], requires_grad=True)
    out = grpo_loss(logp, old, torch.tensor([1.0]), torch.ones(1, 2), epsilon_low=0.5)
    # per token: -min(1*1, 1*1) = -1 ; -min(2*1, 1.5*1) = -1.5 ; mean = -1.25
    assert abs(float(out.loss.detach()) + 1.25) < 1e-6
    assert out.clipped_tokens == 1.0 and out.num_tokens == 2.0
    out.loss.backward()
    # gradient flows only through the unclipped token: d/dlogp (-rho)/2 = -rho/2 = -0.5; clipped token: 0
    torch.testing.assert_close(logp.grad, torch.tensor([[-0.5, 0.0]]))
    # negative advantage, ratio 0.25 < 1 - eps: -min(0.25*-1, 0.5*-1) = 0.5, clipped
    out = grpo_loss(torch.tensor([[math.log(0.25)]]), torch.zeros(1, 1), torch.tensor([-1.0]), torch.ones(1, 1),
                    epsilon_low=0.5)
    assert abs(float(out.loss) - 0.5) < 1e-6 and out.clipped_tokens == 1.0
    # k3 KL: ref - logp = d = 1 -> e - 1 - 1 = 0.71828; masked token ignored; ratio 1, A = 0
    lp = torch.zeros(1, 2)
    out = grpo_loss(lp, lp, torch.tensor([0.0]), torch.tensor([[1, 0]]), ref_logp=torch.tensor([[1.0, 5.0]]),
                    beta=0.1)
    assert abs(float(out.loss) - 0.1 * (math.e - 2)) < 1e-6 and abs(out.kl_sum - (math.e - 2)) < 1e-6
    # an explicit normalizer (global token count) divides the sum instead
    out = grpo_loss(lp, lp, torch.tensor([0.0]), torch.tensor([[1, 0]]), ref_logp=torch.tensor([[1.0, 5.0]]),
                    beta=0.1, normalizer=4.0)
    assert abs(float(out.loss) - 0.1 * (math.e - 2) / 4) < 1e-6


def test_kl_clamp_by_hand():
    # d = ref - logp: 1 -> k3 = e - 2 (below the clamp, gradient -(e^d - 1) = 1 - e); 3 -> e^3 - 4 = 16.09 > 10:
    # clamped to 10, no gradient; 100 -> finite (the log-ratio is limited to 20 first), clamped, no gradient
    logp = torch.zeros(1, 3, requires_grad=True)
    ref = torch.tensor([[1.0, 3.0, 100.0]])
    out = grpo_loss(logp, logp.detach(), torch.tensor([0.0]), torch.ones(1, 3), ref_logp=ref, beta=0.1,
                    kl_clamp=10.0)
    assert abs(out.kl_sum - (math.e - 2 + 10 + 10)) < 1e-5 and out.kl_clamped_tokens == 2.0
    assert abs(float(out.loss.detach()) - 0.1 * (math.e - 2 + 20) / 3) < 1e-6
    out.loss.backward()
    torch.testing.assert_close(logp.grad, torch.tensor([[0.1 * (1 - math.e) / 3, 0.0, 0.0]]))
    # without the clamp, the same tokens give the unbounded k3 (inf at d = 100 in float32)
    out = grpo_loss(torch.zeros(1, 2), torch.zeros(1, 2), torch.tensor([0.0]), torch.ones(1, 2),
                    ref_logp=ref[:, :2], beta=0.1)
    assert abs(out.kl_sum - (math.e - 2 + math.exp(3) - 4)) < 1e-4 and out.kl_clamped_tokens == 0.0
    with pytest.raises(ValueError, match="kl_clamp must be > 0"):
        grpo_loss(torch.zeros(1, 1), torch.zeros(1, 1), torch.tensor([0.0]), torch.ones(1, 1), kl_clamp=0.0)
    with pytest.raises(RLConfigError, match="kl_clamp"):
        GRPOConfig(kl_clamp=-1.0)
    with pytest.raises(RLConfigError, match="learning_rate must be >= 0"):
        GRPOConfig(learning_rate=-1e-4)
    assert GRPOConfig(learning_rate=0.0).learning_rate == 0.0  # the lr = 0 control


def test_completion_mask_handles_eos_pad_and_full_canvas():
    eos, pad = 1, 2
    ids = torch.tensor([[5, 6, eos, pad, pad], [5, 6, 7, 8, 9], [eos, pad, pad, pad, pad], [5, pad, 9, eos, 3]])
    mask, truncated = completion_mask_from_ids(ids, [eos, pad])
    assert mask.tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0], [1, 1, 0, 0, 0]]
    assert truncated.tolist() == [False, True, False, False]


def test_left_pad_and_reward_failures_are_counted():
    pb = left_pad([[3, 4, 5], [7]], pad_id=0)
    assert pb.input_ids.tolist() == [[3, 4, 5], [0, 0, 7]] and pb.attention_mask.tolist() == [[1, 1, 1], [0, 0, 1]]

    def good(completions, **kw):
        return [float(len(c)) for c in completions]

    def raises(completions, **kw):
        raise RuntimeError("sandbox down")

    def partial(completions, **kw):
        return [None, float("nan")]

    stats = [RewardStats() for _ in range(3)]
    total, per = score_completions(["ab", "c"], [{"x": 1}, {"x": 2}], [good, raises, partial], [1.0, 2.0, 1.0],
                                   stats)
    assert total.tolist() == [2.0, 1.0] and per[:, 1].abs().sum() == 0
    assert stats[1].raised == 1 and "sandbox down" in stats[1].messages[0] and stats[2].bad_values == 2


# -- configs --------------------------------------------------------------------------------------------------
def test_config_yaml_overrides_and_errors(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("num_generations: 4\nper_device_train_batch_size: 8\nbeta: 0.02\n")
    c = GRPOConfig.from_yaml(p, ["beta=0", "estimator=decoupled", "reward_weights=[1.0, 3.0]"])
    assert c.beta == 0 and c.estimator == "decoupled" and c.reward_weights == [1.0, 3.0] and c.num_generations == 4
    with pytest.raises(RLConfigError, match="unknown key"):
        GRPOConfig.from_yaml(p, ["num_generation=3"])
    with pytest.raises(RLConfigError, match="multiple of num_generations"):
        GRPOConfig.from_yaml(p, ["per_device_train_batch_size=6"])
    with pytest.raises(RLConfigError, match="estimator"):
        GRPOConfig.from_yaml(p, ["estimator=antithetic"])


def test_shipped_rl_configs_load():
    files = sorted((ROOT / "configs").glob("rl_*.yaml"))
    assert files, "configs/rl_*.yaml are shipped"
    for f in files:
        first = f.read_text().splitlines()[0]
        assert first.startswith("#") and ("diffucoder rl" in first or "torchrun" in first), f"{f} headed by command"
        GRPOConfig.from_yaml(f)


# -- the trainer on a tiny model ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_setup():
    from diffucoder.model import DreamConfig, DreamModel
    from diffucoder.tasks import format_answer, generate_tasks, to_rl_record
    from diffucoder.tokenizer import train_tokenizer

    tasks = generate_tasks(12, "train", seed=0)
    tok = train_tokenizer([format_answer(t) + t.question for t in tasks] * 4, vocab_size=1000)
    cfg = DreamConfig.preset("tiny", vocab_size=tok.vocab_size, mask_token_id=tok.mask_token_id,
                             eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)  # test-only: model init
    state = DreamModel(cfg).state_dict()

    def make_model():
        m = DreamModel(cfg, init_weights=False)
        m.load_state_dict(state)
        return m

    rows = [to_rl_record(t) for t in tasks]
    return tok, make_model, rows


def length_reward(completions, **kw):
    """A real, cheap reward: longer answers (up to 40 chars) score higher."""
    return [min(len(c), 40) / 40 for c in completions]


def constant_reward(completions, **kw):
    return [1.0 for _ in completions]


def _cfg(tmp_path, **kw) -> GRPOConfig:
    base = dict(output_dir=str(tmp_path / "run"), num_generations=3, per_device_train_batch_size=6, max_steps=2,
                num_iterations=2, max_completion_length=10, diffusion_steps=5, learning_rate=5e-3, beta=0.05,
                reward_funcs=["length", "constant"], reward_weights=[1.0, 0.5], save_steps=0, disable_tqdm=True,
                ref_model_sync_steps=1, max_prompt_length=400, warmup_ratio=0.25, chat_template=False)
    base.update(kw)
    return GRPOConfig(**base)


def test_training_updates_every_parameter_and_counts_bad_input(tiny_setup, tmp_path):
    from diffucoder.rl import train_grpo

    tok, make_model, rows = tiny_setup
    model = make_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}

    def flaky(completions, **kw):
        raise RuntimeError("reward backend failed")

    bad_rows = rows + [{"question": "no tests"}, {"question": "empty", "test_cases": []}, "not a dict"]
    res = train_grpo(_cfg(tmp_path, reward_funcs=["length", "flaky"]), model=model, tokenizer=tok, rows=bad_rows,
                     reward_funcs=[length_reward, flaky])
    assert res.steps == 2 and res.stopped_early is None
    changed = [k for k, v in res.model.state_dict().items() if not torch.equal(v, before[k])]
    assert sorted(changed) == sorted(before), "every parameter moves"
    c = res.counters
    assert c["rows_skipped_no_tests"] == 2 and c["rows_skipped_bad"] == 1
    assert c["reward_raised"] == 1 and c["completions"] == 6 and c["groups"] == 2
    log = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2]
    for key in ("reward_mean", "reward_std", "zero_variance_frac", "clip_frac", "kl", "completion_length",
                "rollout_tok_s", "update_tok_s", "truncated_frac", "lr"):
        assert key in log[0]
    assert log[0]["ratio_mean"] == pytest.approx(1.0) and log[0]["kl"] == pytest.approx(0.0, abs=1e-6)
    assert log[1]["kl"] > 0, "second iteration moves away from the reference"
    assert (res.final_model_dir / "config.json").is_file() and (res.final_model_dir / "tokenizer.json").is_file()


def test_equal_rewards_and_nonfinite_updates_do_not_crash(tiny_setup, tmp_path):
    from diffucoder.rl import GRPOTrainer

    tok, make_model, rows = tiny_setup
    cfg = _cfg(tmp_path, reward_funcs=["constant"], reward_weights=[1.0], beta=0.0, max_steps=1)
    tr = GRPOTrainer(cfg, model=make_model(), tokenizer=tok, rows=rows, reward_funcs=[constant_reward])
    batch = tr._make_batch(0)
    assert tr.counters["zero_variance_groups"] == 2 and float(batch.advantages.abs().max()) == 0.0
    before = {k: v.clone() for k, v in tr.model.state_dict().items()}
    batch.advantages[0] = float("nan")
    upd = tr._update(batch, 0)
    assert upd["skipped"] == 1.0 and tr.counters["nonfinite_skipped_steps"] == 1
    assert all(torch.equal(v, before[k]) for k, v in tr.model.state_dict().items()), "skipped update changes nothing"
    batch.advantages[0] = 0.0
    upd = tr._update(batch, 1)
    assert upd["skipped"] == 0.0 and math.isfinite(upd["grad_norm"])
    # a finite loss whose gradient is not: caught from the gradient norm, nothing changes
    batch.advantages[0] = 1.0
    before = {k: v.clone() for k, v in tr.model.state_dict().items()}
    hook = tr.model.model.norm.weight.register_hook(lambda g: g * float("inf"))
    upd = tr._update(batch, 1)
    hook.remove()
    assert upd["skipped"] == 1.0 and upd["loss"] == upd["loss"] and tr.counters["nonfinite_skipped_steps"] == 2
    assert all(torch.equal(v, before[k]) for k, v in tr.model.state_dict().items())


@pytest.mark.parametrize("estimator", ["decoupled", "full_mask", "d1", "coupled_normalized"])
def test_other_estimators_train(tiny_setup, tmp_path, estimator):
    from diffucoder.rl import train_grpo

    tok, make_model, rows = tiny_setup
    res = train_grpo(_cfg(tmp_path, estimator=estimator, max_steps=1, num_iterations=1, beta=0.0,
                          save_final_model=False), model=make_model(), tokenizer=tok, rows=rows,
                     reward_funcs=[length_reward, constant_reward])
    assert res.steps == 1 and not res.history[0]["skipped_update"]


def test_exact_resume_mid_rollout_batch(tiny_setup, tmp_path):
    from diffucoder.rl import train_grpo

    tok, make_model, rows = tiny_setup
    kw = dict(max_steps=4, num_iterations=2, save_steps=3, save_final_model=False)
    full = train_grpo(_cfg(tmp_path / "a", **{**kw, "save_steps": 0}), model=make_model(), tokenizer=tok, rows=rows,
                      reward_funcs=[length_reward, constant_reward])

    class Crash(Exception):
        pass

    def crash_at_4(rec):
        if rec["step"] == 4:
            raise Crash

    with pytest.raises(Crash):
        train_grpo(_cfg(tmp_path / "b", **kw), model=make_model(), tokenizer=tok, rows=rows,
                   reward_funcs=[length_reward, constant_reward], log_fn=crash_at_4)
    # checkpoint-3 sits inside a rollout batch (mu = 2): the batch, its masks and old log-probs are restored
    with pytest.raises(RLConfigError, match="already holds checkpoints"):
        train_grpo(_cfg(tmp_path / "b", **kw), model=make_model(), tokenizer=tok, rows=rows,
                   reward_funcs=[length_reward, constant_reward])
    resumed = train_grpo(_cfg(tmp_path / "b", resume_from_checkpoint="latest", **kw), model=make_model(),
                         tokenizer=tok, rows=rows, reward_funcs=[length_reward, constant_reward])
    assert resumed.steps == 4
    for (k, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), f"{k} differs after resume"
    log = [json.loads(x) for x in (tmp_path / "b" / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4]
    assert log[3]["loss"] == pytest.approx(full.history[3]["loss"], rel=1e-6, abs=1e-9)


# -- real rewards through the sandbox pool ---------------------------------------------------------------------
def test_code_rewards_through_the_sandbox_pool(tiny_setup, tmp_path):
    from diffucoder.rl import GRPOTrainer
    from diffucoder.tasks import format_answer, generate_tasks, to_rl_record

    tok, make_model, rows = tiny_setup
    cfg = _cfg(tmp_path, reward_funcs=["code_format", "code"], reward_weights=[0.5, 2.0], beta=0.0, max_steps=1,
               num_iterations=1)
    tr = GRPOTrainer(cfg, model=make_model(), tokenizer=tok, rows=rows)
    try:
        task = generate_tasks(1, "train", seed=3)[0]
        good = format_answer(task)
        wrong = good.replace("return", "return 1 +", 1)
        texts = [good, wrong, "no code block at all", "```python\ndef broken(:\n```\n"]
        rec = to_rl_record(task)
        total, per = score_completions(texts, [rec] * 4, tr.rewards, cfg.reward_weights, tr.reward_stats)
        # canonical answer: 0.5 * 1 + 2.0 * 1; wrong answer: format 1, some tests fail; no block: 0;
        # syntax error: format 0.5 and no code reward
        assert total[0].item() == pytest.approx(2.5) and per[1, 0] == 1.0 and per[1, 1] < 1.0
        assert total[2].item() == 0.0 and total[3].item() == pytest.approx(0.25)
        # a rollout batch of an untrained model: rewards are scored (all zero -> zero-variance groups, counted)
        batch = tr._make_batch(0)
        assert batch.metrics["n"] == 6 and tr.counters["zero_variance_groups"] >= 0
    finally:
        tr.close()


def test_bucketed_all_reduce_packs_tensors_and_restores_them():
    from diffucoder.rl.trainer import all_reduce_bucketed

    g = torch.Generator().manual_seed(0)
    grads = [torch.randn(s, generator=g) for s in [(3, 4), (5,), (2, 2, 2), (100,), (1,)]] + [torch.ones(2).double()]
    expected = [2 * t for t in grads]
    calls = []

    def double_(t):  # stands in for a SUM all-reduce over two identical ranks
        calls.append(t.numel())
        t.mul_(2)

    # 120-byte buckets of fp32: [12 + 5 + 8 = 25 floats], [100 floats alone: larger than a bucket], [1], [fp64 2]
    n = all_reduce_bucketed(grads, double_, bucket_bytes=120)
    assert n == len(calls) == 4 and calls == [25, 100, 1, 2]
    for a, b in zip(grads, expected):
        assert torch.equal(a, b)
    assert all_reduce_bucketed([], double_) == 0


def test_lr_schedule_warmup_then_cosine_to_floor():
    from diffucoder.rl.trainer import lr_factor

    c = GRPOConfig(max_steps=10, warmup_ratio=0.2, lr_scheduler_type="cosine_with_min_lr", min_lr_rate=0.1,
                   num_generations=2, per_device_train_batch_size=2)
    f = [lr_factor(s, c) for s in range(10)]
    assert f[0] == pytest.approx(0.5) and f[1] == pytest.approx(1.0)  # 2 warm-up steps: 1/2, 2/2
    # after warm-up: 0.1 + 0.9 * 0.5 * (1 + cos(pi * k / 8)); k = 4 -> 0.55
    assert f[6] == pytest.approx(0.55) and all(a >= b for a, b in zip(f[1:], f[2:])) and f[-1] > 0.1
    c2 = GRPOConfig(max_steps=4, lr_scheduler_type="constant", num_generations=2, per_device_train_batch_size=2)
    assert [lr_factor(s, c2) for s in range(4)] == [1.0] * 4


def test_grpo_memory_benchmark_variants_compute_the_same_step():
    """benchmarks/grpo_memory.py: the 'before' (full logits) and 'after' (lean) variants give the same loss and
    gradient norm on a shrunken model, and report their phases."""
    import argparse

    from conftest import load_benchmark

    mod = load_benchmark("grpo_memory")
    figs = {}
    for variant in ("before", "after"):
        args = argparse.Namespace(variant=variant, layers=1, vocab=300, rows=2, prompt=12, completion=6,
                                  gradient_checkpointing=True, threads=1)
        figs[variant] = mod.run_variant(args)
    b, a = figs["before"], figs["after"]
    for key in ("score_s", "score_peak_gib", "train_s", "train_peak_gib", "train_extra_gib"):
        assert key in a and a[key] >= 0
    assert a["finite"] == b["finite"] == 1.0
    assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-6)
    assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4)
    assert a["tokens"] == 3 * 2 * 18
