"""Synthetic, verifiable Python function-writing tasks that a tiny diffusion model can learn on a CPU.

Each task asks for one short function. It carries a natural-language ``question`` (several phrasings per
concept, the signature always given), the ``entry_point``, a canonical ``solution`` (a complete function, most
of them a few lines) and ``test_cases`` (``assert f(...) == ...`` lines, boundary inputs included so that
off-by-one constants and swapped operators fail): the AceCode/jsonl shape, so one file feeds SFT, RL and
evaluation.

Tiers
-----
- ``easy``: one arithmetic, comparison, string or list operation: ``def add_3(x):\\n    return x + 3\\n``.
- ``medium``: conditionals (piecewise, parity, clamp, fizz, truncate) and compositions of two or three
  operations (``return (x + 3) * 2``, ``return s[::-1].upper()``, ``return max(xs) ** 2``).
- ``hard``: small loops and list processing (sum/count/product of the elements that pass a test, first match,
  comprehensions that map and filter, sums over ``range``, character loops, ``all``/``any``).

Split construction
------------------
Every concept enumerates its *combination keys*: the parameters that define what is asked (the constant of
"add k", the comparison and constant of "x > k", the ordered pair of operations of a composition, the
aggregate and predicate of a loop). A fixed quarter of each concept's keys (ranked by a SHA-256 of the key,
independent of any seed; at least one key when there are two or more) belongs to the ``test`` split, the rest
to ``train``. So held-out tasks ask for combinations no training task asks for (``add_7`` when training saw
``add_6`` and ``add_8``; "multiply then take the remainder" when training saw both operations but never that
order), whatever the seeds. Everything else (names, argument names, phrasings, test inputs, the constants
inside a composition) is drawn from the seed. Concepts with a single key exist only in ``train``.

Formats
-------
- :class:`Task` rows (``write_jsonl`` / ``load_jsonl``): ``task_id, question, entry_point, solution,
  test_cases, tier, concept, split, combo``.
- ``build_prompt(task)``: the user message, the question plus an instruction to answer with exactly one
  fenced python block (``build_prompt(task, "short")``: the question alone, see ``PROMPT_FORMATS``); ``format_answer(task)``: the ideal reply, ```` ```python\\n<solution>```\\n ````, which
  meets the format reward (exactly one python block, ending with a closing fence and a newline).
- ``to_sft_record`` (``messages`` or ``prompt``/``completion``), ``to_rl_record`` (prompt plus
  ``test_cases``), ``to_eval_row`` / ``dataset(split, n, seed)`` (HumanEval-like rows with ``task_id``,
  ``prompt``, ``question``, ``test_cases``, ``test``, ``entry_point``, ``canonical_solution``, ``tier``), and
  ``iter_solution_texts`` (canonical solutions for pretraining-corpus mixing).

Usage::

    from diffucoder.tasks import generate_tasks, to_sft_record, dataset
    train = generate_tasks(3000, "train", seed=0)
    rows = [to_sft_record(t) for t in train]
    heldout = dataset("test", n=300, seed=0)

or ``python -m diffucoder.tasks --split train --n 1000 --out train.jsonl``.
"""

from diffucoder.tasks.concepts import CONCEPTS, TIERS, Concept, check_tiers, concepts_for
from diffucoder.tasks.formats import (
    PROMPT_FORMATS,
    PROMPT_INSTRUCTION,
    build_prompt,
    dataset,
    format_answer,
    iter_solution_texts,
    load_jsonl,
    to_eval_row,
    to_rl_record,
    to_sft_record,
    write_jsonl,
)
from diffucoder.tasks.generator import (
    SPLITS,
    Task,
    TaskOracle,
    catalogue_stats,
    generate_tasks,
    generate_with_oracles,
    split_of,
)

__all__ = [
    "CONCEPTS", "PROMPT_FORMATS", "PROMPT_INSTRUCTION", "SPLITS", "TIERS", "Concept", "Task", "TaskOracle",
    "build_prompt", "catalogue_stats", "check_tiers", "concepts_for", "dataset", "format_answer", "generate_tasks",
    "generate_with_oracles", "iter_solution_texts", "load_jsonl", "split_of", "to_eval_row", "to_rl_record",
    "to_sft_record", "write_jsonl",
]
