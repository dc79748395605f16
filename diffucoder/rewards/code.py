"""Code and format rewards with DiffuCoder's semantics, scored in our sandbox.

Both have TRL's reward-function signature ``fn(completions, **columns) -> list[float]``: ``completions`` are
strings or chat-format lists of ``{"role", "content"}`` messages (the last message's content is scored), and
dataset columns arrive as keyword arguments (``test_cases`` for the code reward; others are ignored).

- ``code_format_reward``: the completion must be free text, exactly one fenced ```` ```python ```` block, and end
  with the closing fence and a newline (nothing after it). 1.0 when the block also parses, 0.5 when it has a
  syntax error, 0.0 otherwise (two blocks, a missing closing fence, text after the fence, no block).
- ``code_reward``: computed only where the format reward is 1.0 (else 0.0): the first python block runs against
  each ``assert`` test case, each in a fresh sandboxed interpreter (program + that one test, as the reference does,
  so one hanging test does not sink the others), 5 s each; the reward is the fraction passed. Unlike the reference,
  which counted an exit code of 0 as a pass, a test passes only when our harness saw it run and succeed (so
  ``sys.exit(0)`` at the top of a program earns nothing).
- The trainer combines them as ``CODE_WEIGHT * code + FORMAT_WEIGHT * format`` (2.0 and 0.5, the released
  recipe); ``combined_code_reward`` does that in one call and runs the format check once.
All programs of a call go to the sandbox pool as one batch and run in parallel.
"""

from __future__ import annotations

import ast
import json
import re
from typing import Any, Sequence

from diffucoder.execution import Job, SandboxPool, default_pool

FORMAT_WEIGHT = 0.5
CODE_WEIGHT = 2.0
TEST_TIMEOUT_S = 5.0

_FENCE = "```"
_BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)


def completion_text(completion: Any) -> str:
    """The text to score: a string as is, or the content of the last message of a chat-format completion."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict) and "content" in completion:
        return str(completion["content"])
    if isinstance(completion, (list, tuple)) and completion:
        last = completion[-1]
        if isinstance(last, dict) and "content" in last:
            return str(last["content"])
    raise TypeError(f"a completion must be a string or a list of {{'role', 'content'}} messages, got {completion!r:.80}")


def extract_code(text: str) -> str:
    """The body of the first ```python block ("" if there is none)."""
    m = _BLOCK.search(text)
    return m.group(1) if m else ""


def format_score(text: str) -> float:
    """1.0 / 0.5 / 0.0 for one completion (see the module docstring)."""
    head, sep, rest = text.partition("```python\n")
    if not sep or _FENCE in head + "``":  # no fence may start in the free text (not even "````python")
        return 0.0
    body, sep, tail = rest.partition(_FENCE)
    if not sep or tail != "\n":
        return 0.0  # missing closing fence, a second block, or anything after the closing fence
    try:
        ast.parse(body.strip())
    except (SyntaxError, ValueError):
        return 0.5
    return 1.0


def code_format_reward(completions: Sequence[Any], **kwargs: Any) -> list[float]:
    """TRL reward function: the format score of each completion."""
    return [format_score(completion_text(c)) for c in completions]


def _tests_of(row: Any, i: int) -> list[str]:
    if isinstance(row, str):
        try:
            row = json.loads(row)
        except json.JSONDecodeError:
            raise ValueError(f"test_cases[{i}] is a string but not a JSON list of assert strings") from None
    if isinstance(row, dict) and "test_cases" in row:
        row = row["test_cases"]
    if not isinstance(row, (list, tuple)) or not all(isinstance(t, str) for t in row):
        raise ValueError(f"test_cases[{i}] must be a list of assert strings, got {type(row).__name__}")
    return list(row)


def code_scores(codes: Sequence[str | None], test_cases: Sequence[Any], pool: SandboxPool | None = None,
                timeout_s: float = TEST_TIMEOUT_S, progress: bool = False) -> list[float]:
    """Fraction of test cases passed by each code (None -> 0.0 without running), one sandbox job per test."""
    if len(codes) != len(test_cases):
        raise ValueError(f"{len(codes)} completions but {len(test_cases)} test_cases rows")
    jobs, owners = [], []
    for i, (code, row) in enumerate(zip(codes, test_cases)):
        tests = _tests_of(row, i)
        if code is None:
            continue
        for t in tests:
            jobs.append(Job(code, [t], timeout_s))
            owners.append(i)
    pool = pool or default_pool()
    results = pool.map(jobs, progress="code reward" if progress else False)
    passed = [0] * len(codes)
    for i, r in zip(owners, results):
        passed[i] += int(r.passed)
    return [passed[i] / len(_tests_of(test_cases[i], i)) if codes[i] is not None and _tests_of(test_cases[i], i)
            else 0.0 for i in range(len(codes))]


def code_reward(completions: Sequence[Any], test_cases: Sequence[Any] | None = None, *,
                pool: SandboxPool | None = None, timeout_s: float = TEST_TIMEOUT_S, **kwargs: Any) -> list[float]:
    """TRL reward function: fraction of ``test_cases`` passed, 0.0 unless the format score is 1.0."""
    if test_cases is None:
        raise ValueError("code_reward needs a test_cases column (a list of assert strings per completion)")
    texts = [completion_text(c) for c in completions]
    codes = [extract_code(t) if format_score(t) == 1.0 else None for t in texts]
    return code_scores(codes, test_cases, pool, timeout_s)


def combined_code_reward(completions: Sequence[Any], test_cases: Sequence[Any] | None = None, *,
                         pool: SandboxPool | None = None, timeout_s: float = TEST_TIMEOUT_S,
                         **kwargs: Any) -> list[float]:
    """``CODE_WEIGHT * code_reward + FORMAT_WEIGHT * code_format_reward`` in one pass."""
    if test_cases is None:
        raise ValueError("combined_code_reward needs a test_cases column")
    texts = [completion_text(c) for c in completions]
    fmt = [format_score(t) for t in texts]
    codes = [extract_code(t) if f == 1.0 else None for t, f in zip(texts, fmt)]
    code = code_scores(codes, test_cases, pool, timeout_s)
    return [CODE_WEIGHT * c + FORMAT_WEIGHT * f for c, f in zip(code, fmt)]
