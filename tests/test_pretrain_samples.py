"""benchmarks/pretrain_samples.py: the line scores that say how much a text looks like Python."""

from __future__ import annotations

from conftest import load_benchmark


def test_line_parses_accepts_statements_and_clause_heads():
    mod = load_benchmark("pretrain_samples")
    for line in ["x = foo(1, 2)", "    return self._name", "def f(a, b=3):", "elif x > 2:", "else:",
                 "except KeyError as e:", "finally:", "class A(B):", "import os.path", "property"]:
        assert mod.line_parses(line), line
    for line in ["x = foo(1,", "def f(a b):", "return ) (", "= = x", "if x"]:
        assert not mod.line_parses(line), line


def test_score_drops_the_continued_and_the_cut_line():
    mod = load_benchmark("pretrain_samples")
    # first line continues the prompt's line and the last one is cut by the canvas: neither is scored
    text = "tail of the prompt line (\nx = 1\n  y = (\nreturn x\nz = 'cut"
    r = mod.score([text])
    assert r["lines"] == 3
    assert abs(r["parses"] - 2 / 3) < 1e-9  # "  y = (" is an open bracket
    assert abs(r["indent4"] - 2 / 3) < 1e-9
    assert mod.score(["a\nb b b b\nc"])["distinct"] < mod.score(["a\nb c d e\nf"])["distinct"]
