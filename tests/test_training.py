"""The training loop in-process on tiny models: smoke, split invariance, SFT, AR adaptation, noised rows."""

import json
from pathlib import Path

import pytest
import torch

from diffucoder.data.sft import SFTExample, collate_sft, encode_examples, parse_record
from diffucoder.model import DreamModel
from diffucoder.training import ConfigError, load_config, train
from diffucoder.training.config import DiffusionSection
from diffucoder.training.data import BatchOrder, lr_lambda, noise_rows

TINY = ["data.max_documents=12", "data.seq_len=32", "tokenizer.vocab_size=600", "optim.global_batch_size=8",
        "optim.micro_batch_size=4", "optim.warmup_steps=1", "eval.num_sequences=4", "eval.batch_size=4",
        "logging.progress=false", "logging.every=1", "checkpoint.every=0"]


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    from diffucoder.data.packing import load_texts
    from diffucoder.tokenizer import train_tokenizer

    d = tmp_path_factory.mktemp("tok")
    train_tokenizer(load_texts(["stdlib"], max_documents=12), vocab_size=600).save_pretrained(d)
    return d


def cfg_for(tmp_path, tokenizer_dir, *extra):
    return load_config(None, [*TINY, f"run_dir={tmp_path / 'run'}", f"tokenizer.path={tokenizer_dir}", *extra])


def params(path: Path) -> dict[str, torch.Tensor]:
    return DreamModel.from_pretrained(path, torch_dtype=torch.float32).state_dict()


def test_few_steps_change_every_parameter_and_write_run_folder(tmp_path, tokenizer_dir):
    cfg = cfg_for(tmp_path, tokenizer_dir, "optim.steps=3", "eval.every=2")
    res = train(cfg)
    run = tmp_path / "run"
    init = cfg_for(tmp_path / "init", tokenizer_dir, "optim.steps=1", "optim.lr=1e-12", "optim.warmup_steps=0",
                   "optim.weight_decay=0.0")
    before = params(train(init).final_path)
    after = params(res.final_path)
    for name, p in after.items():
        assert not torch.allclose(p, before[name]), f"{name} did not change"
    assert (run / "config.yaml").is_file() and load_config(run / "config.yaml").optim.steps == 3
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3]
    assert all(r["tokens_per_s"] > 0 for r in rows if "loss" in r)
    assert [r["step"] for r in rows if "eval/masked_ce" in r] == [2, 3]
    assert res.steps == 3 and res.tokens_seen == 3 * 8 * 32
    assert res.eval["unigram_masked_ce"] > 0 and res.unigram_baseline == res.eval["unigram_masked_ce"]
    # the final folder is a complete model + tokenizer
    assert (res.final_path / "tokenizer.json").is_file()
    model = DreamModel.from_pretrained(res.final_path)
    assert model.config.mask_token_id is not None and model.config.shift_logits


def test_microbatch_split_gives_the_same_update(tmp_path, tokenizer_dir):
    a = train(cfg_for(tmp_path / "a", tokenizer_dir, "optim.steps=2", "optim.micro_batch_size=8",
                      "diffusion.t_sampling=antithetic"))
    b = train(cfg_for(tmp_path / "b", tokenizer_dir, "optim.steps=2", "optim.micro_batch_size=2",
                      "diffusion.t_sampling=antithetic"))
    pa, pb = params(a.final_path), params(b.final_path)
    for k in pa:
        assert torch.allclose(pa[k], pb[k], atol=1e-5), k
    assert a.final_loss == pytest.approx(b.final_loss, rel=1e-5)


def test_resume_never_refuses_existing_checkpoints(tmp_path, tokenizer_dir):
    train(cfg_for(tmp_path, tokenizer_dir, "optim.steps=2", "checkpoint.every=1", "eval.every=0"))
    with pytest.raises(ConfigError, match="resume"):
        train(cfg_for(tmp_path, tokenizer_dir, "optim.steps=3", "resume=never"))
    # the last step is checkpointed too, so a finished run can be extended (optim.steps=3, resume=auto)
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["step_00000001",
                                                                                    "step_00000002"]
    # extending it changes the config (the LR schedule): refused, naming the key, unless allowed explicitly
    with pytest.raises(ConfigError, match=r"optim.steps: 2 -> 3.*--allow-config-change"):
        train(cfg_for(tmp_path, tokenizer_dir, "optim.steps=3", "checkpoint.every=1", "eval.every=0"))
    res = train(cfg_for(tmp_path, tokenizer_dir, "optim.steps=3", "checkpoint.every=1", "eval.every=0"),
                allow_config_change=True)
    assert res.resumed_from == 2 and res.steps == 3
    # keep_last=2: only the newest checkpoints remain
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["step_00000002",
                                                                                    "step_00000003"]
    with pytest.raises(ConfigError, match="seed"):
        train(cfg_for(tmp_path, tokenizer_dir, "optim.steps=4", "seed=1"))


def test_noise_rows_conditions_truncation_and_annealing():
    x0 = torch.arange(1, 41).view(2, 20)
    t = torch.tensor([1.0, 1.0])  # mask every maskable position
    diff = DiffusionSection(eps=1e-3)
    r = noise_rows(x0, torch.tensor([5, 0]), t, [(0, "a"), (0, "b")], mask_token_id=99, pad_token_id=0,
                   shift=True, diff=diff, step=0)
    # row 0: prompt (5 tokens) clean, the rest masked; row 1: only position 0 (shift) clean
    assert r.is_masked[0].int().tolist() == [0] * 5 + [1] * 15
    assert r.is_masked[1].int().tolist() == [0] + [1] * 19
    assert r.attention_mask is None
    # progressive conditioning: with probability 0 no row keeps its prompt
    r0 = noise_rows(x0, torch.tensor([5, 5]), t, [(0, "a"), (0, "b")], mask_token_id=99, pad_token_id=0,
                    shift=True, diff=diff, step=0, condition_prob=0.0)
    assert bool(r0.is_masked[:, 1:].all())
    # truncation for every row: padding after a random length, hidden from attention and never scored
    tr = noise_rows(x0, torch.zeros(2, dtype=torch.long), t, [(1, i) for i in range(2)], mask_token_id=99,
                    pad_token_id=0, shift=False, diff=DiffusionSection(random_truncation_prob=1.0), step=0)
    assert tr.attention_mask is not None and tr.attention_mask.shape == (2, 20)
    assert torch.equal(tr.maskable, tr.attention_mask.bool())
    assert bool((tr.x0[~tr.attention_mask.bool()] == 0).all())
    # AR adaptation at step 0 of 10: exactly causal; at step 10: full (no mask)
    ad = DiffusionSection(anneal_steps=10)
    causal = noise_rows(x0, torch.zeros(2, dtype=torch.long), t, [(0, 0), (0, 1)], mask_token_id=99,
                        pad_token_id=0, shift=True, diff=ad, step=0).attention_mask
    assert torch.equal(causal[0, 0], torch.ones(20, 20, dtype=torch.bool).tril())
    assert noise_rows(x0, torch.zeros(2, dtype=torch.long), t, [(0, 0), (0, 1)], mask_token_id=99,
                      pad_token_id=0, shift=True, diff=ad, step=10).attention_mask is None
    # same keys -> same noise
    again = noise_rows(x0, torch.tensor([5, 0]), torch.tensor([0.5, 0.5]), [(0, "a"), (0, "b")],
                       mask_token_id=99, pad_token_id=0, shift=True, diff=diff, step=0)
    again2 = noise_rows(x0, torch.tensor([5, 0]), torch.tensor([0.5, 0.5]), [(0, "a"), (0, "b")],
                        mask_token_id=99, pad_token_id=0, shift=True, diff=diff, step=0)
    assert torch.equal(again.xt, again2.xt)


def test_stdlib_exclude_and_packing():
    from diffucoder.data.packing import load_texts, pack_documents, split_heldout

    everything = load_texts(["stdlib"], max_documents=40)
    kept = load_texts(["stdlib"], max_documents=40, stdlib_exclude=["_*"])
    assert len(kept) == 40 and not set(kept) & {t for t in everything if t not in kept} and kept != everything
    rows = pack_documents([[1, 2, 3], [4, 5]], seq_len=3, separator_id=0)
    assert rows.tolist() == [[1, 2, 3], [0, 4, 5]]  # the trailing separator does not fill a row: dropped
    train_docs, held = split_heldout([f"doc {i}" for i in range(200)], 0.1)
    assert 5 <= len(held) <= 40 and len(train_docs) + len(held) == 200
    assert split_heldout([f"doc {i}" for i in range(200)], 0.1) == (train_docs, held)


def test_batch_order_is_a_permutation_per_epoch():
    order = BatchOrder(10, 4, seed=3)
    seen = order.indices(0) + order.indices(1) + order.indices(2)[:2]
    assert sorted(seen) == list(range(10))
    assert order.indices(1) == BatchOrder(10, 4, seed=3).indices(1)
    assert order.indices(0) != BatchOrder(10, 4, seed=4).indices(0)


def test_grouped_batch_order_draws_each_batch_from_one_group():
    groups = ["easy"] * 30 + ["medium"] * 9
    order = BatchOrder(39, 4, seed=3, groups=groups)
    assert order.batches_per_epoch == 8 + 3  # ceil(30 / 4) + ceil(9 / 4)
    epoch = [order.indices(s) for s in range(order.batches_per_epoch)]
    assert all(len(b) == 4 and len({groups[i] for i in b}) == 1 for b in epoch)
    assert set(i for b in epoch for i in b) == set(range(39))  # every row once an epoch (plus the fill-ups)
    assert sum(groups[b[0]] == "medium" for b in epoch) == 3
    again = BatchOrder(39, 4, seed=3, groups=groups)
    assert [again.indices(s) for s in range(20)] == [order.indices(s) for s in range(20)]  # a resume's batches
    assert order.indices(order.batches_per_epoch) != epoch[0]  # a new shuffle the next epoch
    assert order.epoch(order.batches_per_epoch) == 1.0
    # one group is the plain order
    assert BatchOrder(10, 4, 3, groups=["a"] * 10).indices(2) == BatchOrder(10, 4, 3).indices(2)
    with pytest.raises(ValueError, match="3 group labels for 10 rows"):
        BatchOrder(10, 4, 3, groups=["a", "b", "c"])


def test_sft_batch_groups_by_tier_in_the_loop(tmp_path, tokenizer_dir):
    from diffucoder.tokenizer import load_tokenizer
    from diffucoder.training import distributed as D
    from diffucoder.training.loop import build_data

    cfg = cfg_for(tmp_path, tokenizer_dir, "task=sft", "sft.synthetic_tasks=40", "sft.synthetic_tiers=[easy,medium]",
                  "sft.max_length=400", "sft.batch_groups=source", "sft.heldout_fraction=0.1")
    (tmp_path / "run").mkdir()
    data = build_data(cfg, load_tokenizer(tokenizer_dir), tmp_path / "run", D.DistInfo(0, 1, 0, 1, torch.device("cpu")))
    assert set(data.train_sources) == {"synthetic:easy", "synthetic:medium"}
    assert data.description["train_sources"]["synthetic:easy"] == data.train_sources.count("synthetic:easy")
    res = train(cfg_for(tmp_path, tokenizer_dir, "task=sft", "sft.synthetic_tasks=40", "optim.steps=2",
                        "sft.synthetic_tiers=[easy,medium]", "sft.max_length=400", "sft.batch_groups=source",
                        "sft.padding=flexible"))
    assert res.steps == 2
    with pytest.raises(ConfigError, match="sft.batch_groups=source needs unpacked rows"):
        cfg_for(tmp_path, tokenizer_dir, "task=sft", "sft.synthetic_tasks=4", "sft.batch_groups=source",
                "sft.packing=true")


def test_lr_schedule_warmup_then_cosine():
    f = lr_lambda(warmup_steps=4, total_steps=14, min_lr_ratio=0.1)
    assert [f(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert f(9) == pytest.approx(0.55)  # halfway through the cosine: 0.1 + 0.9 * 0.5
    assert f(14) == pytest.approx(0.1)


def test_sft_records_collate_and_train(tmp_path, tokenizer_dir):
    from diffucoder.tokenizer import load_tokenizer

    tok = load_tokenizer(tokenizer_dir)
    with pytest.raises(ValueError, match="assistant"):
        parse_record({"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]})
    with pytest.raises(ValueError, match="needs 'messages'"):
        parse_record({"question": "x"})
    recs = [parse_record({"prompt": f"add {i} and 1", "completion": f"return {i} + 1"}) for i in range(12)]
    recs.append(parse_record({"messages": [{"role": "user", "content": "hi"},
                                           {"role": "assistant", "content": "def f(): pass"}]}))
    ex = encode_examples(recs, tok)
    assert ex[0].answer_ids[-1] == tok.im_end_id
    assert tok.decode(ex[0].prompt_ids).endswith("<|im_start|>assistant\n")
    b = collate_sft(ex[:2], max_length=64, pad_id=tok.pad_token_id)
    assert b.x0.shape == (2, 64) and b.prompt_len.tolist() == [len(e.prompt_ids) for e in ex[:2]]
    n = len(ex[0].prompt_ids) + len(ex[0].answer_ids)
    assert bool((b.x0[0, n:] == tok.pad_token_id).all())
    flex = collate_sft([SFTExample([1, 2], [3]), SFTExample([1], [3, 4, 5])], 64, 0, padding="flexible")
    assert flex.x0.shape == (2, 5)

    path = tmp_path / "sft.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"add {i} and 1", "completion": f"return {i} + 1"}) + "\n"
                            for i in range(40)))
    res = train(cfg_for(tmp_path, tokenizer_dir, "task=sft", f"sft.files=[{path}]", "sft.max_length=64",
                        "optim.steps=2", "sft.heldout_fraction=0.2", "sft.progressive_condition_steps=2"))
    assert res.steps == 2 and res.eval["masked_tokens"] > 0


def test_ar_adaptation_from_a_qwen2_folder(tmp_path, tokenizer_dir):
    transformers = pytest.importorskip("transformers")
    from diffucoder.tokenizer import load_tokenizer

    tok = load_tokenizer(tokenizer_dir)
    qcfg = transformers.Qwen2Config(vocab_size=640, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                                    tie_word_embeddings=False)
    torch.manual_seed(0)
    qdir = tmp_path / "qwen"
    transformers.Qwen2ForCausalLM(qcfg).save_pretrained(qdir, safe_serialization=True)
    tok.save_pretrained(qdir)
    before = params_from_qwen = DreamModel.from_pretrained(qdir, torch_dtype=torch.float32).state_dict()
    res = train(cfg_for(tmp_path, tokenizer_dir, "task=adapt", f"model.init_from={qdir}",
                        "diffusion.anneal_steps=4", "diffusion.random_truncation_prob=0.5",
                        "diffusion.clean_prefix_prob=0.5", "optim.steps=2"))
    final = DreamModel.from_pretrained(res.final_path)
    assert final.config.shift_logits and final.config.model_type == "Dream"
    assert final.config.mask_token_id == tok.mask_token_id
    after = final.state_dict()
    assert set(after) == set(params_from_qwen)
    assert not torch.allclose(after["model.layers.0.mlp.up_proj.weight"], before["model.layers.0.mlp.up_proj.weight"])


def test_plain_masked_ce_weighting_trains_unweighted_and_evaluates_the_elbo():
    from diffucoder.model import DreamConfig
    from diffucoder.training.loop import DiffusionObjective

    torch.manual_seed(0)
    model = DreamModel(DreamConfig.preset("tiny", vocab_size=50, mask_token_id=49))
    x0 = torch.randint(0, 49, (2, 12))
    is_masked = torch.zeros(2, 12, dtype=torch.bool)
    is_masked[0, 3:6] = True
    is_masked[1, 7:9] = True
    xt = x0.masked_fill(is_masked, 49)
    t = torch.tensor([0.25, 0.5])
    maskable = torch.ones(2, 12, dtype=torch.bool)
    elbo = DiffusionObjective(model, "elbo").train()(xt, x0, is_masked, t, maskable)
    plain = DiffusionObjective(model, "none").train()(xt, x0, is_masked, t, maskable)
    assert torch.allclose(plain[0], plain[1])  # weighted sum == plain CE sum
    assert torch.allclose(plain[1], elbo[1]) and elbo[0] > 2 * elbo[1]  # weights 4 and 2 in the ELBO
    evaluated = DiffusionObjective(model, "none").eval()(xt, x0, is_masked, t, maskable)
    assert torch.allclose(evaluated[0], elbo[0])  # held-out evaluation reports the ELBO either way
    with pytest.raises(ValueError, match="loss_weighting"):
        DiffusionObjective(model, "inverse")
    with pytest.raises(ConfigError, match="loss_weighting"):
        load_config(None, ["diffusion.loss_weighting=inverse"])


def test_sft_synthetic_tiers_weight_the_task_mix():
    from diffucoder.data.sft import parse_record
    from diffucoder.tasks import generate_tasks, to_sft_record
    from diffucoder.training.config import ConfigError
    from diffucoder.training.loop import _synthetic_records

    easy = _synthetic_records(6, 0, ["easy"])
    assert easy == [("easy", parse_record(to_sft_record(t))) for t in generate_tasks(6, "train", 0, ("easy",))]
    weighted = generate_tasks(8, "train", 0, ("easy", "easy", "hard"))
    assert [t.tier for t in weighted].count("easy") >= 5
    with pytest.raises(ConfigError, match="unknown tier.*'expert'"):
        _synthetic_records(3, 0, ["easy", "expert"])
