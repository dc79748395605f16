"""benchmarks/pretrain_samples.py: the line scores that say how much a text looks like Python."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _module():
    spec = importlib.util.spec_from_file_location("pretrain_samples", ROOT / "benchmarks" / "pretrain_samples.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_line_parses_accepts_statements_and_clause_heads():
    mod = _module()
    for line in ["x = foo(1, 2)", "    return self._name", "def f(a, b=3):", "elif x > 2:", "else:",
                 "except KeyError as e:", "finally:", "class A(B):", "import os.path", "@property"[1:]]:
        assert mod.line_parses(line), line
    for line in ["x = foo(1,", "def f(a b):", "return ) (", "= = x", "if x"]:
        assert not mod.line_parses(line), line


def test_score_drops_the_continued_and_the_cut_line():
    mod = _module()
    # first line continues the prompt's line and the last one is cut by the canvas: neither is scored
    text = "tail of the prompt line (\nx = 1\n  y = (\nreturn x\nz = 'cut"
    r = mod.score([text])
    assert r["lines"] == 3
    assert abs(r["parses"] - 2 / 3) < 1e-9  # "  y = (" is an open bracket
    assert abs(r["indent4"] - 2 / 3) < 1e-9
    assert mod.score(["a\nb b b b\nc"])["distinct"] < mod.score(["a\nb c d e\nf"])["distinct"]
