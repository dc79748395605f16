"""Packed SFT rows: first-fit packing, and a packed example computed exactly as it would be alone.

The central property: several examples in one row with a block-diagonal attention mask and position ids that
restart at 0 give each example the logits and the loss it has as a row of its own (fp32), with its own noise
level and masks, and with the AR shift never predicting an example's first token from the previous example.
"""

import json
import random
import shutil

import pytest
import torch

from diffucoder.data.sft import (SFTExample, collate_packed, first_fit_pack, fits, segment_length)
from diffucoder.diffusion.losses import model_loss_sums
from diffucoder.model import DreamConfig, DreamModel
from diffucoder.training import load_config, train
from diffucoder.training.config import DiffusionSection
from diffucoder.training.data import (PackedSFTRows, noise_packed_rows, noise_rows, step_rows, step_t)

MASK, PAD = 95, 94


def naive_first_fit(lengths, row_length, order):
    """The textbook O(n * rows) first fit, as the reference for the segment-tree version."""
    rows, free = [], []
    for i in order:
        for r in range(len(rows)):
            if free[r] >= lengths[i]:
                rows[r].append(i)
                free[r] -= lengths[i]
                break
        else:
            rows.append([i])
            free.append(row_length - lengths[i])
    return rows


def test_first_fit_matches_the_textbook_version_and_places_every_item_once():
    rng = random.Random(0)
    for _ in range(300):
        n, R = rng.randint(1, 50), rng.randint(4, 40)
        lengths = [rng.randint(1, R) for _ in range(n)]
        order = list(range(n))
        rng.shuffle(order)
        rows = first_fit_pack(lengths, R, order)
        assert rows == naive_first_fit(lengths, R, order)
        assert sorted(i for r in rows for i in r) == list(range(n))
        assert all(sum(lengths[i] for i in r) <= R for r in rows)
    # worked by hand: 6 goes to row 0 (free 10); 5 opens row 1; 4 fits row 0 (free 4); 3 fits row 1 (free 5)
    assert first_fit_pack([6, 5, 4, 3], 10, [0, 1, 2, 3]) == [[0, 2], [1, 3]]
    with pytest.raises(ValueError, match="item 1 has length 11"):
        first_fit_pack([3, 11], 10, [0, 1])


def test_segment_lengths_keep_at_least_one_pad_target():
    e = SFTExample([1, 2, 3], [4, 5])  # prompt 3, answer 2 (ending with <|im_end|>)
    assert segment_length(e) == 3 + 2 + 1  # one pad target
    assert segment_length(e, answer_length=8) == 3 + 8  # answer region padded to 8
    assert segment_length(e, answer_length=2) == 3 + 3  # never fewer than one pad target
    assert fits(e, 6) and not fits(e, 5) and not fits(e, 10, answer_length=8)
    b = collate_packed([[e, SFTExample([7], [8])]], 12, PAD, answer_length=3)
    assert b.x0.tolist() == [[1, 2, 3, 4, 5, PAD, 7, 8, PAD, PAD, PAD, PAD]]
    assert [(s.start, s.prompt_len, s.length) for s in b.segments[0]] == [(0, 3, 6), (6, 1, 4)]
    with pytest.raises(ValueError, match="more than 8 tokens"):
        collate_packed([[e, e]], 8, PAD)


def tiny_model(shift: bool) -> DreamModel:
    torch.manual_seed(0)
    cfg = DreamConfig.preset("tiny", vocab_size=96, mask_token_id=MASK, pad_token_id=PAD, shift_logits=shift)
    return DreamModel(cfg).eval()


def examples(n: int, seed: int = 0) -> list[SFTExample]:
    g = random.Random(seed)
    return [SFTExample([g.randrange(90) for _ in range(g.randint(3, 9))],
                       [g.randrange(90) for _ in range(g.randint(2, 7))]) for _ in range(n)]


DIFFS = {
    "plain": DiffusionSection(),
    "llada-extras": DiffusionSection(random_truncation_prob=0.5, clean_prefix_prob=0.5),
    "annealing": DiffusionSection(anneal_steps=10),
}


CASES = [(True, "plain", 1.0), (True, "plain", 0.0), (False, "plain", 1.0), (True, "llada-extras", 1.0),
         (False, "llada-extras", 0.0), (True, "annealing", 0.0)]


@pytest.mark.parametrize("shift,diff_name,condition_prob", CASES,
                         ids=[f"{'shift' if s else 'no-shift'}-{d}-{'prompt-clean' if c else 'prompt-noised'}"
                              for s, d, c in CASES])
def test_packed_examples_compute_exactly_as_alone(shift, diff_name, condition_prob):
    diff = DIFFS[diff_name]
    model = tiny_model(shift)
    exs = examples(7)
    answer_length = 6
    rows = first_fit_pack([segment_length(e, answer_length) for e in exs], 40, range(len(exs)))
    assert any(len(r) > 1 for r in rows)
    batch = collate_packed([[exs[i] for i in r] for r in rows], 40, PAD, answer_length)  # filler at the ends
    E = batch.num_examples
    t = torch.linspace(0.3, 0.95, E)
    keys = [(0, "row", 3, k) for k in range(E)]
    packed = noise_packed_rows(batch, t, keys, mask_token_id=MASK, pad_token_id=PAD, shift=shift, diff=diff,
                               step=3, condition_prob=condition_prob)
    assert packed.attention_mask.shape == (len(rows), 1, 40, 40) and packed.num_examples == E
    with torch.no_grad():
        logits = model(packed.xt, packed.attention_mask, packed.position_ids).logits  # (B, L, V)
        sums = model_loss_sums(model, packed.xt, packed.x0, packed.is_masked, packed.t, packed.maskable,
                               packed.attention_mask, packed.position_ids)
    total = torch.zeros(4, dtype=torch.float64)
    k = 0
    for b, segs in enumerate(batch.segments):
        for seg in segs:
            sl = slice(seg.start, seg.start + seg.length)
            alone = noise_rows(batch.x0[b:b + 1, sl], torch.tensor([seg.prompt_len]), t[k:k + 1], [keys[k]],
                               mask_token_id=MASK, pad_token_id=PAD, shift=shift, diff=diff, step=3,
                               condition_prob=condition_prob)
            # its own noise level and masks, the prompt clean unless the progressive condition noises it
            assert torch.equal(packed.xt[b, sl], alone.xt[0]) and torch.equal(packed.maskable[b, sl],
                                                                                alone.maskable[0])
            assert bool((packed.t[b, sl] == t[k]).all())
            if condition_prob == 1.0 and not diff.clean_prefix_prob:
                assert not bool(packed.is_masked[b, seg.start:seg.start + seg.prompt_len].any())
            if shift:  # the first token would be predicted by the previous example's last output
                assert not bool(packed.maskable[b, seg.start])
            with torch.no_grad():
                ref = model(alone.xt, alone.attention_mask).logits[0]  # (n, V)
                s = model_loss_sums(model, alone.xt, alone.x0, alone.is_masked, alone.t, alone.maskable,
                                    alone.attention_mask)
            torch.testing.assert_close(logits[b, sl], ref, atol=2e-5, rtol=1e-5)
            total += torch.stack([s.weighted_ce.double(), s.ce.double(), s.n_masked.double(),
                                  s.n_maskable.double()])
            k += 1
    assert int(total[2]) > 0
    got = torch.stack([sums.weighted_ce.double(), sums.ce.double(), sums.n_masked.double(),
                       sums.n_maskable.double()])
    torch.testing.assert_close(got, total, atol=1e-4, rtol=1e-5)
    # filler positions belong to no example: never scored
    used = torch.zeros_like(packed.maskable)
    for b, segs in enumerate(batch.segments):
        for seg in segs:
            used[b, seg.start:seg.start + seg.length] = True
    assert not bool((packed.maskable & ~used).any())


def test_a_row_without_the_block_mask_is_not_the_same():
    """The equivalence test above can fail: without the block-diagonal mask the examples see each other.

    (Running position ids instead of restarted ones change nothing but rounding: RoPE scores depend on position
    differences only, and inside an example's block those are the same. Restarting them keeps the positions
    a packed example is computed at those of the example alone, and within the model's trained range.)"""
    model = tiny_model(True)
    exs = examples(2, seed=1)
    batch = collate_packed([exs], sum(segment_length(e) for e in exs), PAD)
    packed = noise_packed_rows(batch, torch.tensor([0.5, 0.5]), [(0, 0), (0, 1)], mask_token_id=MASK,
                               pad_token_id=PAD, shift=True, diff=DiffusionSection(), step=0)
    second = batch.segments[0][1]
    sl = slice(second.start, second.start + second.length)
    with torch.no_grad():
        good = model(packed.xt, packed.attention_mask, packed.position_ids).logits[0, sl]
        no_mask = model(packed.xt, None, packed.position_ids).logits[0, sl]
        running = model(packed.xt, packed.attention_mask).logits[0, sl]
    assert not torch.allclose(good, no_mask, atol=1e-3)
    torch.testing.assert_close(running, good, atol=1e-4, rtol=1e-4)


def test_step_rows_are_the_same_however_the_global_batch_is_split():
    exs = examples(40, seed=2)
    data = PackedSFTRows(exs, 32, PAD, "flexible", answer_length=0, seed=5)
    assert sorted(i for r in data.packs for i in r) == list(range(40)) and 0.5 < data.fill() <= 1
    gidx = [3, 0, 5, 1]
    diff = DiffusionSection(t_sampling="stratified")
    kw = dict(seed=1, step=7, diff=diff, mask_token_id=MASK, pad_token_id=PAD, shift=True)
    whole = step_rows(data, gidx, [0, 1, 2, 3], 4, **kw)
    assert whole.examples == data.num_examples(gidx) and whole.length == max(data.used[i] for i in gidx)
    parts = [step_rows(data, gidx, [0, 1], 1, **kw), step_rows(data, gidx, [2, 3], 2, **kw)]  # 2 "ranks"
    rows = [m for p in parts for m in p.micro]
    for name in ("xt", "is_masked", "maskable", "t", "attention_mask", "position_ids"):
        torch.testing.assert_close(torch.cat([getattr(r, name) for r in rows]), getattr(whole.micro[0], name))
    # the global batch's noise levels are drawn per example (stratified over all of them)
    t = step_t(1, 7, whole.examples, diff)
    firsts = [s.start for segs in data.packed(gidx, whole.length).segments for s in segs]
    rows_of = [b for b, segs in enumerate(data.packed(gidx, whole.length).segments) for _ in segs]
    got = torch.stack([whole.micro[0].t[b, s] for b, s in zip(rows_of, firsts)])
    torch.testing.assert_close(got, t)
    # the packing is a pure function of the seed
    assert PackedSFTRows(exs, 32, PAD, "flexible", 0, seed=5).packs == data.packs
    assert PackedSFTRows(exs, 32, PAD, "flexible", 0, seed=6).packs != data.packs


# ------------------------------------------------------------------------------------------------------------
# the training loop with packing
# ------------------------------------------------------------------------------------------------------------
TINY = ["tokenizer.vocab_size=600", "optim.global_batch_size=4", "optim.warmup_steps=1", "eval.num_sequences=4",
        "eval.batch_size=4", "logging.progress=false", "logging.every=1", "task=sft", "sft.synthetic_tasks=60",
        "sft.synthetic_tiers=[easy]", "sft.max_length=256", "sft.heldout_fraction=0.1", "sft.packing=true",
        "sft.padding=flexible", "diffusion.t_sampling=stratified", "runtime.threads=1"]


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    from diffucoder.tasks import build_prompt, format_answer, generate_tasks
    from diffucoder.tokenizer import train_tokenizer

    d = tmp_path_factory.mktemp("tok")
    texts = [build_prompt(t) + "\n" + format_answer(t) for t in generate_tasks(200, "train", seed=0)]
    train_tokenizer(texts, vocab_size=600).save_pretrained(d)
    return d


def cfg_for(run, tokenizer_dir, *extra):
    return load_config(None, [*TINY, f"run_dir={run}", f"tokenizer.path={tokenizer_dir}", *extra])


def final_params(res):
    return DreamModel.from_pretrained(res.final_path, torch_dtype=torch.float32).state_dict()


def test_packed_sft_trains_counts_examples_and_splits_micro_batches_exactly(tmp_path, tokenizer_dir):
    a = train(cfg_for(tmp_path / "a", tokenizer_dir, "optim.steps=3", "optim.micro_batch_size=4",
                      "checkpoint.every=0", "eval.every=0", "diffusion.loss_weighting=none",
                      "sft.progressive_condition_steps=2"))
    b = train(cfg_for(tmp_path / "b", tokenizer_dir, "optim.steps=3", "optim.micro_batch_size=1",
                      "checkpoint.every=0", "eval.every=0", "diffusion.loss_weighting=none",
                      "sft.progressive_condition_steps=2"))
    pa, pb = final_params(a), final_params(b)
    for k in pa:
        torch.testing.assert_close(pa[k], pb[k], atol=1e-5, rtol=1e-4)
    assert a.final_loss == pytest.approx(b.final_loss, rel=1e-5)
    rows = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    start = rows[0]
    assert start["data/packed_rows"] < start["data/train_examples"] and start["data/examples_per_row"] > 1
    # sft.pack_answer_length unset: every answer region is as long as the longest answer plus one pad target
    from diffucoder.data.sft import encode_examples
    from diffucoder.tokenizer import load_tokenizer
    from diffucoder.training.loop import _synthetic_records

    exs = encode_examples([r for _, r in _synthetic_records(60, 0, ["easy"])], load_tokenizer(tokenizer_dir))
    assert start["data/pack_answer_length"] == 1 + max(len(e.answer_ids) for e in exs)
    # a 256-token row holds several ~50-token examples: more examples than rows per step
    assert a.examples_seen > 3 * 4 and a.examples_seen == [r for r in rows if "loss" in r][-1]["examples_seen"]
    assert a.eval["masked_tokens"] > 0  # the held-out evaluation runs on unpacked rows


def test_packed_sft_resumes_exactly(tmp_path, tokenizer_dir):
    extra = ["optim.steps=4", "optim.micro_batch_size=2", "checkpoint.every=2", "checkpoint.keep_last=2",
             "eval.every=0", "sft.pack_answer_length=24"]
    full = train(cfg_for(tmp_path / "full", tokenizer_dir, *extra))
    # a run that stopped after its step-2 checkpoint: the same folder as it was then
    part = tmp_path / "part"
    shutil.copytree(tmp_path / "full", part, ignore=shutil.ignore_patterns("final", "step_00000004"))
    metrics = [ln for ln in (part / "metrics.jsonl").read_text().splitlines() if json.loads(ln)["step"] <= 2]
    (part / "metrics.jsonl").write_text("".join(ln + "\n" for ln in metrics))
    resumed = train(cfg_for(part, tokenizer_dir, *extra))
    assert resumed.resumed_from == 2 and resumed.steps == 4
    assert resumed.examples_seen == full.examples_seen and resumed.final_loss == full.final_loss
    pa, pb = final_params(full), final_params(resumed)
    for k in pa:
        assert torch.equal(pa[k], pb[k]), k


# ------------------------------------------------------------------------------------------------------------
# shorter prompts
# ------------------------------------------------------------------------------------------------------------
def test_short_prompt_format_is_the_question_alone_and_is_wired_through_sft(tokenizer_dir):
    from conftest import load_benchmark

    from diffucoder.tasks import PROMPT_INSTRUCTION, build_prompt, generate_tasks, to_eval_row, to_sft_record
    from diffucoder.tokenizer import load_tokenizer
    from diffucoder.training.loop import _synthetic_records

    tasks = generate_tasks(30, "train", seed=3)
    for t in tasks:
        short = build_prompt(t, "short")
        # still the question itself, ending with the Signature line that reads like the answer's first line
        assert short == t.question and short.split("\n")[-2] == "Signature:"
        assert short.split("\n")[-1].startswith(f"def {t.entry_point}(") and short.endswith("):")
        assert build_prompt(t) == f"{short}\n{PROMPT_INSTRUCTION}"  # the default is unchanged
    assert to_eval_row(tasks[0], "short")["prompt"] == tasks[0].question
    assert to_sft_record(tasks[0], prompt_format="short")["messages"][0]["content"] == tasks[0].question
    with pytest.raises(ValueError, match="prompt_format"):
        build_prompt(tasks[0], "tiny")
    recs = [r for _, r in _synthetic_records(4, 0, ["easy"], "short")]
    assert all(PROMPT_INSTRUCTION not in r.prompt_messages[0]["content"] for r in recs)
    # the benchmark's breakdown attributes every prompt token to one part
    tok = load_tokenizer(tokenizer_dir)
    b = load_benchmark("sft_throughput").prompt_token_breakdown(tok, tasks)
    assert sum(b["parts"].values()) == pytest.approx(b["totals"]["default"])
    assert b["totals"]["short (no instruction, no system turn)"] < b["totals"]["short, system turn"] \
        < b["totals"]["default"]
