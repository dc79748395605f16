"""The Dream transformer: shapes, mask forms, dtypes, and parity with an independent implementation."""

from __future__ import annotations

import pytest
import torch

from diffucoder.model import DreamConfig, DreamModel, align_logits


def _random_model(seed: int = 0, **overrides) -> DreamModel:
    torch.manual_seed(seed)
    cfg = DreamConfig.preset("tiny", vocab_size=128, mask_token_id=127, tie_word_embeddings=False, **overrides)
    m = DreamModel(cfg).eval()
    with torch.no_grad():  # larger weights than the init so that differences would show
        for p in m.parameters():
            p.normal_(0.0, 0.1)
    return m


def test_logits_shape_and_dtypes():
    m = _random_model()
    x = torch.randint(0, 128, (3, 9))
    out = m(x)
    assert out.logits.shape == (3, 9, 128) and out.logits.dtype == torch.float32
    mb = _random_model().to(torch.bfloat16)
    outb = mb(x)
    assert outb.logits.dtype == torch.bfloat16 and torch.isfinite(outb.logits.float()).all()
    # bf16 is an approximation of fp32, not something else
    assert (outb.logits.float() - out.logits).abs().max() < 0.25


def test_attention_is_bidirectional():
    m = _random_model()
    x = torch.randint(0, 128, (1, 8))
    y = x.clone()
    y[0, -1] = (x[0, -1] + 1) % 128
    with torch.no_grad():
        a, b = m(x).logits, m(y).logits
    # changing the last token changes the output at the first position (a causal model would not)
    assert (a[0, 0] - b[0, 0]).abs().max() > 1e-4


def test_mask_forms_agree():
    m = _random_model()
    x = torch.randint(0, 128, (2, 7))
    with torch.no_grad():
        none = m(x).logits
        ones2d = m(x, attention_mask=torch.ones(2, 7, dtype=torch.long)).logits
        full4d = m(x, attention_mask=torch.ones(2, 1, 7, 7, dtype=torch.bool)).logits
    torch.testing.assert_close(none, ones2d, rtol=0, atol=1e-6)
    torch.testing.assert_close(none, full4d, rtol=0, atol=1e-6)


def test_left_padding_row_equals_row_alone():
    m = _random_model()
    row = torch.randint(0, 120, (1, 6))
    padded = torch.cat([torch.full((1, 3), 0), row], dim=1)
    other = torch.randint(0, 120, (1, 9))
    batch = torch.cat([padded, other])
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[0, :3] = 0
    with torch.no_grad():
        alone = m(row).logits[0]
        batched = m(batch, attention_mask=mask).logits
    torch.testing.assert_close(batched[0, 3:], alone, rtol=0, atol=1e-5)
    torch.testing.assert_close(batched[1], m(other).logits[0], rtol=0, atol=1e-5)


def test_4d_mask_restricts_attention_and_empty_rows_are_finite():
    m = _random_model()
    x = torch.randint(0, 128, (1, 6))
    causal = torch.tril(torch.ones(6, 6, dtype=torch.bool))[None, None]
    with torch.no_grad():
        c = m(x, attention_mask=causal).logits
        y = x.clone()
        y[0, 5] = (x[0, 5] + 1) % 128
        c2 = m(y, attention_mask=causal).logits
        assert torch.equal(c[0, :5], c2[0, :5])  # causal mask: earlier outputs ignore a later change
        empty = causal.clone()
        empty[..., 2, :] = False
        assert torch.isfinite(m(x, attention_mask=empty).logits).all()


def test_bad_masks_are_rejected():
    m = _random_model()
    x = torch.randint(0, 128, (2, 5))
    with pytest.raises(ValueError, match="does not match"):
        m(x, attention_mask=torch.ones(2, 4))
    with pytest.raises(ValueError, match="4-D attention_mask"):
        m(x, attention_mask=torch.ones(2, 1, 5, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="2-D"):
        m(torch.randint(0, 128, (5,)))


def test_tied_head_shares_the_embedding():
    cfg = DreamConfig.preset("tiny", vocab_size=64, mask_token_id=63, tie_word_embeddings=True)
    m = DreamModel(cfg)
    assert m.lm_head.weight is m.model.embed_tokens.weight
    assert m.num_parameters() == cfg.num_parameters()


def test_align_logits_undoes_the_shift():
    logits = torch.arange(4.0).view(1, 4, 1)  # output i "predicts" token i+1
    assert align_logits(logits, shift=True).flatten().tolist() == [0.0, 0.0, 1.0, 2.0]
    assert align_logits(logits, shift=False).flatten().tolist() == [0.0, 1.0, 2.0, 3.0]


def test_config_validation_names_the_problem():
    from diffucoder.model import ConfigError

    with pytest.raises(ConfigError, match="multiple of num_key_value_heads"):
        DreamConfig.preset("tiny", vocab_size=64, num_key_value_heads=3)
    with pytest.raises(ConfigError, match="mask_token_id 70 is outside"):
        DreamConfig.preset("tiny", vocab_size=64, mask_token_id=70)


def test_parity_with_transformers_qwen2_full_attention():
    """Independent implementation: transformers' Qwen2 (eager attention) with a 4-D all-True mask and
    non-causal attention modules, same random weights. reference.md 7: a 2-D mask would make it causal again."""
    transformers = pytest.importorskip("transformers")
    m = _random_model(seed=1)
    cfg = m.config
    qc = transformers.Qwen2Config(
        vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers, num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_key_value_heads, rope_theta=cfg.rope_theta, rms_norm_eps=cfg.rms_norm_eps,
        tie_word_embeddings=False, max_position_embeddings=cfg.max_position_embeddings,
    )
    qc._attn_implementation = "eager"
    ref = transformers.Qwen2ForCausalLM(qc).eval()
    result = ref.load_state_dict(m.state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    for layer in ref.model.layers:
        layer.self_attn.is_causal = False
    x = torch.randint(0, cfg.vocab_size, (2, 16))
    with torch.no_grad():
        ours = m(x).logits
        theirs = ref(input_ids=x, attention_mask=torch.ones(2, 1, 16, 16, dtype=torch.bool)).logits
    diff = (ours - theirs).abs().max().item()
    assert diff <= 1e-5, diff
