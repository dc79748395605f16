"""``diffucoder generate`` and ``diffucoder analyze`` end to end on a tiny random checkpoint with a real
(small, freshly trained) tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from diffucoder.cli.main import main
from diffucoder.model import DreamConfig, DreamModel


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    from diffucoder.tokenizer import train_tokenizer

    texts = ["def add(a, b):\n    return a + b\n", "for i in range(10):\n    print(i)\n",
             "class Foo:\n    def bar(self):\n        return None\n"] * 20
    tok = train_tokenizer(texts, vocab_size=300)
    cfg = DreamConfig.preset("tiny", vocab_size=tok.vocab_size + 20, mask_token_id=tok.mask_token_id,
                             eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                             tie_word_embeddings=False, initializer_range=0.2)
    m = DreamModel(cfg, init_weights=False)
    m.init_weights(torch.Generator().manual_seed(0))
    path = tmp_path_factory.mktemp("ckpt") / "tiny"
    m.save_pretrained(path, tokenizer=tok)
    return path


def test_generate_prints_completion_and_trace(ckpt, capsys):
    rc = main(["generate", "--model", str(ckpt), "--prompt", "def add(a, b):", "--max-new-tokens", "8",
               "--temperature", "0", "--trace", "--raw"])
    assert rc == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    header = lines.index(next(ln for ln in lines if ln.strip().startswith("pos")))
    rows = [ln.split() for ln in lines[header + 1:]]
    assert len(rows) == 8
    assert {int(r[0]) for r in rows} == set(range(8))
    assert "8 forward passes" in err


def test_generate_show_renders_the_canvas(ckpt, capsys):
    rc = main(["generate", "--model", str(ckpt), "--prompt", "for i in", "--max-new-tokens", "6", "--steps", "3",
               "--show", "--chat", "--seed", "3"])
    assert rc == 0
    out, _ = capsys.readouterr()
    assert "step 3: 0 masked of 6" in out  # the last redraw of the live panel


def test_generate_bad_input_is_a_clear_error(ckpt, capsys):
    rc = main(["generate", "--model", str(ckpt), "--prompt", "x", "--steps", "0"])
    assert rc == 2
    assert "argument --steps: must be >= 1, got 0" in capsys.readouterr().err


def test_analyze_writes_json_and_plots(ckpt, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("\n".join(json.dumps({"task_id": f"t{i}", "prompt": p})
                                 for i, p in enumerate(["def add(a, b):", "class Foo:", "for i in range(3):"])))
    out = tmp_path / "an"
    rc = main(["analyze", "--model", str(ckpt), "--prompts", str(prompts), "--temperatures", "0.2,1.0",
               "--max-new-tokens", "8", "--out", str(out), "--batch-size", "2", "--max-k", "4"])
    assert rc == 0
    data = json.loads((out / "analysis.json").read_text())
    assert [r["temperature"] for r in data["results"]] == [0.2, 1.0]
    for r in data["results"]:
        assert r["ar_ness"]["ks"] == [1, 2, 3, 4] and r["ar_ness"]["num_orders"] == 3
        loc, glo = r["ar_ness"]["local"], r["ar_ness"]["global"]
        assert loc == sorted(loc, reverse=True) and glo == sorted(glo)
        assert len(r["first_step_profile"]) == 8
        assert len(r["reveal_heatmap"]) == 8 and len(r["reveal_heatmap"][0]) == 8
    for name in ("ar_ness.png", "first_step_profile.png", "reveal_heatmap_T0.2.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    rc = main(["analyze", "--model", str(ckpt), "--prompts", str(tmp_path / "missing.jsonl")])
    assert rc == 2 and "missing.jsonl" in capsys.readouterr().err


def test_decode_and_render_helpers(ckpt):
    from diffucoder.sampling import decode_completions, render_canvas
    from diffucoder.tokenizer import load_tokenizer

    tok = load_tokenizer(ckpt)
    a, b = tok.encode("def add"), tok.encode("(a, b):")
    seq = torch.tensor([a + b + [tok.eos_token_id] + b, a + [tok.pad_token_id] + b + b])
    assert decode_completions(tok, seq, len(a)) == ["(a, b):", ""]
    canvas = a + [tok.mask_token_id] * 2 + b
    assert render_canvas(tok, canvas, tok.mask_token_id, mask_symbol="_") == "def add__(a, b):"


def test_generate_fast_decoding_flags_and_inherited_top_k(ckpt, capsys, monkeypatch):
    """--use-cache/--threshold/--early-stop reach the decoder; without --top-k none is passed (the reference's
    inherited default applies), --top-k 0 switches it off."""
    import diffucoder.sampling as S
    from diffucoder.cli.main import main

    seen: list[dict] = []
    real = S.diffusion_generate
    monkeypatch.setattr(S, "diffusion_generate", lambda *a, **kw: seen.append(kw) or real(*a, **kw))
    base = ["generate", "--model", str(ckpt), "--prompt", "def f(x):", "--max-new-tokens", "8", "--temperature", "0"]
    assert main(base + ["--block-length", "4", "--threshold", "0.5", "--use-cache", "dual", "--early-stop"]) == 0
    assert seen[-1]["use_cache"] == "dual" and seen[-1]["early_stop"] and seen[-1]["threshold"] == 0.5
    assert "top_k" not in seen[-1]
    assert main(base + ["--top-k", "0"]) == 0
    assert seen[-1]["top_k"] is None
    assert main(base + ["--cache-refresh", "2"]) == 2
    assert "--cache-refresh needs --use-cache" in capsys.readouterr().err
