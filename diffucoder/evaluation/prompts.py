"""Prompts as in Qwen2.5-Coder's (EvalPlus-based) evaluation, which DiffuCoder's evaluation follows.

- Base models complete the task prompt itself: ``prompt.strip() + "\\n"``; the sample's solution is
  ``prompt + completion`` (then sanitised).
- Instruct models get one user turn, "Please provide a self-contained Python script that solves the following
  problem in a markdown code block:" followed by the task prompt in a fence, and the reply is pre-filled with
  "Below is a Python script with a self-contained function that solves the problem and passes corresponding
  tests:" and an opening ```` ```python ```` fence; the model continues from there and the sample's solution is
  the sanitised reply.

- ``chat`` (our synthetic tasks, whose prompt is already a user message): the prompt is the user turn as is, no
  pre-fill; the solution is the sanitised reply.

``chat_template`` formats messages (default: ChatML, the template of Qwen2.5 and DiffuCoder-Instruct); pass the
tokenizer's own template function to match a different model exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

INSTRUCTION_PREFIX = ("Please provide a self-contained Python script that solves the following problem in a "
                      "markdown code block:")
RESPONSE_PREFIX = ("Below is a Python script with a self-contained function that solves the problem and passes "
                   "corresponding tests:")
DEFAULT_SYSTEM = "You are a helpful assistant."


def chatml(messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
    """ChatML as Qwen2.5 writes it: ``<|im_start|>role\\ncontent<|im_end|>\\n`` per message."""
    out = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return out + ("<|im_start|>assistant\n" if add_generation_prompt else "")


@dataclass
class PromptBuilder:
    """Builds the model input for a task and turns the model's continuation back into a solution text."""

    style: str = "base"
    """"base", "instruct" or "chat"."""
    system: str | None = DEFAULT_SYSTEM
    chat_template: Callable[[list[dict[str, str]]], str] = chatml

    def __post_init__(self) -> None:
        if self.style not in ("base", "instruct", "chat"):
            raise ValueError(f"prompt style must be 'base', 'instruct' or 'chat', got {self.style!r}")

    def build(self, task_prompt: str) -> str:
        if self.style == "base":
            return task_prompt.strip() + "\n"
        if self.style == "chat":
            return self.chat_template(self._messages(task_prompt))
        user = f"{INSTRUCTION_PREFIX}\n```\n{task_prompt.strip()}\n```"
        return self.chat_template(self._messages(user)) + f"{RESPONSE_PREFIX}\n```python\n"

    def _messages(self, user: str) -> list[dict[str, str]]:
        return ([{"role": "system", "content": self.system}] if self.system else []) + [
            {"role": "user", "content": user}]

    def solution_text(self, task_prompt: str, continuation: str) -> str:
        """The raw text to sanitise: for base models the prompt plus the continuation (the prompt holds the
        signature), for instruct models the pre-filled fence plus the continuation."""
        if self.style == "base":
            return task_prompt.strip() + "\n" + continuation
        if self.style == "chat":
            return continuation
        return "```python\n" + continuation
