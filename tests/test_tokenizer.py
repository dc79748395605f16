"""Tokenizers: special tokens by name, BPE training, the chat template, the real Dream vocabulary, the corpus."""

from __future__ import annotations

import json

import pytest

from diffucoder.data.corpus import stdlib_files
from diffucoder.tokenizer import (
    MASK_TOKEN,
    SPECIAL_TOKENS,
    TokenizerError,
    load_tokenizer,
)

from conftest import shared_path


def test_trained_tokenizer_round_trips_code(tiny_tokenizer):
    src = "def add(a, b):\n    \"\"\"Sum.\"\"\"\n    return a + b  # 42\n\tx = [1, 2]\n"
    ids = tiny_tokenizer.encode(src)
    assert tiny_tokenizer.decode(ids) == src
    assert len(ids) < len(src.encode())  # it compresses
    assert set(tiny_tokenizer.special_tokens()) == set(SPECIAL_TOKENS)
    assert all(i is not None for i in tiny_tokenizer.special_tokens().values())
    assert tiny_tokenizer.pad_token_id == tiny_tokenizer.sft_pad_token_id != tiny_tokenizer.eos_token_id


def test_special_tokens_are_single_ids_in_text(tiny_tokenizer):
    ids = tiny_tokenizer.encode(f"a{MASK_TOKEN}b")
    assert tiny_tokenizer.mask_token_id in ids and len(ids) == 3


def test_chat_template_matches_qwen_format(tiny_tokenizer):
    text = tiny_tokenizer.apply_chat_template([{"role": "user", "content": "Write f."}])
    assert text == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
                    "<|im_start|>user\nWrite f.<|im_end|>\n<|im_start|>assistant\n")
    with_system = tiny_tokenizer.apply_chat_template(
        [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}], add_generation_prompt=False)
    assert with_system == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n"
    with pytest.raises(TokenizerError, match="message 0"):
        tiny_tokenizer.apply_chat_template([{"content": "no role"}])


def test_saved_tokenizer_loads_here_and_in_transformers(tmp_path, tiny_tokenizer):
    tiny_tokenizer.save_pretrained(tmp_path)
    again = load_tokenizer(tmp_path)
    assert again.encode("x = 1\n") == tiny_tokenizer.encode("x = 1\n")
    transformers = pytest.importorskip("transformers")
    hf = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    msgs = [{"role": "user", "content": "hi"}]
    assert hf.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True) == \
        tiny_tokenizer.apply_chat_template(msgs)
    assert hf.mask_token_id == tiny_tokenizer.mask_token_id


def test_tokenizer_without_mask_token_is_rejected(tmp_path, tiny_tokenizer):
    tiny_tokenizer.save_pretrained(tmp_path)
    data = json.loads((tmp_path / "tokenizer.json").read_text())
    data["added_tokens"] = [t for t in data["added_tokens"] if t["content"] != MASK_TOKEN]
    del data["model"]["vocab"][MASK_TOKEN]
    (tmp_path / "tokenizer.json").write_text(json.dumps(data))
    with pytest.raises(TokenizerError, match=r"tokenizer\.json: the mask token '<\|mask\|>' is absent"):
        load_tokenizer(tmp_path)
    fixed = load_tokenizer(tmp_path, require_mask=False)  # adds the diffusion tokens
    assert fixed.mask_token_id is not None
    with pytest.raises(FileNotFoundError, match="nowhere: no such tokenizer file or folder"):
        load_tokenizer(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty: this folder has no tokenizer.json"):
        load_tokenizer(tmp_path / "empty")


def test_real_dream_vocabulary():
    tok = load_tokenizer(shared_path("tokenizers", "dream-qwen2.5", "tokenizer.json"))
    assert tok.mask_token_id == 151666
    assert tok.eos_token_id == 151643 and tok.im_start_id == 151644 and tok.im_end_id == 151645
    assert tok.bos_token_id == 151665
    assert tok.sft_pad_token_id is None and tok.pad_token_id == 151643
    text = "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n"
    assert tok.decode(tok.encode(text)) == text
    chat = tok.encode(tok.apply_chat_template([{"role": "user", "content": "hi"}]))
    assert chat[0] == 151644


def test_stdlib_corpus_is_deterministic_and_excludes_tests():
    files = stdlib_files()
    assert len(files) > 300
    assert files == stdlib_files()
    rel = [f.as_posix() for f in files]
    assert not any("/test/" in r or "/tests/" in r or "site-packages" in r for r in rel)
    assert not any(f.name.startswith("test_") for f in files)
    assert any(f.name == "textwrap.py" for f in files)
