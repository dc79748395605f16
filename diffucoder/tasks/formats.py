"""Prompts, ideal answers and records for SFT, RL and evaluation; jsonl input and output.

The user message asks for exactly one fenced python block, and the ideal assistant reply is that block and
nothing else, ending with "```\\n": it scores 1.0 on the format reward of the reference (free text, exactly one
```python block, ending with ```\\n) and, because the solution passes every test, 1.0 on the code reward.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from diffucoder.jsonl import iter_jsonl
from diffucoder.tasks.concepts import TIERS
from diffucoder.tasks.generator import Task, generate_tasks

PROMPT_INSTRUCTION = "Answer with exactly one ```python code block that contains the complete function."
PROMPT_FORMATS: tuple[str, ...] = ("default", "short")
"""User-message formats: "default" is the question, then :data:`PROMPT_INSTRUCTION` on a line of its own;
"short" is the question alone (it still ends with the ``Signature:`` line and keeps the space before every
name: only the instruction, a constant line of 14 tokens with the demo's tokenizer, is left out). A model is
tied to the format it was fine-tuned on: evaluate and run RL with the same one."""


def build_prompt(task: Task, prompt_format: str = "default") -> str:
    """The user message: the question, then (``"default"``) the answer-format instruction."""
    if prompt_format == "default":
        return f"{task.question}\n{PROMPT_INSTRUCTION}"
    if prompt_format == "short":
        return task.question
    raise ValueError(f"prompt_format must be one of {list(PROMPT_FORMATS)}, got {prompt_format!r}")


def format_answer(task: Task) -> str:
    """The ideal assistant reply: one fenced python block holding the solution, ending with "```\\n"."""
    solution = task.solution if task.solution.endswith("\n") else task.solution + "\n"
    return f"```python\n{solution}```\n"


def to_sft_record(task: Task, style: str = "messages", prompt_format: str = "default") -> dict[str, Any]:
    """An SFT row: ``{"messages": [user, assistant]}`` (``style="messages"``) or ``{"prompt", "completion"}``
    (``style="prompt_completion"``), both with the ``task_id``; the user message in ``prompt_format``."""
    prompt = build_prompt(task, prompt_format)
    if style == "messages":
        return {"task_id": task.task_id, "messages": [{"role": "user", "content": prompt},
                                                      {"role": "assistant", "content": format_answer(task)}]}
    if style == "prompt_completion":
        return {"task_id": task.task_id, "prompt": prompt, "completion": format_answer(task)}
    raise ValueError(f"style must be 'messages' or 'prompt_completion', got {style!r}")


def to_rl_record(task: Task, prompt_format: str = "default") -> dict[str, Any]:
    """An RL row: the user prompt plus the columns a code reward needs (``test_cases``) and metadata."""
    return {"task_id": task.task_id, "prompt": build_prompt(task, prompt_format), "question": task.question,
            "test_cases": list(task.test_cases), "entry_point": task.entry_point, "tier": task.tier,
            "concept": task.concept}


def to_eval_row(task: Task, prompt_format: str = "default") -> dict[str, Any]:
    """A HumanEval-ish row an evaluation harness can score: ``task_id``, ``prompt`` (the user message),
    ``question``, ``test_cases``, ``test`` (the asserts as one program), ``entry_point``, ``solution`` (also
    as ``canonical_solution``), ``tier`` and ``concept``; the prompt in ``prompt_format``."""
    return {"task_id": task.task_id, "prompt": build_prompt(task, prompt_format), "question": task.question,
            "test_cases": list(task.test_cases), "test": "\n".join(task.test_cases) + "\n",
            "entry_point": task.entry_point, "solution": task.solution, "canonical_solution": task.solution,
            "tier": task.tier, "concept": task.concept}


def dataset(split: str = "test", n: int = 300, seed: int = 0, tiers: Sequence[str] = TIERS,
            prompt_format: str = "default") -> list[dict[str, Any]]:
    """``n`` evaluation rows (:func:`to_eval_row`) of one split."""
    return [to_eval_row(t, prompt_format) for t in generate_tasks(n, split, seed, tiers)]


def iter_solution_texts(n: int, seed: int = 0, split: str = "train",
                        tiers: Sequence[str] = TIERS, with_question: bool = False) -> Iterator[str]:
    """Canonical solutions of ``n`` tasks, as plain text for mixing into a pretraining corpus (train split by
    default: never mix the test split into training data). ``with_question``: each headed by its question as
    ``#`` comment (every line of it, so the document stays valid Python)."""
    for task in generate_tasks(n, split, seed, tiers):
        if with_question:
            comment = "".join(f"# {line}\n" for line in task.question.splitlines())
            yield comment + task.solution
        else:
            yield task.solution


def write_jsonl(rows: Iterable[Task | dict[str, Any]], path: str | Path) -> int:
    """Write tasks (as their AceCode-shaped dicts) or ready-made dict rows, one JSON object a line. Returns the
    number of lines written; the parent folder is created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            obj = row.to_dict() if isinstance(row, Task) else row
            if not isinstance(obj, dict):
                raise TypeError(f"write_jsonl expects Task or dict rows, got {type(row).__name__}")
            f.write(json.dumps(obj, ensure_ascii=False) + "\n")
            count += 1
    return count


def load_jsonl(path: str | Path) -> list[Task]:
    """Read tasks written by :func:`write_jsonl` (rows of :meth:`Task.to_dict`)."""
    tasks = []
    for where, row in iter_jsonl(path, "task file"):
        try:
            tasks.append(Task.from_dict(row))
        except (ValueError, TypeError) as e:
            raise ValueError(f"{where}: {e}") from None
    return tasks
