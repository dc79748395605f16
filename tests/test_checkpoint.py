"""Checkpoint folders: bit-exact round trips, sharding, the Dream layout, Qwen2 initialisation, clear errors,
and atomic saves that survive SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file, save_file

from diffucoder.model import CheckpointError, DreamConfig, DreamModel

# Keys of DiffuCoder-7B-Instruct's config.json (auto_map / transformers_version are the Hub's own additions).
DREAM_CONFIG_KEYS = {
    "architectures", "attention_dropout", "bos_token_id", "eos_token_id", "hidden_act", "hidden_size",
    "initializer_range", "intermediate_size", "mask_token_id", "max_position_embeddings", "max_window_layers",
    "model_type", "num_attention_heads", "num_hidden_layers", "num_key_value_heads", "pad_token_id",
    "rms_norm_eps", "rope_scaling", "rope_theta", "sliding_window", "tie_word_embeddings", "torch_dtype",
    "use_cache", "use_sliding_window", "vocab_size",
}


def _model(tied: bool = False, dtype=torch.float32, seed: int = 0) -> DreamModel:
    torch.manual_seed(seed)
    cfg = DreamConfig.preset("tiny", vocab_size=256, mask_token_id=255, eos_token_id=0, pad_token_id=0,
                             bos_token_id=0, tie_word_embeddings=tied)
    return DreamModel(cfg).to(dtype)


def _assert_same_weights(a: DreamModel, b: DreamModel) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert sa[k].dtype == sb[k].dtype, k
        assert torch.equal(sa[k], sb[k]), k


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shard", [None, 30_000])
@pytest.mark.parametrize("tied", [False, True])
def test_round_trip_is_bit_exact(tmp_path, dtype, shard, tied):
    m = _model(tied=tied, dtype=dtype)
    out = tmp_path / "ckpt"
    m.save_pretrained(out, max_shard_size=shard or "5GB")
    if shard:
        index = json.loads((out / "model.safetensors.index.json").read_text())
        shards = sorted(set(index["weight_map"].values()))
        assert len(shards) > 1 and shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
        assert not (out / "model.safetensors").exists()
    else:
        assert (out / "model.safetensors").is_file()
    loaded = DreamModel.from_pretrained(out)  # "auto": the stored dtype
    _assert_same_weights(m, loaded)
    assert (loaded.lm_head.weight is loaded.model.embed_tokens.weight) == tied
    x = torch.randint(0, 256, (2, 5))
    with torch.no_grad():
        assert torch.equal(m.eval()(x).logits, loaded(x).logits)


def test_dream_layout_and_names(tmp_path):
    m = _model()
    m.save_pretrained(tmp_path / "c")
    cfg = json.loads((tmp_path / "c" / "config.json").read_text())
    assert DREAM_CONFIG_KEYS <= cfg.keys()
    assert cfg["model_type"] == "Dream" and cfg["architectures"] == ["DreamModel"] and cfg["mask_token_id"] == 255
    gen = json.loads((tmp_path / "c" / "generation_config.json").read_text())
    assert gen["mask_token_id"] == 255 and gen["eos_token_id"] == 0
    names = set(load_file(str(tmp_path / "c" / "model.safetensors")))
    assert "model.embed_tokens.weight" in names and "lm_head.weight" in names
    assert "model.layers.1.self_attn.q_proj.bias" in names and "model.layers.0.mlp.gate_proj.weight" in names
    assert "model.norm.weight" in names and "model.layers.0.post_attention_layernorm.weight" in names


def test_load_with_dtype_conversion_and_unknown_keys_preserved(tmp_path):
    m = _model()
    m.save_pretrained(tmp_path / "c")
    cfg = json.loads((tmp_path / "c" / "config.json").read_text())
    cfg["auto_map"] = {"AutoModel": "modeling_dream.DreamModel"}
    (tmp_path / "c" / "config.json").write_text(json.dumps(cfg))
    b = DreamModel.from_pretrained(tmp_path / "c", torch_dtype=torch.bfloat16)
    assert b.dtype == torch.bfloat16
    assert torch.equal(b.lm_head.weight, m.lm_head.weight.to(torch.bfloat16))
    b.save_pretrained(tmp_path / "d")
    cfg2 = json.loads((tmp_path / "d" / "config.json").read_text())
    assert cfg2["auto_map"] == cfg["auto_map"] and cfg2["torch_dtype"] == "bfloat16"


def test_tokenizer_saved_alongside(tmp_path, tiny_tokenizer, tiny_model):
    from diffucoder.tokenizer import load_tokenizer

    tiny_model.save_pretrained(tmp_path / "c", tokenizer=tiny_tokenizer)
    tok = load_tokenizer(tmp_path / "c")
    assert tok.mask_token_id == tiny_model.config.mask_token_id
    assert (tmp_path / "c" / "tokenizer_config.json").is_file()


def test_init_from_qwen2_causal_lm_folder(tmp_path):
    transformers = pytest.importorskip("transformers")
    qc = transformers.Qwen2Config(vocab_size=200, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                  num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False,
                                  max_position_embeddings=512, rope_theta=1e6)
    torch.manual_seed(0)
    q = transformers.Qwen2ForCausalLM(qc)
    q.save_pretrained(tmp_path / "qwen")
    with pytest.raises(CheckpointError, match="mask_token_id"):
        DreamModel.from_pretrained(tmp_path / "qwen")
    m = DreamModel.from_qwen2(tmp_path / "qwen", mask_token_id=199)
    assert m.config.model_type == "Dream" and m.config.mask_token_id == 199 and m.config.rope_theta == 1e6
    qs = q.state_dict()
    for name, t in m.state_dict().items():
        assert torch.equal(t, qs[name].to(t.dtype)), name


# -- bad input ------------------------------------------------------------------------------------------------
def test_missing_config_names_the_file(tmp_path):
    (tmp_path / "c").mkdir()
    with pytest.raises(CheckpointError, match=r"config\.json: missing"):
        DreamModel.from_pretrained(tmp_path / "c")
    with pytest.raises(CheckpointError, match="nope: no such checkpoint folder"):
        DreamModel.from_pretrained(tmp_path / "nope")


def test_missing_weights_and_bad_model_type(tmp_path):
    m = _model()
    m.save_pretrained(tmp_path / "c")
    (tmp_path / "c" / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no weights found"):
        DreamModel.from_pretrained(tmp_path / "c")
    cfg = json.loads((tmp_path / "c" / "config.json").read_text())
    cfg["model_type"] = "llama"
    (tmp_path / "c" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="model_type 'llama' is not supported"):
        DreamModel.from_pretrained(tmp_path / "c")


def test_shape_mismatch_missing_and_unexpected_tensors(tmp_path):
    m = _model()
    m.save_pretrained(tmp_path / "c")
    f = tmp_path / "c" / "model.safetensors"
    sd = load_file(str(f))
    bad = dict(sd)
    bad["model.norm.weight"] = torch.ones(65)
    save_file(bad, str(f), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=r"'model\.norm\.weight' has shape \(65,\)"):
        DreamModel.from_pretrained(tmp_path / "c")
    missing = {k: v for k, v in sd.items() if k != "model.layers.1.mlp.up_proj.weight"}
    save_file(missing, str(f), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=r"missing tensors: \['model\.layers\.1\.mlp\.up_proj\.weight'\]"):
        DreamModel.from_pretrained(tmp_path / "c")
    extra = dict(sd)
    extra["model.layers.2.mlp.up_proj.weight"] = torch.zeros(2)
    save_file(extra, str(f), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="unexpected tensors"):
        DreamModel.from_pretrained(tmp_path / "c")


def test_index_naming_a_missing_shard(tmp_path):
    m = _model()
    m.save_pretrained(tmp_path / "c", max_shard_size=30_000)
    (tmp_path / "c" / "model-00002-of-00004.safetensors").unlink(missing_ok=True)
    shards = sorted(p.name for p in (tmp_path / "c").glob("model-*.safetensors"))
    if len(shards) == len(list((tmp_path / "c").glob("model-*"))):
        # make sure one named shard really is gone whatever the shard count
        (tmp_path / "c" / shards[-1]).unlink()
    with pytest.raises(CheckpointError, match="which is missing"):
        DreamModel.from_pretrained(tmp_path / "c")


def test_refuses_to_replace_a_folder_that_is_not_a_checkpoint(tmp_path):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "precious.txt").write_text("do not delete")
    with pytest.raises(CheckpointError, match="not a checkpoint folder"):
        _model().save_pretrained(tmp_path / "c")
    assert (tmp_path / "c" / "precious.txt").read_text() == "do not delete"


def test_sigkill_mid_save_keeps_the_old_checkpoint(tmp_path):
    """A save killed half-way (after its first shard) leaves the previous good folder intact and loadable."""
    old = _model(seed=1)
    target = tmp_path / "c"
    old.save_pretrained(target)
    script = textwrap.dedent(f"""
        import time, torch, safetensors.torch as st
        from diffucoder.model import DreamConfig, DreamModel
        real = st.save_file
        def slow(*a, **k):
            real(*a, **k)
            print("shard written", flush=True)
            time.sleep(60)
        st.save_file = slow
        torch.manual_seed(2)
        cfg = DreamConfig.preset("tiny", vocab_size=256, mask_token_id=255, eos_token_id=0, pad_token_id=0,
                                 bos_token_id=0)
        DreamModel(cfg).save_pretrained({str(target)!r}, max_shard_size=30_000)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "shard written"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    loaded = DreamModel.from_pretrained(target)
    _assert_same_weights(old, loaded)
    assert (target / "model.safetensors").is_file() and not (target / "model.safetensors.index.json").exists()
    # a later good save replaces it, and the dead writer's temp folder does not break anything
    new = _model(seed=3)
    new.save_pretrained(target)
    _assert_same_weights(new, DreamModel.from_pretrained(target))
