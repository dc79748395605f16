"""Table-driven tests of the code and format rewards (DiffuCoder's semantics), scored in the real sandbox."""

from __future__ import annotations

import re

import pytest

from diffucoder.execution import SandboxPool
from diffucoder.rewards import (
    CODE_WEIGHT,
    FORMAT_WEIGHT,
    code_format_reward,
    code_reward,
    combined_code_reward,
    extract_code,
)

GOOD = "def add(a, b):\n    return a + b\n"
TESTS = ["assert add(1, 2) == 3", "assert add(0, 0) == 0", "assert add(-1, 1) == 0", "assert add(2, 2) == 4"]

# (name, completion, expected format score)
FORMAT_TABLE = [
    ("one block, newline at end", f"Here you go:\n```python\n{GOOD}```\n", 1.0),
    ("no free text", f"```python\n{GOOD}```\n", 1.0),
    ("syntax error in the block", "```python\ndef add(a, b)\n    return a + b\n```\n", 0.5),
    ("two code blocks", f"```python\n{GOOD}```\nand\n```python\n{GOOD}```\n", 0.0),
    ("missing closing fence", f"```python\n{GOOD}", 0.0),
    ("no trailing newline", f"```python\n{GOOD}```", 0.0),
    ("text after the block", f"```python\n{GOOD}```\nHope this helps!\n", 0.0),
    ("no block at all", GOOD, 0.0),
    ("another language", f"```javascript\n{GOOD}```\n", 0.0),
    ("a fence in the free text", f"see ``` here\n```python\n{GOOD}```\n", 0.0),
    ("four backticks", f"````python\n{GOOD}```\n", 0.0),
    ("empty block parses", "```python\n```\n", 1.0),
    ("empty completion", "", 0.0),
]


@pytest.mark.parametrize("name,completion,expected", FORMAT_TABLE, ids=[r[0] for r in FORMAT_TABLE])
def test_format_reward_table(name, completion, expected):
    assert code_format_reward([completion]) == [expected]


def _reference_format(text: str) -> float:
    """An independent statement of the rule as one regular expression (the form the released recipe uses)."""
    pattern = re.compile(r"^(?:(?!```)[\s\S])*?```python\n(?:(?!```)[\s\S])*?```\n$", re.DOTALL)
    if not pattern.fullmatch(text):
        return 0.0
    try:
        compile(re.search(r"```python\n(.*?)```", text, re.DOTALL).group(1).strip(), "<x>", "exec")
        return 1.0
    except SyntaxError:
        return 0.5


def test_format_reward_agrees_with_the_regex_statement():
    texts = [row[1] for row in FORMAT_TABLE]
    texts += ["x```python\ny = 1\n```\n", "```python\ny = `1\n```\n", "```python\ny = 1\n````\n", "```python\n\n```\n\n"]
    assert code_format_reward(texts) == [_reference_format(t) for t in texts]


def test_chat_format_completions_use_the_last_message():
    chat = [{"role": "assistant", "content": f"```python\n{GOOD}```\n"}]
    assert code_format_reward([chat]) == [1.0]
    with pytest.raises(TypeError, match="completion must be"):
        code_format_reward([42])


@pytest.fixture(scope="module")
def pool():
    with SandboxPool(workers=2) as p:
        yield p


def block(code: str) -> str:
    return f"Solution:\n```python\n{code}```\n"


# (name, completion, tests, expected code reward)
CODE_TABLE = [
    ("all pass", block(GOOD), TESTS, 1.0),
    ("three of four", block("def add(a, b):\n    return a + b if a >= 0 else 7\n"), TESTS, 0.75),
    ("wrong", block("def add(a, b):\n    return a - b\n"), TESTS, 0.25),  # only add(0, 0) == 0 holds
    ("exit(0) earns nothing", block("import sys\nsys.exit(0)\n" + GOOD), TESTS, 0.0),
    ("syntax error: format 0.5, code not run", "```python\ndef add(a, b)\n    return 1\n```\n", TESTS, 0.0),
    ("two blocks -> 0", f"```python\n{GOOD}```\n```python\n{GOOD}```\n", TESTS, 0.0),
    ("missing closing fence -> 0", f"```python\n{GOOD}", TESTS, 0.0),
    ("one hanging test does not sink the others",
     block("def add(a, b):\n    while a == 2:\n        pass\n    return a + b\n"), TESTS, 0.75),
]


@pytest.mark.parametrize("name,completion,tests,expected", CODE_TABLE, ids=[r[0] for r in CODE_TABLE])
def test_code_reward_table(pool, name, completion, tests, expected):
    timeout = 1.0 if "hanging" in name else 5.0
    assert code_reward([completion], test_cases=[tests], pool=pool, timeout_s=timeout) == [expected]


def test_batch_and_combined_weights(pool):
    comps = [block(GOOD), "```python\ndef add(a, b)\n```\n", GOOD]
    tests = [TESTS, TESTS, TESTS]
    fmt = code_format_reward(comps)
    code = code_reward(comps, test_cases=tests, pool=pool, prompts=["ignored"] * 3)
    assert fmt == [1.0, 0.5, 0.0] and code == [1.0, 0.0, 0.0]
    combined = combined_code_reward(comps, test_cases=tests, pool=pool)
    assert combined == [CODE_WEIGHT * c + FORMAT_WEIGHT * f for c, f in zip(code, fmt)] == [2.5, 0.25, 0.0]


def test_test_cases_as_json_strings_and_bad_input(pool):
    assert code_reward([block(GOOD)], test_cases=['["assert add(1, 1) == 2"]'], pool=pool) == [1.0]
    with pytest.raises(ValueError, match="test_cases"):
        code_reward([block(GOOD)], pool=pool)
    with pytest.raises(ValueError, match=r"test_cases\[0\]"):
        code_reward([block(GOOD)], test_cases=[[1, 2]], pool=pool)
    with pytest.raises(ValueError, match="1 completions but 2"):
        code_reward([block(GOOD)], test_cases=[TESTS, TESTS], pool=pool)


def test_extract_code_takes_the_first_block():
    assert extract_code("```python\nA = 1\n```\n```python\nB = 2\n```\n") == "A = 1\n"
    assert extract_code("no code") == ""
