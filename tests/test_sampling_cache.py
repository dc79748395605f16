"""The KV cache, early stop, streaming and per-row settings of ``diffusion_generate``.

Exactness where it must be exact: a window forward over a freshly filled cache equals the full forward's rows; a
one-layer model's keys/values depend only on each position's own token, so its cache is never stale and cached
decoding must equal exact decoding token for token; with ``cache_refresh=1`` any model decodes exactly; a
left-padded cached batch equals its rows decoded one by one. Early stop keeps the text and skips later blocks.
"""

from __future__ import annotations

import pytest
import torch

from diffucoder.model import DreamConfig, DreamModel
from diffucoder.sampling import DecodeStep, GenerationError, completion_ids, diffusion_generate

V, MASK, EOS, PAD = 64, 63, 0, 1
GREEDY = dict(temperature=0.0, top_k=None)


def _model(layers: int = 2, shift: bool = True, seed: int = 0, dtype=torch.float32) -> DreamModel:
    cfg = DreamConfig.preset("tiny", vocab_size=V, mask_token_id=MASK, eos_token_id=EOS, pad_token_id=PAD,
                             tie_word_embeddings=False, initializer_range=0.3, shift_logits=shift,
                             num_hidden_layers=layers)
    m = DreamModel(cfg, init_weights=False)
    m.init_weights(torch.Generator().manual_seed(seed))
    return m.to(dtype).eval()


def _prompts(B: int, P: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(2, MASK, (B, P), generator=torch.Generator().manual_seed(seed))


def _left_padded(lengths: list[int], seed: int = 0) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    rows = [_prompts(1, n, seed=seed + n)[0] for n in lengths]
    P = max(lengths)
    batch = torch.full((len(rows), P), PAD)
    am = torch.zeros(len(rows), P, dtype=torch.long)
    for i, r in enumerate(rows):
        batch[i, P - len(r):] = r
        am[i, P - len(r):] = 1
    return rows, batch, am


# -- the model's cache interface ----------------------------------------------------------------------------------
@pytest.mark.parametrize("shift", [True, False])
def test_window_forward_on_a_fresh_cache_equals_the_full_forward(shift):
    m = _model(layers=3, shift=shift)  # 4 query heads over 2 key/value heads: GQA
    _, x, am = _left_padded([9, 4, 12], seed=3)
    x = torch.cat([x, torch.full((3, 10), MASK)], 1)
    am = torch.cat([am, torch.ones(3, 10, dtype=torch.long)], 1)
    with torch.no_grad():
        full = m(x, am).logits  # (B, L, V)
        cache = m.new_kv_cache()
        filled = m(x, am, kv_cache=cache).logits
        assert torch.equal(filled, full)
        for a, b in ((11, 16), (13, 22), (0, 22), (21, 22)):
            win = m(x[:, a:b], kv_cache=cache, cache_start=a).logits
            torch.testing.assert_close(win, full[:, a:b], rtol=0, atol=1e-5)
        sel = torch.rand(3, 6, generator=torch.Generator().manual_seed(1)) < 0.5
        part = m(x[:, 12:18], kv_cache=cache, cache_start=12, logits_mask=sel).logits
        torch.testing.assert_close(part, full[:, 12:18][sel], rtol=0, atol=1e-5)


def test_window_forward_rejects_what_does_not_fit():
    m = _model()
    x = _prompts(2, 8)
    cache = m.new_kv_cache()
    with torch.no_grad(), pytest.raises(ValueError, match="full forward"):
        m(x[:, 2:5], kv_cache=cache, cache_start=2)
    with torch.no_grad():
        m(x, kv_cache=cache)
        with pytest.raises(ValueError, match="does not fit"):
            m(x[:, :5], kv_cache=cache, cache_start=6)
        with pytest.raises(ValueError, match="takes its mask"):
            m(x[:, :5], torch.ones(2, 5), kv_cache=cache)


# -- exactness of cached decoding -----------------------------------------------------------------------------------
SETTINGS = [
    dict(alg="entropy", steps=12, block_length=4),
    dict(alg="maskgit_plus", threshold=0.2, block_length=4),
    dict(alg="topk_margin", steps=12, block_length=6),
    dict(alg="entropy", threshold=0.3),                  # one block: only the prompt is cached
    dict(alg="origin", steps=12, block_length=4),
    dict(alg="entropy", steps=9, block_length=5),        # a shorter last block (12 = 5 + 5 + 2)
]


CASES = [(mode, kw, True) for mode in ("prefix", "dual") for kw in SETTINGS] + \
        [(mode, SETTINGS[i], False) for mode in ("prefix", "dual") for i in (0, 1)]


@pytest.mark.parametrize("use_cache,kw,shift", CASES,
                         ids=lambda v: v if isinstance(v, str) else ("shift" if v is True else "noshift" if v is False
                                                                     else "-".join(f"{a}{b}" for a, b in v.items())))
def test_one_layer_cached_decoding_equals_exact(use_cache, kw, shift):
    """One layer: keys/values are functions of each position's own token, so an unchanged position's cached
    entry is exact and the cache only has to be right about RoPE positions, GQA, padding and the shift."""
    m = _model(layers=1, shift=shift, seed=4)
    _, batch, am = _left_padded([7, 3, 5], seed=1)
    g = lambda: torch.Generator().manual_seed(9)  # noqa: E731
    common = dict(attention_mask=am, max_new_tokens=12, return_dict_in_generate=True, temperature=0.7, **kw)
    exact = diffusion_generate(m, batch, generator=g(), **common)
    cached = diffusion_generate(m, batch, generator=g(), use_cache=use_cache, **common)
    assert torch.equal(cached.sequences, exact.sequences)
    assert torch.equal(cached.trace.reveal_step, exact.trace.reveal_step)
    n_blocks = -(-12 // kw.get("block_length", 12))
    assert cached.trace.extra["full_forward_passes"] == n_blocks
    assert cached.trace.extra["positions_computed"] < exact.trace.extra["positions_computed"]


@pytest.mark.parametrize("use_cache", ["prefix", "dual"])
@pytest.mark.parametrize("kw", SETTINGS[:3], ids=["steps", "threshold", "block6"])
def test_refreshed_every_step_cached_decoding_equals_exact(use_cache, kw):
    m = _model(layers=3, seed=5)
    _, batch, am = _left_padded([6, 2, 4], seed=2)
    common = dict(attention_mask=am, max_new_tokens=12, return_dict_in_generate=True, **GREEDY, **kw)
    exact = diffusion_generate(m, batch, **common)
    cached = diffusion_generate(m, batch, use_cache=use_cache, cache_refresh=1, **common)
    assert torch.equal(cached.sequences, exact.sequences)
    assert torch.equal(cached.trace.reveal_step, exact.trace.reveal_step)


def test_stale_cache_is_an_approximation_that_still_completes():
    """Multi-layer without per-step refresh: not exact (the point of the approximation), but well formed."""
    m = _model(layers=3, seed=5)
    p = _prompts(2, 6, seed=3)
    out = diffusion_generate(m, p, max_new_tokens=12, steps=12, block_length=4, alg="entropy", use_cache="dual",
                             return_dict_in_generate=True, **GREEDY)
    assert not (out.sequences == MASK).any() and torch.equal(out.sequences[:, :6], p)
    assert out.trace.extra["full_forward_passes"] == 3 and out.trace.num_forward_passes == 12


@pytest.mark.parametrize("use_cache", [None, "prefix", "dual"])
def test_left_padded_cached_batch_equals_one_by_one(use_cache):
    m = _model(layers=2, seed=6)
    rows, batch, am = _left_padded([8, 2, 5, 8], seed=4)
    kw = dict(max_new_tokens=12, block_length=4, alg="entropy", threshold=0.25, use_cache=use_cache, **GREEDY)
    out = diffusion_generate(m, batch, attention_mask=am, **kw)
    for i, r in enumerate(rows):
        alone = diffusion_generate(m, r[None], **kw)
        assert torch.equal(out[i, batch.shape[1]:], alone[0, len(r):]), f"row {i} differs"


def test_bfloat16_cached_decoding_runs_and_mostly_agrees():
    m32 = _model(layers=1, seed=7)
    m16 = _model(layers=1, seed=7, dtype=torch.bfloat16)
    p = _prompts(2, 5, seed=5)
    kw = dict(max_new_tokens=12, steps=12, block_length=4, alg="entropy", **GREEDY)
    a = diffusion_generate(m16, p, use_cache="dual", **kw)
    b = diffusion_generate(m16, p, **kw)
    assert not (a == MASK).any()
    assert (a == b).float().mean() > 0.8  # bf16 ties may break differently in a window of other shape
    assert not (diffusion_generate(m32, p, use_cache="prefix", **kw) == MASK).any()


# -- tokens hooks with a cache ----------------------------------------------------------------------------------------
def test_a_hook_that_rewrites_the_cached_prefix_forces_a_refresh():
    m = _model(layers=1, seed=8)
    p = _prompts(1, 5, seed=6)

    def rewrite(step, x, logits):
        if step == 5:  # inside block 1: rewrite a token of block 0 (cached) and one of the prompt
            x = x.clone()
            x[:, 2] = 7
            x[:, 6] = 8
        return x

    kw = dict(max_new_tokens=12, steps=12, block_length=4, alg="entropy", generation_tokens_hook_func=rewrite,
              return_dict_in_generate=True, **GREEDY)
    exact = diffusion_generate(m, p, **kw)
    for mode in ("prefix", "dual"):
        cached = diffusion_generate(m, p, use_cache=mode, **kw)
        assert cached.trace.extra["full_forward_passes"] == 3 + 1  # block starts + the forced refresh
        assert torch.equal(cached.sequences, exact.sequences)  # one layer: exact again once refreshed


def test_tokens_hook_gets_no_logits_with_a_cache():
    m = _model()
    seen = []
    diffusion_generate(m, _prompts(1, 3), max_new_tokens=4, steps=4, block_length=2, use_cache="dual",
                       generation_tokens_hook_func=lambda s, x, logits: seen.append(logits) or x, **GREEDY)
    assert seen and all(lg is None for lg in seen)


# -- early stop ---------------------------------------------------------------------------------------------------------
def _eos_after(n: int):
    """A tokens hook that writes EOS at completion position n of every row at the first step (a model that
    ends its answer there); positions before it are left to the sampler."""
    def hook(step, x, logits):
        if step == 0:
            x = x.clone()
            x[:, hook.P + n] = EOS
        return x
    return hook


@pytest.mark.parametrize("use_cache", [None, "dual"])
@pytest.mark.parametrize("kw", [dict(steps=16, block_length=4), dict(threshold=0.5, block_length=4),
                                dict(steps=16)], ids=["steps", "threshold", "oneblock"])
def test_early_stop_keeps_the_text_and_skips_later_blocks(use_cache, kw):
    m = _model(seed=9)
    p = _prompts(3, 5, seed=7)
    hook = _eos_after(2)
    hook.P = 5
    common = dict(max_new_tokens=16, alg="entropy", generation_tokens_hook_func=hook, use_cache=use_cache,
                  return_dict_in_generate=True, **GREEDY, **kw)
    full = diffusion_generate(m, p, **common)
    short = diffusion_generate(m, p, early_stop=True, **common)
    stops = [EOS, PAD]
    assert completion_ids(short.sequences, 5, stops) == completion_ids(full.sequences, 5, stops)
    if "block_length" in kw:  # the blocks after the one holding EOS are never decoded
        assert short.trace.num_forward_passes < full.trace.num_forward_passes
    else:  # one block: it stops once everything before EOS is revealed, which may be the last step
        assert short.trace.num_forward_passes <= full.trace.num_forward_passes
    assert short.trace.extra["early_stopped_at_step"] == short.trace.num_forward_passes
    assert not (short.sequences == MASK).any()
    never = short.trace.reveal_step[:, 5:] < 0  # positions the sampler never decoded became pad
    assert (short.sequences[:, 5:][never & (short.sequences[:, 5:] != EOS)] == PAD).all()


def test_early_stop_waits_for_every_row():
    m = _model(seed=9)
    p = _prompts(2, 5, seed=8)

    def hook(step, x, logits):  # only row 0 ends early
        if step == 0:
            x = x.clone()
            x[0, 5] = EOS
        return x

    kw = dict(max_new_tokens=8, steps=8, block_length=4, alg="entropy", generation_tokens_hook_func=hook,
              return_dict_in_generate=True, **GREEDY)
    full = diffusion_generate(m, p, **kw)
    short = diffusion_generate(m, p, early_stop=True, **kw)
    assert torch.equal(short.sequences[1], full.sequences[1])
    if not (full.sequences[1, 5:] == EOS).any() and not (full.sequences[1, 5:] == PAD).any():
        assert short.trace.num_forward_passes == full.trace.num_forward_passes


@pytest.mark.parametrize("use_cache", ["prefix", "dual"])
def test_early_stopped_batch_equals_one_by_one_and_drops_finished_rows(use_cache):
    """Rows that end in different blocks: finished rows leave the forward, the others decode as alone."""
    m = _model(seed=13)
    rows, batch, am = _left_padded([6, 3, 5], seed=6)
    ends = [1, 6, 11]  # completion position of each row's EOS (block 0, 1 and 2 of 4)

    def hook_for(row_ids, P):
        def hook(step, x, logits):
            if step == 0:
                x = x.clone()
                for r, end in zip(range(x.shape[0]), row_ids):
                    x[r, P + end] = EOS
            return x
        return hook

    kw = dict(max_new_tokens=12, block_length=4, alg="entropy", threshold=0.3, use_cache=use_cache,
              early_stop=True, return_dict_in_generate=True, **GREEDY)
    out = diffusion_generate(m, batch, attention_mask=am, generation_tokens_hook_func=hook_for(ends, batch.shape[1]),
                             **kw)
    for i, r in enumerate(rows):
        alone = diffusion_generate(m, r[None], generation_tokens_hook_func=hook_for([ends[i]], len(r)), **kw)
        assert completion_ids(out.sequences[i:i + 1], batch.shape[1], [EOS, PAD]) == \
            completion_ids(alone.sequences, len(r), [EOS, PAD]), f"row {i} differs"
    full = diffusion_generate(m, batch, attention_mask=am, generation_tokens_hook_func=hook_for(ends, batch.shape[1]),
                              **{**kw, "early_stop": False})
    assert out.trace.extra["positions_computed"] < full.trace.extra["positions_computed"]


# -- streaming ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("use_cache", [None, "prefix"])
def test_step_callback_streams_a_growing_settled_prefix(use_cache):
    m = _model(seed=10)
    p = _prompts(2, 4, seed=9)
    events: list[DecodeStep] = []
    out = diffusion_generate(m, p, max_new_tokens=12, steps=12, block_length=4, alg="entropy", use_cache=use_cache,
                             step_callback=lambda e: events.append((e.step, e.block, e.settled.clone(),
                                                                    e.x[:, 4:].clone())) and None, **GREEDY)
    assert [e[0] for e in events] == list(range(12))
    assert [e[1] for e in events] == [0] * 4 + [1] * 4 + [2] * 4
    prev = torch.zeros(2, dtype=torch.long)
    for step, block, settled, comp in events:
        assert (settled >= prev).all(), "the settled prefix never shrinks"
        for r in range(2):  # what was reported settled is final
            n = int(settled[r])
            assert torch.equal(comp[r, :n], out[r, 4:4 + n])
            assert n == 12 or comp[r, n] == MASK
        prev = settled
    assert (events[3][2] >= 4).all(), "a finished block is settled"
    assert (prev == 12).all()


def test_step_callback_returning_true_aborts():
    m = _model(seed=10)
    calls = []
    out = diffusion_generate(m, _prompts(1, 4), max_new_tokens=12, steps=12, alg="entropy", return_dict_in_generate=True,
                             step_callback=lambda e: calls.append(e.step) or e.step == 2, **GREEDY)
    assert calls == [0, 1, 2] and out.trace.extra["aborted"] and out.trace.num_forward_passes == 3
    assert (out.sequences == MASK).any()


@pytest.mark.parametrize("use_cache", [None, "dual"])
def test_step_callback_can_stop_single_rows(use_cache):
    """A server's row that met a stop sequence or lost its client: stopped rows keep what they had settled,
    become pad after it and leave the forward passes; the other rows decode as if alone."""
    m = _model(seed=10)
    rows, batch, am = _left_padded([4, 5, 3], seed=11)
    P = batch.shape[1]
    kw = dict(max_new_tokens=12, block_length=4, alg="entropy", threshold=0.3, use_cache=use_cache, **GREEDY)

    def stop_row_1(e):
        return torch.tensor([False, e.step >= 2, False])

    out = diffusion_generate(m, batch, attention_mask=am, step_callback=stop_row_1, return_dict_in_generate=True,
                             **kw)
    free = diffusion_generate(m, batch, attention_mask=am, return_dict_in_generate=True, **kw)
    for i in (0, 2):
        alone = diffusion_generate(m, rows[i][None], **kw)
        assert torch.equal(out.sequences[i, P:], alone[0, len(rows[i]):])
    never = out.trace.reveal_step[1, P:] < 0  # what row 1 had not revealed when it was stopped
    assert never.any() and (out.sequences[1, P:][never] == PAD).all() and not (out.sequences == MASK).any()
    assert (out.trace.reveal_step[1] <= 2).all(), "a stopped row reveals nothing more"
    assert out.trace.extra["positions_computed"] < free.trace.extra["positions_computed"]


# -- per-row settings -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("use_cache", [None, "dual"])
def test_rows_with_their_own_settings_decode_as_alone(use_cache):
    """A server batch: a greedy row, two seeded rows at different temperatures, a top-k row; each equals itself
    decoded alone with the same settings and a generator seeded alike."""
    m = _model(seed=11)
    rows, batch, am = _left_padded([5, 3, 5, 4], seed=5)
    temps, top_ps, top_ks, seeds = [0.0, 0.8, 1.2, 0.5], [None, 0.9, None, None], [None, None, 20, 5], [0, 1, 2, 3]
    kw = dict(max_new_tokens=8, block_length=4, alg="entropy", threshold=0.3, use_cache=use_cache)
    out = diffusion_generate(m, batch, attention_mask=am, temperature=temps, top_p=top_ps, top_k=top_ks,
                             generator=[torch.Generator().manual_seed(s) for s in seeds], **kw)
    for i, r in enumerate(rows):
        alone = diffusion_generate(m, r[None], temperature=temps[i], top_p=top_ps[i], top_k=top_ks[i],
                                   generator=torch.Generator().manual_seed(seeds[i]), **kw)
        assert torch.equal(out[i, batch.shape[1]:], alone[0, len(r):]), f"row {i} differs"


def test_per_prompt_settings_follow_num_return_sequences():
    m = _model(seed=12)
    p = _prompts(2, 4, seed=10)
    out = diffusion_generate(m, p, max_new_tokens=6, steps=6, alg="entropy", num_return_sequences=3,
                             temperature=[0.0, 1.0], generator=torch.Generator().manual_seed(0), top_k=None,
                             return_dict_in_generate=True)
    assert out.trace.extra["temperature"] == [0.0, 0.0, 0.0, 1.0, 1.0, 1.0]
    assert torch.equal(out.sequences[0], out.sequences[1]) and torch.equal(out.sequences[1], out.sequences[2])


# -- bad input -----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs,match", [
    (dict(use_cache="yes"), "use_cache"),
    (dict(use_cache="dual", block_length=4, generation_logits_hook_func=lambda s, x, l: l), "logits hook"),
    (dict(cache_refresh=1), "cache_refresh needs use_cache"),
    (dict(threshold=1.01, alg="entropy"), "threshold"),
    (dict(threshold=0, alg="entropy"), "threshold"),
    (dict(block_length=0), "block_length"),
    (dict(step_callback=3), "step_callback"),
    (dict(temperature=[0.1]), "temperature has 1 values"),
    (dict(early_stop=True, stop_token_ids=[]), "early_stop needs"),
])
def test_bad_cache_and_stream_arguments_fail_before_any_forward(kwargs, match):
    m = _model()
    calls = []
    m.register_forward_pre_hook(lambda *_: calls.append(1))
    kw = dict(max_new_tokens=8, steps=8)
    kw.update(kwargs)
    with pytest.raises(GenerationError, match=match):
        m.diffusion_generate(_prompts(2, 5), **kw)
    assert not calls
