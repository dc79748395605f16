"""Reference equivalence: our ``diffusion_generate`` against an independent re-statement of Dream's sampler.

``reference_generate`` below is a deliberately straightforward re-statement of the reference algorithm as
reference.md section 3 describes it: the batch-*average* masked count, ``torch.topk`` over a full-row confidence
with ``-inf`` at unmasked positions, the global RNG (``torch.rand`` / ``Categorical.sample`` /
``torch.multinomial``), the 4-D outer-product attention mask. It shares no code with ``diffucoder.sampling``.
Our sampler must reproduce its canvases step by step (hence the same tokens AND the same reveal order) at
temperature 0 for every alg on rows with equal masked counts, and, seeded alike, its random draws too.
"""

from __future__ import annotations

import pytest
import torch
import torch.distributions as dists
import torch.nn.functional as F

from diffucoder.model import DreamConfig, DreamModel

V, MASK = 48, 47


def _top_p(logits, top_p):
    sorted_logits, sorted_indices = torch.sort(logits, descending=True)
    cumulative = torch.cumsum(F.softmax(sorted_logits, dim=-1), dim=-1)
    remove = cumulative > top_p
    remove[..., 1:] = remove[..., :-1].clone()
    remove[..., 0] = 0
    mask = torch.zeros_like(logits, dtype=torch.bool).scatter_(-1, sorted_indices, remove)
    return logits.masked_fill(mask, torch.finfo(logits.dtype).min)


def _top_k(logits, top_k):
    top_k = min(top_k, logits.size(-1))
    return logits.masked_fill(logits < torch.topk(logits, top_k)[0][..., -1, None], torch.finfo(logits.dtype).min)


def _sample(logits, temperature, top_p, top_k, margin=False, neg_entropy=False):
    if temperature > 0:
        logits = logits / temperature
    if top_p is not None and top_p < 1:
        logits = _top_p(logits, top_p)
    if top_k is not None:
        logits = _top_k(logits, top_k)
    probs = torch.softmax(logits, dim=-1)
    if temperature > 0:
        x0 = dists.Categorical(probs=probs).sample()
        confidence = torch.gather(probs, -1, x0.unsqueeze(-1)).squeeze(-1)
    else:
        confidence, x0 = probs.max(dim=-1)
    if margin:
        sp, _ = torch.sort(probs, dim=-1, descending=True)
        confidence = sp[:, 0] - sp[:, 1]
    if neg_entropy:
        confidence = torch.sum(probs * torch.log(probs + 1e-10), dim=-1)
    return confidence, x0


@torch.no_grad()
def reference_generate(model, input_ids, attention_mask, max_new_tokens, steps, eps=1e-3, alg="origin",
                       alg_temp=None, temperature=0.0, top_p=None, top_k=None, logits_hook=None, mask_id=MASK):
    """Dream's ``_sample`` loop, re-stated; returns the list of canvases after every step."""
    max_length = input_ids.shape[1] + max_new_tokens
    x = F.pad(input_ids, (0, max_length - input_ids.shape[1]), value=mask_id)
    if attention_mask is not None and torch.any(attention_mask == 0):
        attention_mask = F.pad(attention_mask, (0, max_length - attention_mask.shape[1]), value=1)
        tok_idx = attention_mask.long().cumsum(-1) - 1
        tok_idx.masked_fill_(attention_mask == 0, 1)
        attention_mask = torch.logical_and(attention_mask.bool().unsqueeze(1).unsqueeze(-2),
                                           attention_mask.bool().unsqueeze(1).unsqueeze(-1))
    else:
        tok_idx, attention_mask = None, None
    timesteps = torch.linspace(1, eps, steps + 1)
    history = []
    for i in range(steps):
        mask_index = x == mask_id
        logits = model(x, attention_mask, tok_idx).logits
        logits = torch.cat([logits[:, :1], logits[:, :-1]], dim=1)
        if logits_hook is not None:
            logits = logits_hook(i, x, logits)
        mask_logits = logits[mask_index]
        t, s = timesteps[i], timesteps[i + 1]
        if alg == "origin":
            p_transfer = 1 - s / t if i < steps - 1 else 1
            x0 = torch.zeros_like(x[mask_index]) + mask_id
            transfer = torch.rand(*x0.shape) < p_transfer
            _, x0[transfer] = _sample(mask_logits[transfer], temperature, top_p, top_k)
            x[mask_index] = x0.clone()
        else:
            confidence, x0 = _sample(mask_logits, temperature, top_p, top_k, margin=alg == "topk_margin",
                                     neg_entropy=alg == "entropy")
            num_mask_token = mask_index.sum() / mask_index.shape[0]
            n = int(num_mask_token * (1 - s / t)) if i < steps - 1 else int(num_mask_token)
            full_confidence = torch.full_like(x, -torch.inf, dtype=logits.dtype)
            full_confidence[mask_index] = confidence
            if n > 0:
                if alg_temp is None or alg_temp == 0:
                    _, transfer_index = torch.topk(full_confidence, n)
                else:
                    full_confidence = F.softmax(full_confidence / alg_temp, dim=-1)
                    transfer_index = torch.multinomial(full_confidence, num_samples=n)
                x_ = torch.zeros_like(x) + mask_id
                x_[mask_index] = x0.clone()
                rows = torch.arange(x.size(0)).unsqueeze(1).expand_as(transfer_index)
                x[rows, transfer_index] = x_[rows, transfer_index]
        history.append(x.clone())
    return history


def no_mask_logit(step, x, logits):
    """A model that never prefers [MASK] (so the reference never leaves one): shared by both samplers."""
    return logits.index_fill(-1, torch.tensor([MASK]), float("-inf"))


@pytest.fixture(scope="module")
def model() -> DreamModel:
    cfg = DreamConfig.preset("tiny", vocab_size=V, mask_token_id=MASK, eos_token_id=0, pad_token_id=1,
                             tie_word_embeddings=False, initializer_range=0.3)
    m = DreamModel(cfg, init_weights=False)
    m.init_weights(torch.Generator().manual_seed(7))
    return m.eval()


def _prompts(B: int, P: int, seed: int) -> torch.Tensor:
    return torch.randint(2, MASK, (B, P), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("alg", ["origin", "maskgit_plus", "topk_margin", "entropy"])
@pytest.mark.parametrize("steps,new", [(8, 8), (4, 9)])
def test_greedy_equals_reference(model, alg, steps, new):
    prompts = _prompts(3, 6, seed=steps + new)
    with torch.random.fork_rng():
        torch.manual_seed(11)
        ref = reference_generate(model, prompts.clone(), None, new, steps, alg=alg, logits_hook=no_mask_logit)
    ours = model.diffusion_generate(prompts.clone(), max_new_tokens=new, steps=steps, alg=alg, temperature=0.0,
                                    output_history=True, return_dict_in_generate=True,
                                    generation_logits_hook_func=no_mask_logit,
                                    generator=torch.Generator().manual_seed(11))
    assert len(ours.history) == len(ref) == steps
    for i, (a, b) in enumerate(zip(ours.history, ref)):
        assert torch.equal(a, b), f"canvas differs from the reference after step {i}"
    assert not (ours.sequences == MASK).any()


def test_greedy_equals_reference_with_left_padding(model):
    """The reference's 4-D outer-product mask and our 2-D mask give the same decode on a padded batch."""
    prompts = _prompts(3, 7, seed=3)
    am = torch.ones_like(prompts)
    am[0, :3] = 0
    am[2, :1] = 0
    prompts = prompts.masked_fill(am == 0, 1)
    for alg in ("maskgit_plus", "entropy", "topk_margin"):
        ref = reference_generate(model, prompts.clone(), am, 6, 6, alg=alg, logits_hook=no_mask_logit)
        ours = model.diffusion_generate(prompts.clone(), attention_mask=am, max_new_tokens=6, steps=6, alg=alg,
                                        temperature=0.0, output_history=True, return_dict_in_generate=True,
                                        generation_logits_hook_func=no_mask_logit)
        for a, b in zip(ours.history, ref):
            assert torch.equal(a, b)


@pytest.mark.parametrize("alg,alg_temp,temperature", [("origin", None, 1.0), ("entropy", 0.5, 0.0),
                                                      ("maskgit_plus", 0.3, 0.8)])
def test_seeded_draws_follow_the_reference_rng_stream(model, alg, alg_temp, temperature):
    """With reference_draws, our generator makes the same draws, in the same order, as the reference's RNG."""
    prompts = _prompts(2, 5, seed=5)
    with torch.random.fork_rng():
        torch.manual_seed(2024)
        ref = reference_generate(model, prompts.clone(), None, 10, 10, alg=alg, alg_temp=alg_temp,
                                 temperature=temperature, top_p=0.95, logits_hook=no_mask_logit)
    ours = model.diffusion_generate(prompts.clone(), max_new_tokens=10, steps=10, alg=alg, alg_temp=alg_temp,
                                    temperature=temperature, top_p=0.95, output_history=True,
                                    return_dict_in_generate=True, generation_logits_hook_func=no_mask_logit,
                                    generator=torch.Generator().manual_seed(2024), reference_draws=True)
    for a, b in zip(ours.history, ref):
        assert torch.equal(a, b)


@pytest.mark.parametrize("alg", ["maskgit_plus", "topk_margin", "entropy"])
def test_bfloat16_ties_are_broken_as_the_reference(model, alg):
    """In bf16 many confidences tie; the reference's torch.topk decides which of them go first, and so do we."""
    m16 = DreamModel(model.config, init_weights=False)
    m16.load_state_dict(model.state_dict())
    m16 = m16.to(torch.bfloat16).eval()
    prompts = _prompts(4, 6, seed=9)
    ref = reference_generate(m16, prompts.clone(), None, 16, 8, alg=alg, top_p=0.95, logits_hook=no_mask_logit)
    ours = m16.diffusion_generate(prompts.clone(), max_new_tokens=16, steps=8, alg=alg, top_p=0.95, temperature=0.0,
                                  output_history=True, return_dict_in_generate=True,
                                  generation_logits_hook_func=no_mask_logit)
    for a, b in zip(ours.history, ref):
        assert torch.equal(a, b)


@pytest.mark.parametrize("alg", ["maskgit_plus", "topk_margin", "entropy"])
def test_exact_ties_are_broken_as_the_reference(model, alg):
    """A hook gives six canvas positions identical logits, so their confidences tie exactly."""
    P = 5

    def tie(step, x, logits):
        logits = no_mask_logit(step, x, logits).clone()
        logits[:, P + 1:P + 12:2] = logits[:, P + 1:P + 2]
        return logits

    prompts = _prompts(2, P, seed=12)
    ref = reference_generate(model, prompts.clone(), None, 14, 7, alg=alg, logits_hook=tie)
    ours = model.diffusion_generate(prompts.clone(), max_new_tokens=14, steps=7, alg=alg, output_history=True,
                                    temperature=0.0,
                                    return_dict_in_generate=True, generation_logits_hook_func=tie)
    for a, b in zip(ours.history, ref):
        assert torch.equal(a, b)


@pytest.mark.parametrize("scale", [0.5, 3.0, 15.0])
def test_fast_top_p_equals_the_reference_filter(scale):
    """The partial-top-k nucleus gives bit-identical filtered logits to the reference's full sort."""
    from diffucoder.sampling.policies import top_p_filter

    g = torch.Generator().manual_seed(int(scale * 10))
    for V_ in (100, 3000):
        x = torch.randn(48, V_, generator=g) * scale
        x[:, :4] = x[:, 4:8]  # exact ties
        x[:8, 10:] = float("-inf")  # vocabulary limit
        for top_p in (0.3, 0.9, 0.95, 0.999):
            assert torch.equal(top_p_filter(x, top_p), _top_p(x, top_p)), (V_, top_p)


def test_large_vocab_sampled_decode_equals_reference():
    """A 700-id model at temperature 0.3 / top-p 0.95 (the fast nucleus path), seeded alike."""
    cfg = DreamConfig.preset("tiny", vocab_size=700, mask_token_id=699, tie_word_embeddings=False,
                             initializer_range=0.5)
    m = DreamModel(cfg, init_weights=False)
    m.init_weights(torch.Generator().manual_seed(3))
    m.eval()
    hook = lambda step, x, logits: logits.index_fill(-1, torch.tensor([699]), float("-inf"))  # noqa: E731
    prompts = torch.randint(0, 699, (3, 6), generator=torch.Generator().manual_seed(4))
    for alg, temp in (("entropy", 0.3), ("maskgit_plus", 0.0)):
        with torch.random.fork_rng():
            torch.manual_seed(77)
            ref = reference_generate(m, prompts.clone(), None, 8, 8, alg=alg, temperature=temp, top_p=0.95,
                                     logits_hook=hook, mask_id=699)
        ours = m.diffusion_generate(prompts.clone(), max_new_tokens=8, steps=8, alg=alg, temperature=temp,
                                    top_p=0.95, top_k=None, output_history=True, return_dict_in_generate=True,
                                    generation_logits_hook_func=hook, generator=torch.Generator().manual_seed(77),
                                    reference_draws=True)
        for a, b in zip(ours.history, ref):
            assert torch.equal(a, b)


# -- the reference's defaults as users run it ----------------------------------------------------------------------
# transformers 4.x: every PretrainedConfig carries these legacy generation attributes unless config.json sets them
LEGACY = {"temperature": 1.0, "top_k": 50, "top_p": 1.0, "max_length": 20}
# DreamGenerationConfig.__init__'s own defaults
DREAM = {"temperature": 0.0, "top_p": None, "top_k": None, "steps": 512, "alg": "origin", "alg_temp": None}


def reference_settings(config_json: dict, **call_kwargs) -> dict:
    """Dream's ``_prepare_generation_config`` with no generation_config passed, re-stated:
    ``DreamGenerationConfig.from_model_config(model.config)`` builds the settings from the model config's dict
    (legacy defaults overlaid by config.json; ``None`` values dropped, so DreamGenerationConfig's own defaults
    take over for them), then ``generation_config.update(**kwargs)`` applies what the call passed."""
    model_config = {**LEGACY, **config_json}
    from_model = {k: v for k, v in model_config.items() if v is not None}
    settings = {**DREAM, **{k: v for k, v in from_model.items() if k in DREAM}}
    settings.update(call_kwargs)
    return settings


def reference_as_run(model, prompts, new, config_json=None, **call_kwargs):
    s = reference_settings(config_json or {}, **call_kwargs)
    return reference_generate(model, prompts, None, new, s["steps"], alg=s["alg"], alg_temp=s["alg_temp"],
                              temperature=s["temperature"], top_p=s["top_p"], top_k=s["top_k"],
                              logits_hook=call_kwargs.get("logits_hook"), mask_id=call_kwargs.get("mask_id", MASK))


@pytest.fixture(scope="module")
def wide_model() -> DreamModel:
    """300 ids: more than the inherited top_k of 50, so the filter changes confidences (and orders)."""
    cfg = DreamConfig.preset("tiny", vocab_size=300, mask_token_id=299, tie_word_embeddings=False,
                             initializer_range=0.25)
    m = DreamModel(cfg, init_weights=False)
    m.init_weights(torch.Generator().manual_seed(21))
    return m.eval()


def _no_mask_299(step, x, logits):
    return logits.index_fill(-1, torch.tensor([299]), float("-inf"))


@pytest.mark.parametrize("alg", ["maskgit_plus", "topk_margin", "entropy"])
def test_greedy_defaults_are_the_reference_as_run(wide_model, alg):
    """No top_k passed: the reference decodes with the inherited top_k = 50, and so do we."""
    prompts = torch.randint(0, 299, (3, 6), generator=torch.Generator().manual_seed(8))
    kw = dict(steps=12, alg=alg, temperature=0.0)
    ref = reference_as_run(wide_model, prompts.clone(), 12, logits_hook=_no_mask_299, mask_id=299, **kw)
    ours = wide_model.diffusion_generate(prompts.clone(), max_new_tokens=12, output_history=True,
                                         return_dict_in_generate=True, generation_logits_hook_func=_no_mask_299,
                                         **kw)
    for a, b in zip(ours.history, ref):
        assert torch.equal(a, b)
    assert ours.trace.extra["top_k"] == 50
    # top-k switched off: the same call without the inherited filter, as the reference with top_k=None
    off = wide_model.diffusion_generate(prompts.clone(), max_new_tokens=12, output_history=True, top_k=None,
                                        return_dict_in_generate=True, generation_logits_hook_func=_no_mask_299, **kw)
    ref_off = reference_as_run(wide_model, prompts.clone(), 12, logits_hook=_no_mask_299, mask_id=299, top_k=None,
                               **kw)
    for a, b in zip(off.history, ref_off):
        assert torch.equal(a, b)


def test_top_k_changes_the_reveal_order_on_this_model(wide_model):
    """Guard that the test above can fail: with entropy order the top-50 filter changes what this model does."""
    prompts = torch.randint(0, 299, (3, 6), generator=torch.Generator().manual_seed(8))
    kw = dict(max_new_tokens=12, steps=12, alg="entropy", temperature=0.0, return_dict_in_generate=True,
              generation_logits_hook_func=_no_mask_299)
    a = wide_model.diffusion_generate(prompts.clone(), **kw)
    b = wide_model.diffusion_generate(prompts.clone(), top_k=None, **kw)
    assert not torch.equal(a.trace.reveal_step, b.trace.reveal_step)


@pytest.mark.parametrize("call", [
    dict(alg="entropy", temperature=0.4, top_p=0.95, steps=10),   # DiffuCoder's README call: top-p AND top-k 50
    dict(alg="maskgit_plus", steps=10),                            # nothing passed: temperature 1.0, top-k 50
    dict(alg="origin", steps=10),
])
def test_seeded_sampling_defaults_are_the_reference_as_run(wide_model, call):
    prompts = torch.randint(0, 299, (2, 5), generator=torch.Generator().manual_seed(9))
    with torch.random.fork_rng():
        torch.manual_seed(123)
        ref = reference_as_run(wide_model, prompts.clone(), 10, logits_hook=_no_mask_299, mask_id=299, **call)
    ours = wide_model.diffusion_generate(prompts.clone(), max_new_tokens=10, output_history=True,
                                         return_dict_in_generate=True, generation_logits_hook_func=_no_mask_299,
                                         generator=torch.Generator().manual_seed(123), reference_draws=True, **call)
    for a, b in zip(ours.history, ref):
        assert torch.equal(a, b)


@pytest.mark.parametrize("config_json", [{"top_k": 7}, {"top_k": None}, {"temperature": None},
                                         {"temperature": 0.5, "top_p": 0.9}])
def test_a_checkpoint_config_sets_its_own_defaults(wide_model, config_json):
    """Keys in config.json take precedence over the legacy defaults; null means DreamGenerationConfig's default."""
    import copy

    m = copy.deepcopy(wide_model)
    m.config.extra.update(config_json)
    prompts = torch.randint(0, 299, (2, 5), generator=torch.Generator().manual_seed(10))
    call = dict(alg="entropy", steps=8)
    with torch.random.fork_rng():
        torch.manual_seed(5)
        ref = reference_as_run(m, prompts.clone(), 8, config_json=config_json, logits_hook=_no_mask_299,
                               mask_id=299, **call)
    ours = m.diffusion_generate(prompts.clone(), max_new_tokens=8, output_history=True, return_dict_in_generate=True,
                                generation_logits_hook_func=_no_mask_299, generator=torch.Generator().manual_seed(5),
                                reference_draws=True, **call)
    for a, b in zip(ours.history, ref):
        assert torch.equal(a, b)
