"""Turn concepts into tasks: the :class:`Task` record, the seeded generator and the split bookkeeping.

``generate_tasks(n, split, seed, tiers)`` draws tier ``tiers[i % len(tiers)]`` for task ``i`` (so tiers are
balanced), then a concept of that tier uniformly, then one of the concept's combination keys *of that split*
uniformly, then everything left free (names, phrasing, constants inside a composition, test inputs). The split
of a combination key is fixed by the catalogue (:meth:`~diffucoder.tasks.concepts.Concept.test_combos`), not
by the seed, so the train and test splits can never ask for the same thing whatever seeds are used.

Generation is prefix-stable: ``generate_tasks(100, ...)`` is the first 100 tasks of ``generate_tasks(1000, ...)``.
Exact duplicates (same question and solution) are redrawn.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from diffucoder.tasks.concepts import CONCEPTS, TIERS, Concept, Draft, check_tiers, concepts_for
from diffucoder.tasks.rng import TaskRng

SPLITS = ("train", "test")
# test cases per task, at least (more when a concept has many boundary inputs: two random ones beyond them)
NUM_TESTS = {"easy": 5, "medium": 7, "hard": 7}
_MAX_REDRAWS = 200

# The function name always follows a space, as it does after ``def`` in the answer: a byte-level BPE with Qwen2's
# split pattern gives "`is" + "_over" for "`is_over" but " is" + "_over" for " is_over", so a name quoted
# as `name(...)` would reach the model as different tokens from the ones it has to write (measured: a 5M model
# SFT-trained on the backticked form wrote the right name in 9 of 90 held-out answers).
_INTROS = (
    "Write a Python function `def {sig}` that {desc}.",
    "Implement `def {sig}`, a function that {desc}.",
    "Define a function {sig} which {desc}.",
    "Create a Python function named {name} that takes {argdesc} and {desc}.",
)
_KIND_NOUN = {"int": "an integer", "str": "a string", "list": "a list of integers"}


@dataclass
class Task:
    """One synthetic task, in the AceCode/jsonl shape (``question``, ``test_cases``, ``solution``) plus metadata.

    ``combo`` names the held-out unit: ``"<concept>|<combination key>"``; it never appears in both splits.
    """

    task_id: str
    question: str
    entry_point: str
    solution: str  # a complete python function ending with a newline
    test_cases: list[str]  # "assert f(...) == ..." lines
    tier: str
    concept: str
    split: str
    combo: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> Task:
        missing = [f for f in cls.__dataclass_fields__ if f not in row]
        if missing:
            raise ValueError(f"task row {row.get('task_id', '?')!r} lacks fields {missing}")
        return cls(**{f: row[f] for f in cls.__dataclass_fields__})


@dataclass
class TaskOracle:
    """What the generator knows beyond the task text: the reference implementation and the input sampler, so
    that checks can probe a candidate on many more inputs than the task's own tests (used by the tests)."""

    draft: Draft = field(repr=False)

    def probe_inputs(self, n: int, seed: int = 0) -> list[tuple]:
        """``n`` extra argument tuples (boundary inputs first), deduplicated."""
        rng = TaskRng(seed)
        return _inputs(self.draft, rng, n, tries=20 * n)

    def expected(self, args: tuple) -> Any:
        return self.draft.ref(*copy.deepcopy(args))

    def assert_lines(self, entry_point: str, inputs: Sequence[tuple]) -> list[str]:
        return [_assert_line(entry_point, a, self.expected(a)) for a in inputs]


def _inputs(draft: Draft, rng: TaskRng, n: int, tries: int) -> list[tuple]:
    seen, out = set(), []
    for args in draft.fixed:
        if repr(args) not in seen:
            seen.add(repr(args))
            out.append(args)
    for _ in range(tries):
        if len(out) >= n:
            break
        args = draft.sample(rng)
        if repr(args) not in seen:
            seen.add(repr(args))
            out.append(args)
    return out


def _call(entry_point: str, args: tuple) -> str:
    return f"{entry_point}({', '.join(repr(a) for a in args)})"


def _assert_line(entry_point: str, args: tuple, expected: Any) -> str:
    return f"assert {_call(entry_point, args)} == {expected!r}"


def _signature(draft: Draft) -> str:
    return f"{draft.name}({', '.join(a.name for a in draft.args)})"


def _argdesc(draft: Draft) -> str:
    if len(draft.args) == 2 and all(a.kind == "int" for a in draft.args):
        return f"two integers {draft.args[0].name} and {draft.args[1].name}"
    return " and ".join(f"{_KIND_NOUN[a.kind]} {a.name}" for a in draft.args)


def _question(draft: Draft, rng: TaskRng, tests: list[tuple[tuple, Any]]) -> str:
    desc = rng.choice(draft.descs)
    text = rng.choice(_INTROS).format(sig=_signature(draft), name=draft.name, desc=desc, argdesc=_argdesc(draft))
    if draft.example:
        # show an informative case: no empty argument and not a "nothing found" answer, when there is one
        def trivial(args: tuple, out: Any) -> bool:
            return any(a in ([], "") for a in args) or out in (None, [], "", 0, -1)

        informative = [(a, o) for a, o in tests if not trivial(a, o)]
        args, out = rng.choice(informative or tests)
        text += f" For example, {_call(draft.name, args)} should return {out!r}."
    # The signature closes the question on a line of its own, token for token as the answer's first code line
    # reads, so the answer's name and arguments have an exact copy a short way back in the prompt (copying is
    # what small models learn slowest: see benchmarks/copy_emergence.py).
    return f"{text}\nSignature:\ndef {_signature(draft)}:"


def combo_id(concept: Concept | str, combo: tuple) -> str:
    """The printable held-out unit of a task: ``"add_const|(7,)"``."""
    name = concept if isinstance(concept, str) else concept.name
    return f"{name}|{combo!r}"


def split_of(concept: str, combo: tuple) -> str:
    """Which split a combination key belongs to (``"train"`` or ``"test"``)."""
    if concept not in CONCEPTS:
        raise ValueError(f"unknown concept {concept!r}")
    c = CONCEPTS[concept]
    if combo not in c.combos:
        raise ValueError(f"{combo!r} is not a combination key of concept {concept!r}")
    return "test" if combo in c.test_combos() else "train"


def _check_args(n: int, split: str, seed: int, tiers: Sequence[str]) -> tuple[str, ...]:
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    return check_tiers(tiers)


def _seed_for(seed: int, split: str) -> int:
    return int.from_bytes(hashlib.sha256(f"diffucoder.tasks|{split}|{seed}".encode()).digest()[:7], "big")


def generate_with_oracles(n: int, split: str = "train", seed: int = 0, tiers: Sequence[str] = TIERS,
                          progress: bool = False) -> list[tuple[Task, TaskOracle]]:
    """Like :func:`generate_tasks` but also returns each task's :class:`TaskOracle`."""
    tiers = _check_args(n, split, seed, tiers)
    rng = TaskRng(_seed_for(seed, split))
    pools: dict[str, list[tuple[Concept, tuple[tuple, ...]]]] = {}
    for tier in tiers:
        pools[tier] = [(c, c.split_combos(split)) for c in concepts_for(tier) if c.split_combos(split)]
        if not pools[tier]:
            raise ValueError(f"tier {tier!r} has no concepts in split {split!r}")
    seen: set[tuple[str, str]] = set()
    out: list[tuple[Task, TaskOracle]] = []
    steps: Iterable[int] = range(n)
    if progress:
        from tqdm import tqdm

        steps = tqdm(steps, desc=f"{split} tasks", unit="task", leave=False)
    for i in steps:
        tier = tiers[i % len(tiers)]
        for _ in range(_MAX_REDRAWS):
            concept, combos = rng.choice(pools[tier])
            combo = rng.choice(combos)
            draft = concept.build(combo, rng)
            inputs = _inputs(draft, rng, max(NUM_TESTS[tier], len(draft.fixed) + 2), tries=200)
            tests = [(a, draft.ref(*copy.deepcopy(a))) for a in inputs]
            question = _question(draft, rng, tests)
            key = (question, draft.solution)
            if key not in seen:
                break
        else:
            raise RuntimeError(f"could not draw a new distinct {tier!r} task after {_MAX_REDRAWS} tries "
                               f"({i} tasks drawn for split {split!r}); ask for fewer tasks")
        seen.add(key)
        task = Task(
            task_id=f"synth/{split}/{seed}/{i}", question=question, entry_point=draft.name,
            solution=draft.solution, test_cases=[_assert_line(draft.name, a, o) for a, o in tests],
            tier=tier, concept=concept.name, split=split, combo=combo_id(concept, combo))
        out.append((task, TaskOracle(draft)))
    return out


def generate_tasks(n: int, split: str = "train", seed: int = 0, tiers: Sequence[str] = TIERS,
                   progress: bool = False) -> list[Task]:
    """``n`` tasks of one split, deterministic from ``seed``, tiers balanced round-robin over ``tiers``
    (``progress``: show a tqdm bar; about 3,000 tasks a second)."""
    return [t for t, _ in generate_with_oracles(n, split, seed, tiers, progress)]


@dataclass
class CatalogueStats:
    """Size of the task space: concepts and combination keys per tier and split."""

    concepts: dict[str, int]
    combos: dict[tuple[str, str], int]  # (tier, split) -> number of combination keys


def catalogue_stats() -> CatalogueStats:
    concepts = {t: len(concepts_for(t)) for t in TIERS}
    combos = {(t, s): sum(len(c.split_combos(s)) for c in concepts_for(t)) for t in TIERS for s in SPLITS}
    return CatalogueStats(concepts, combos)
