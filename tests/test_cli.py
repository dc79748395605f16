"""The console script: help, info on a checkpoint, tokenizer training."""

from __future__ import annotations

import json
import subprocess
import sys


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "diffucoder.cli.main", *args], capture_output=True, text=True,
                          timeout=120)


def test_help_lists_commands():
    r = _run("--help")
    assert r.returncode == 0 and "info" in r.stdout and "tokenizer" in r.stdout


def test_info_reports_parameters_config_and_special_tokens(tmp_path, tiny_model, tiny_tokenizer):
    tiny_model.save_pretrained(tmp_path / "c", tokenizer=tiny_tokenizer)
    r = _run("info", str(tmp_path / "c"), "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["parameters"] == tiny_model.num_parameters()
    assert info["config"]["mask_token_id"] == tiny_tokenizer.mask_token_id
    assert info["tokenizer"]["special_tokens"]["<|mask|>"] == tiny_tokenizer.mask_token_id
    human = _run("info", str(tmp_path / "c"))
    assert "parameters" in human.stdout and "<|mask|>" in human.stdout


def test_info_on_bad_folder_is_a_clear_error(tmp_path):
    r = _run("info", str(tmp_path))
    assert r.returncode != 0 and "config.json: missing" in r.stderr


def test_tokenizer_train_cli(tmp_path):
    corpus = tmp_path / "a.py"
    corpus.write_text("def f(x):\n    return x * 2\n" * 200)
    r = _run("tokenizer", "train", "--out", str(tmp_path / "tok"), "--vocab-size", "300", "--files", str(corpus))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "tok" / "tokenizer.json").is_file()
