"""Invariants of ``diffusion_generate`` on tiny random models: the prompt is untouched, no [MASK] is left, each
step reveals exactly the scheduled number, the same generator seed gives the same output, a left-padded batch
equals its rows decoded one by one; plus bad input, blocks, threshold decoding, the stop-token penalty, the
vocabulary limit, hooks and the trace."""

from __future__ import annotations


import pytest
import torch

from diffucoder.model import DreamConfig, DreamModel
from diffucoder.sampling import (GenerationError, GenerationOutput, completion_ids, cut_at_stop,
                                 diffusion_generate, reveal_counts)

V, MASK, EOS, PAD = 40, 39, 0, 1
ALGS = ["origin", "maskgit_plus", "topk_margin", "entropy"]


def _model(shift: bool = True, seed: int = 0, **overrides) -> DreamModel:
    cfg = DreamConfig.preset("tiny", vocab_size=V, mask_token_id=MASK, eos_token_id=EOS, pad_token_id=PAD,
                             tie_word_embeddings=False, initializer_range=0.3, shift_logits=shift, **overrides)
    m = DreamModel(cfg, init_weights=False)
    m.init_weights(torch.Generator().manual_seed(seed))
    return m.eval()


@pytest.fixture(scope="module")
def model() -> DreamModel:
    return _model()


def _prompts(B: int, P: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(2, MASK, (B, P), generator=torch.Generator().manual_seed(seed))


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# -- schedule ---------------------------------------------------------------------------------------------------
def test_reveal_counts_by_hand():
    # timesteps = linspace(1, 1e-3, 5) = 1, .75025, .5005, .25075, .001
    # step 0: 4 * (1 - .75025/1)      = 0.999 -> 0
    # step 1: 4 * (1 - .5005/.75025)  = 1.33  -> 1   (4 still masked)
    # step 2: 3 * (1 - .25075/.5005)  = 1.497 -> 1
    # step 3: last step: all 2 remaining
    ts = torch.linspace(1, 1e-3, 5)
    n, got = torch.tensor([4]), []
    for i in range(4):
        k = reveal_counts(n, i, 4, ts)
        got.append(int(k))
        n = n - k
    assert got == [0, 1, 1, 2]


# -- invariants -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("alg", ALGS)
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_invariants(model, alg, temperature):
    prompts = _prompts(3, 5, seed=1)
    steps, N = 6, 10
    out = diffusion_generate(model, prompts, max_new_tokens=N, steps=steps, alg=alg, temperature=temperature,
                             top_p=0.9, return_dict_in_generate=True, output_history=True, generator=_gen(0))
    assert isinstance(out, GenerationOutput)
    seq, tr = out.sequences, out.trace
    assert seq.shape == (3, 5 + N)
    assert torch.equal(seq[:, :5], prompts), "prompt changed"
    assert not (seq == MASK).any(), "a mask is left"
    assert len(out.history) == steps and torch.equal(out.history[-1], seq)
    # the trace explains every completion token and nothing in the prompt
    assert (tr.reveal_step[:, :5] == -1).all()
    assert (tr.reveal_step[:, 5:] >= 0).all()
    assert torch.equal(tr.reveal_token[:, 5:], seq[:, 5:])
    assert tr.num_forward_passes == steps
    masked_before = torch.full((3,), N)
    ts = torch.linspace(1, 1e-3, steps + 1)
    for i in range(steps):
        revealed = (tr.reveal_step == i).sum(1)
        assert torch.equal(revealed, tr.revealed_per_step[i])
        # history agrees with the trace: exactly the positions of step i turned from mask to a token
        prev = torch.cat([prompts, torch.full((3, N), MASK)], 1) if i == 0 else out.history[i - 1]
        assert torch.equal((prev == MASK) & (out.history[i] != MASK), tr.reveal_step == i)
        if alg != "origin":
            assert torch.equal(revealed, reveal_counts(masked_before, i, steps, ts)), f"step {i}"
        masked_before = masked_before - revealed
    for r in range(3):
        assert sorted(tr.order(r)) == list(range(N))


@pytest.mark.parametrize("alg", ALGS)
def test_same_seed_same_output(model, alg):
    prompts = _prompts(2, 4, seed=2)
    kw = dict(max_new_tokens=8, steps=8, alg=alg, temperature=1.0, alg_temp=0.5 if alg != "origin" else None)
    a = diffusion_generate(model, prompts, generator=_gen(5), **kw)
    b = diffusion_generate(model, prompts, generator=_gen(5), **kw)
    c = diffusion_generate(model, prompts, generator=_gen(6), **kw)
    assert torch.equal(a, b)
    assert not torch.equal(a, c), "different seeds should (for this model) give different samples"


@pytest.mark.parametrize("alg", ["maskgit_plus", "topk_margin", "entropy"])
@pytest.mark.parametrize("shift", [True, False])
def test_left_padded_batch_equals_one_by_one(alg, shift):
    m = _model(shift=shift, seed=3)
    rows = [_prompts(1, n, seed=10 + n)[0] for n in (6, 2, 4, 6)]
    P = max(len(r) for r in rows)
    batch = torch.full((len(rows), P), PAD)
    am = torch.zeros(len(rows), P, dtype=torch.long)
    for i, r in enumerate(rows):
        batch[i, P - len(r):] = r
        am[i, P - len(r):] = 1
    out = m.diffusion_generate(batch, attention_mask=am, max_new_tokens=9, steps=9, alg=alg, temperature=0.0,
                               return_dict_in_generate=True)
    for i, r in enumerate(rows):
        alone = m.diffusion_generate(r[None], max_new_tokens=9, steps=9, alg=alg, temperature=0.0,
                                     return_dict_in_generate=True)
        assert torch.equal(out.sequences[i, P:], alone.sequences[0, len(r):]), f"row {i} differs"
        assert out.trace.order(i) == alone.trace.order(0)
        assert torch.equal(out.sequences[i, :P], batch[i]), "padding or prompt changed"


def test_per_row_counts_when_rows_differ(model):
    """A hook that pre-fills 4 canvas positions in row 0 leaves it fewer masks; each row follows its own count
    (the reference's batch average would reveal wrong numbers and re-mask row 0)."""
    prompts = _prompts(2, 3, seed=4)

    def prefill(step, x, logits):
        if step is None:
            x = x.clone()
            x[0, 3:7] = 5
        return x

    out = diffusion_generate(model, prompts, max_new_tokens=12, steps=4, alg="maskgit_plus", temperature=0.0,
                             generation_tokens_hook_func=prefill, return_dict_in_generate=True)
    ts = torch.linspace(1, 1e-3, 5)
    n = torch.tensor([8, 12])
    for i in range(4):
        k = reveal_counts(n, i, 4, ts)
        assert torch.equal(out.trace.revealed_per_step[i], k)
        n = n - k
    assert torch.equal(out.sequences[0, 3:7], torch.full((4,), 5))
    assert not (out.sequences == MASK).any()


# -- bad input --------------------------------------------------------------------------------------------------
class _Counter:
    def __init__(self, m: DreamModel) -> None:
        self.n = 0
        m.register_forward_pre_hook(lambda *_: setattr(self, "n", self.n + 1))


@pytest.mark.parametrize("kwargs,match", [
    (dict(steps=0), "steps"),
    (dict(alg="greedy"), "unknown alg"),
    (dict(top_p=0.0), "top_p"),
    (dict(top_p=1.5), "top_p"),
    (dict(temperature=-0.1), "temperature"),
    (dict(top_k=-1), "top_k"),
    (dict(top_k=[5, 6]), "top_k has 2 values"),
    (dict(temperature=[0.0, -1.0]), "temperature"),
    (dict(max_new_tokens=2040), "max_position_embeddings"),
    (dict(use_cache="all"), "use_cache"),
    (dict(cache_refresh=2), "cache_refresh needs use_cache"),
    (dict(use_cache="dual", block_length=4, cache_refresh=0), "cache_refresh"),
    (dict(use_cache="dual", block_length=4, generation_logits_hook_func=lambda s, x, l: l), "logits hook"),
    (dict(threshold=0.0, alg="entropy"), "threshold"),
    (dict(generator=[torch.Generator(), torch.Generator()]), "generator has 2 values"),
    (dict(generator="seed"), "torch.Generator"),
    (dict(block_length=4, max_new_tokens=8, steps=5), "multiple of the number of blocks"),
    (dict(threshold=0.9, alg="origin"), "threshold"),
    (dict(threshold=1.5, alg="entropy"), "threshold"),
    (dict(bogus=1), "unexpected"),
])
def test_bad_input_fails_before_any_forward(kwargs, match):
    m = _model()
    calls = _Counter(m)
    kw = dict(max_new_tokens=8, steps=8)
    kw.update(kwargs)
    with pytest.raises((GenerationError, TypeError), match=match):
        m.diffusion_generate(_prompts(1, 10), **kw)
    assert calls.n == 0


def test_missing_mask_id_and_bad_masks():
    cfg = DreamConfig.preset("tiny", vocab_size=V)
    m = DreamModel(cfg)
    calls = _Counter(m)
    with pytest.raises(GenerationError, match="mask token"):
        m.diffusion_generate(_prompts(1, 3), max_new_tokens=4, steps=4)
    m2 = _model()
    calls = _Counter(m2)
    right_padded = torch.tensor([[1, 1, 0]])
    with pytest.raises(GenerationError, match="LEFT padding"):
        m2.diffusion_generate(_prompts(1, 3), attention_mask=right_padded, max_new_tokens=4, steps=4)
    with pytest.raises(GenerationError, match="shape"):
        m2.diffusion_generate(_prompts(1, 3), attention_mask=torch.ones(1, 4), max_new_tokens=4, steps=4)
    with pytest.raises(GenerationError, match="empty prompt"):
        m2.diffusion_generate(torch.zeros(1, 0, dtype=torch.long), max_new_tokens=4, steps=4)
    assert calls.n == 0


def test_more_steps_than_tokens_warns_and_still_completes(model):
    with pytest.warns(UserWarning, match="reveal nothing"):
        out = diffusion_generate(model, _prompts(1, 3), max_new_tokens=4, steps=7, alg="entropy",
                                 return_dict_in_generate=True)
    assert not (out.sequences == MASK).any()
    assert out.trace.num_forward_passes == 7
    assert int(out.trace.revealed_per_step.sum()) == 4


# -- options ----------------------------------------------------------------------------------------------------
def test_mask_is_never_chosen_and_vocab_limit_holds(model):
    def love_mask(step, x, logits):
        logits = logits.clone()
        logits[..., MASK] += 100.0
        return logits

    for alg, temp in (("entropy", 0.0), ("origin", 1.5), ("maskgit_plus", 1.5)):
        seq = diffusion_generate(model, _prompts(2, 3), max_new_tokens=12, steps=6, alg=alg, temperature=temp,
                                 generation_logits_hook_func=love_mask, vocab_limit=20, generator=_gen(1))
        assert not (seq == MASK).any()
        assert (seq[:, 3:] < 20).all(), "an id beyond the tokenizer's vocabulary was produced"


def test_semi_autoregressive_blocks(model):
    out = diffusion_generate(model, _prompts(2, 4), max_new_tokens=12, steps=6, block_length=4, temperature=0.0,
                             alg="entropy", return_dict_in_generate=True)
    step = out.trace.reveal_step[:, 4:]  # (B, 12)
    for b in range(3):  # block b is revealed during steps 2b, 2b+1
        blk = step[:, 4 * b: 4 * b + 4]
        assert ((blk >= 2 * b) & (blk <= 2 * b + 1)).all()
    assert not (out.sequences == MASK).any()


def test_threshold_decoding(model):
    p = _prompts(3, 4)
    one = diffusion_generate(model, p, max_new_tokens=10, alg="maskgit_plus", threshold=1.0, temperature=0.0,
                             return_dict_in_generate=True)
    # no probability exceeds 1: exactly one position per row and step, 10 forward passes
    assert one.trace.num_forward_passes == 10 and (one.trace.revealed_per_step == 1).all()
    alls = diffusion_generate(model, p, max_new_tokens=10, alg="entropy", threshold=1e-9, temperature=0.0,
                              return_dict_in_generate=True)
    assert alls.trace.num_forward_passes == 1 and not (alls.sequences == MASK).any()
    mid = diffusion_generate(model, p, max_new_tokens=10, alg="maskgit_plus", threshold=0.3, block_length=5,
                              temperature=0.0,
                             return_dict_in_generate=True)
    assert not (mid.sequences == MASK).any()
    assert (mid.trace.reveal_step[:, 4:9].amax(1) < mid.trace.reveal_step[:, 9:].amin(1)).all()
    # every reveal either beat the threshold or was its row's single best of the step
    conf, step = mid.trace.reveal_confidence, mid.trace.reveal_step
    for s in range(mid.trace.num_forward_passes):
        for r in range(3):
            c = conf[r][step[r] == s]
            assert len(c) == 0 or len(c) == 1 or (c > 0.3).all()


def test_stop_token_penalty_delays_eos(model):
    def eos_at_end(step, x, logits):  # a model that is sure the last three positions are EOS
        logits = logits.clone()
        logits[:, -3:, EOS] += 50.0
        return logits

    kw = dict(max_new_tokens=8, steps=8, alg="maskgit_plus", temperature=0.0, generation_logits_hook_func=eos_at_end,
              return_dict_in_generate=True)
    plain = diffusion_generate(model, _prompts(1, 3), **kw)
    assert set(plain.trace.order(0)[:3]) == {5, 6, 7}, "without a penalty EOS is revealed first"
    pen = diffusion_generate(model, _prompts(1, 3), stop_token_penalty=2.0, **kw)
    assert set(pen.trace.order(0)[-3:]) == {5, 6, 7}, "with the penalty EOS positions come last"
    assert (pen.sequences[0, -3:] == EOS).all()


def test_hooks_history_and_return_types(model):
    seen = []

    def tokens_hook(step, x, logits):
        seen.append((step, logits is None))
        return x

    x = diffusion_generate(model, _prompts(1, 3), max_new_tokens=4, steps=4, alg="entropy", temperature=0.0,
                           generation_tokens_hook_func=tokens_hook)
    assert isinstance(x, torch.Tensor) and x.shape == (1, 7)
    assert seen == [(None, True), (0, False), (1, False), (2, False), (3, False)]
    out = diffusion_generate(model, _prompts(1, 3), max_new_tokens=4, steps=4, return_dict_in_generate=True)
    assert out.history is None  # only with output_history, as the reference
    many = diffusion_generate(model, _prompts(2, 3), max_new_tokens=4, steps=4, num_return_sequences=3,
                              alg="entropy", temperature=0.0)
    assert many.shape == (6, 7) and torch.equal(many[0], many[1])  # greedy copies agree
    default = diffusion_generate(model, _prompts(1, 3), steps=4, alg="entropy")
    assert default.shape == (1, 3 + 20)  # Dream's default: 20 new tokens


def test_trace_positions_and_first_step_profile(model):
    out = diffusion_generate(model, _prompts(2, 3), max_new_tokens=6, steps=6, alg="entropy", temperature=0.0,
                             return_dict_in_generate=True)
    pos = out.trace.positions(1)
    assert [p.position for p in pos] == list(range(6))
    assert sorted(p.step for p in pos) == sorted(out.trace.reveal_step[1, 3:].tolist())
    assert all(p.token == int(out.sequences[1, 3 + p.position]) for p in pos)
    prof = out.trace.first_step_profile()
    assert prof.shape == (6,) and not torch.isnan(prof).any() and (prof <= 0).all()  # negative entropies


def test_cut_at_stop():
    assert cut_at_stop([5, 6, EOS, 7], [EOS, PAD]) == [5, 6]
    assert cut_at_stop([PAD, 5], [EOS, PAD]) == []
    seq = torch.tensor([[9, 9, 3, 4, PAD, PAD], [9, 9, 3, 4, 5, 6]])
    assert completion_ids(seq, 2, [EOS, PAD]) == [[3, 4], [3, 4, 5, 6]]


def test_categorical_draw_matches_the_distribution():
    from diffucoder.sampling.policies import categorical_draw

    probs = torch.tensor([[0.5, 0.0, 0.2, 0.3], [0.0, 0.3, 0.7, 0.0]]).repeat(20000, 1)  # (40000, 4)
    ids = categorical_draw(probs, _gen(0)).view(20000, 2)
    freq0 = torch.bincount(ids[:, 0], minlength=4).float() / 20000
    freq1 = torch.bincount(ids[:, 1], minlength=4).float() / 20000
    # binomial std at n=20000 is at most 0.0035: 0.02 is > 5 sigma
    assert torch.allclose(freq0, torch.tensor([0.5, 0.0, 0.2, 0.3]), atol=0.02) and freq0[1] == 0
    assert torch.allclose(freq1, torch.tensor([0.0, 0.3, 0.7, 0.0]), atol=0.02) and freq1[0] == freq1[3] == 0
    # unnormalised rows work too (only ratios matter)
    ids2 = categorical_draw(torch.tensor([[0.0, 2.0, 0.0]]).repeat(100, 1), _gen(1))
    assert (ids2 == 1).all()


def test_top_k_fast_path_equals_the_full_vocabulary_computation():
    """sample_tokens computes a top-k step on the (N, k) kept logits; tokens (sampled ones with the same
    uniforms), confidences and chosen probabilities equal the reference's full-vocabulary computation, also for
    forbidden maxima, tied logits across the cut and top-p nuclei smaller than k."""
    from diffucoder.sampling.policies import _sample_full, _sample_top_k

    g = torch.Generator().manual_seed(0)
    for V_ in (100, 700):
        x = torch.randn(300, V_, generator=g) * 3
        x[:30, 5] = 100.0  # the forbidden id is the maximum
        x[30:40, :3] = x[30:40, 3:4] + 50  # ties at the top
        x[40:50, 10:20] = x[40:50, 9:10]  # ties across the cut
        for alg in ("maskgit_plus", "topk_margin", "entropy"):
            for temp, top_p in ((0.0, None), (0.0, 0.95), (0.7, 0.95), (1.0, None)):
                for k in (1, 2, 50):
                    a = _sample_full(x, alg, temp, top_p, k, torch.Generator().manual_seed(1), (5,), False)
                    b = _sample_top_k(x, alg, temp, top_p, k, torch.Generator().manual_seed(1), (5,))
                    assert torch.equal(a.tokens, b.tokens), (V_, alg, temp, top_p, k)
                    torch.testing.assert_close(b.confidence, a.confidence, rtol=0, atol=1e-5)
                    torch.testing.assert_close(b.chosen_prob, a.chosen_prob, rtol=0, atol=1e-5)
