"""Tests of the synthetic task generator (diffucoder.tasks).

The execution checks run the canonical solutions (and a sample of mutants) through the project's sandbox pool
(``diffucoder.execution``), and the thousands of mutants through one batched subprocess (one fresh namespace per
program), which keeps the test fast; the two agree on the shared sample.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from diffucoder.tasks import (
    CONCEPTS,
    PROMPT_INSTRUCTION,
    TIERS,
    Task,
    build_prompt,
    catalogue_stats,
    dataset,
    format_answer,
    generate_tasks,
    generate_with_oracles,
    iter_solution_texts,
    load_jsonl,
    split_of,
    to_rl_record,
    to_sft_record,
    write_jsonl,
)
from diffucoder.tasks.concepts import INT_ARGS, LIST_ARGS, PAIR_ARGS, STR_ARGS
from diffucoder.tasks.mutate import mutants

REPO = Path(__file__).resolve().parents[1]
_ARG_KIND = {**{a: "int" for a in (*INT_ARGS, *(n for pair in PAIR_ARGS for n in pair), "m", "limit")},
             **{a: "str" for a in STR_ARGS}, **{a: "list" for a in LIST_ARGS}}

# One interpreter checks many programs: each program is exec'd in a fresh namespace under a 2 s alarm, then
# each assert line is run; the verdict per program is the list of per-test booleans (None: it did not load).
_CHECKER = r"""
import json, signal, sys
def _alarm(signum, frame):
    raise TimeoutError("timeout")
signal.signal(signal.SIGALRM, _alarm)
jobs = json.load(sys.stdin)
out = []
for program, tests in jobs:
    ns = {}
    try:
        signal.alarm(2)
        exec(compile(program, "<program>", "exec"), ns)
        signal.alarm(0)
    except BaseException:
        signal.alarm(0)
        out.append(None)
        continue
    res = []
    for t in tests:
        try:
            signal.alarm(2)
            exec(t, ns)
            signal.alarm(0)
            res.append(True)
        except BaseException:
            signal.alarm(0)
            res.append(False)
    out.append(res)
json.dump(out, sys.stdout)
"""


def run_batch(jobs: list[tuple[str, list[str]]]) -> list[list[bool] | None]:
    """Run (program, tests) pairs in one fresh interpreter; per program the per-test results."""
    proc = subprocess.run([sys.executable, "-I", "-c", _CHECKER], input=json.dumps(jobs), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


def passed(result: list[bool] | None) -> bool:
    return result is not None and all(result)


def normalized(solution: str) -> str:
    """The solution with the function renamed to f and its arguments to <kind><position> (int0, str0, list0):
    equal for two tasks that ask for the same computation on the same argument types under different names.
    (``s * 2`` on a string and ``x * 2`` on an int are different computations.)"""
    tree = ast.parse(solution)
    fn = tree.body[0]
    assert isinstance(fn, ast.FunctionDef)
    names = {a.arg: f"{_ARG_KIND[a.arg]}{i}" for i, a in enumerate(fn.args.args)}
    fn.name = "f"
    for node in ast.walk(tree):
        if isinstance(node, ast.arg) and node.arg in names:
            node.arg = names[node.arg]
        elif isinstance(node, ast.Name) and node.id in names:
            node.id = names[node.id]
    return ast.unparse(tree)


@pytest.fixture(scope="module")
def train_tasks() -> list[Task]:
    return generate_tasks(1500, "train", seed=0)


@pytest.fixture(scope="module")
def heldout_tasks() -> list[Task]:
    return generate_tasks(600, "test", seed=0)


# ------------------------------------------------------------------------------------ shape and determinism


def test_same_seed_same_tasks_and_prefix_stable():
    a = generate_tasks(60, "train", seed=3)
    b = generate_tasks(60, "train", seed=3)
    assert [t.to_dict() for t in a] == [t.to_dict() for t in b]
    assert [t.to_dict() for t in generate_tasks(20, "train", seed=3)] == [t.to_dict() for t in a[:20]]
    c = generate_tasks(60, "train", seed=4)
    assert sum(x.question == y.question for x, y in zip(a, c)) < 10


def test_task_fields_and_tiers(train_tasks):
    counts = Counter(t.tier for t in train_tasks)
    assert counts == {"easy": 500, "medium": 500, "hard": 500}  # round-robin over tiers
    assert {t.concept for t in train_tasks} == set(CONCEPTS)  # every concept is drawn
    for t in train_tasks[:300]:
        tree = ast.parse(t.solution)
        assert len(tree.body) == 1 and isinstance(tree.body[0], ast.FunctionDef)
        assert tree.body[0].name == t.entry_point
        assert f" {t.entry_point}" in t.question and f"`{t.entry_point}" not in t.question  # tokenised as in `def`
        assert t.solution.endswith("\n")
        assert len(t.test_cases) >= 5 and len(set(t.test_cases)) == len(t.test_cases)
        for case in t.test_cases:
            assert case.startswith(f"assert {t.entry_point}(")
            ast.parse(case)
        assert CONCEPTS[t.concept].tier == t.tier
        assert t.split == "train" and t.task_id.startswith("synth/train/0/")
    only_easy = generate_tasks(12, "test", seed=1, tiers=("easy",))
    assert {t.tier for t in only_easy} == {"easy"}


def test_solutions_are_short(train_tasks):
    # reference.md: an 8k byte-level BPE averages ~3.8 bytes/token on Python, so 60 tokens ~ 230 bytes
    by_tier = {tier: [len(t.solution) for t in train_tasks if t.tier == tier] for tier in TIERS}
    assert max(by_tier["easy"]) <= 80
    assert sorted(by_tier["medium"])[int(0.95 * len(by_tier["medium"]))] <= 130
    assert max(by_tier["hard"]) <= 200
    assert min(len(t.solution) for t in train_tasks) >= 20


def test_enough_distinct_tasks():
    tasks = generate_tasks(3000, "train", seed=0)
    assert len({t.question for t in tasks}) == 3000
    assert len({t.solution for t in tasks}) > 2000
    assert len({normalized(t.solution) for t in tasks}) > 1000  # distinct computations, not just names
    held = generate_tasks(600, "test", seed=0)
    assert len({t.question for t in held}) == 600
    assert len({normalized(t.solution) for t in held}) > 200


# ----------------------------------------------------------------------------------------------- the split


def test_split_is_by_combination_keys():
    stats = catalogue_stats()
    for c in CONCEPTS.values():
        train, test = set(c.split_combos("train")), set(c.split_combos("test"))
        assert not train & test and train | test == set(c.combos) and train
        if len(c.combos) >= 2:
            assert 1 <= len(test) <= len(c.combos) // 2, c.name
    for tier in TIERS:
        assert stats.combos[(tier, "test")] > 10
        assert stats.combos[(tier, "train")] > 2 * stats.combos[(tier, "test")]


def test_train_and_test_are_disjoint(train_tasks, heldout_tasks):
    assert {t.split for t in heldout_tasks} == {"test"}
    assert not {t.combo for t in train_tasks} & {t.combo for t in heldout_tasks}
    assert not {t.question for t in train_tasks} & {t.question for t in heldout_tasks}
    assert not {normalized(t.solution) for t in train_tasks} & {normalized(t.solution) for t in heldout_tasks}
    for t in heldout_tasks[:100]:
        name, key = t.combo.split("|", 1)
        assert split_of(name, ast.literal_eval(key)) == "test"
    assert Counter(t.tier for t in heldout_tasks) == {"easy": 200, "medium": 200, "hard": 200}
    # other seeds never reach the other split
    for seed in (1, 2):
        other = generate_tasks(300, "train", seed=seed)
        assert not {t.combo for t in other} & {t.combo for t in heldout_tasks}


# --------------------------------------------------------------------------------------------- execution


def sandbox_verdicts(jobs: list[tuple[str, list[str]]]) -> list[bool]:
    """Run (program, tests) pairs through the project's sandbox pool: per program, did every test pass."""
    from diffucoder.execution import Job, SandboxPool

    with SandboxPool(workers=2) as pool:
        return [r.passed for r in pool.map([Job(p, list(t), timeout_s=5.0) for p, t in jobs])]


def test_canonical_solutions_pass_and_mutants_fail():
    pairs = generate_with_oracles(150, "train", seed=11) + generate_with_oracles(150, "test", seed=11)
    tasks = [t for t, _ in pairs]
    first_mutants = [(m, t.test_cases) for t in tasks[:60] for m in mutants(t.solution)[:2]]
    verdicts = sandbox_verdicts([(t.solution, t.test_cases) for t in tasks] + first_mutants)
    failing = [t.task_id for t, ok in zip(tasks, verdicts) if not ok]
    assert not failing, f"canonical solutions fail their own tests in the sandbox: {failing[:5]}"
    # the batched checker below agrees with the sandbox on a sample of mutants
    assert [passed(r) for r in run_batch(first_mutants)] == verdicts[len(tasks):]

    # Each task: its canonical solution and every one-step mutant, checked against the task's tests and
    # against 40 probe inputs whose expected values come from the concept's independent reference.
    jobs, index = [], []
    for i, (task, oracle) in enumerate(pairs):
        probe = oracle.assert_lines(task.entry_point, oracle.probe_inputs(40, seed=i))
        jobs.append((task.solution, probe))
        index.append((i, "canonical"))
        for m in mutants(task.solution):
            jobs.append((m, task.test_cases))
            jobs.append((m, probe))
            index.append((i, "mutant"))
    results = run_batch(jobs)

    pos, killed, distinguishable, equivalent = 0, 0, 0, 0
    survivors = []
    for i, kind in index:
        task = pairs[i][0]
        if kind == "canonical":
            assert passed(results[pos]), f"{task.task_id}: rendering disagrees with the reference on probes"
            pos += 1
            continue
        on_tests, on_probe = passed(results[pos]), passed(results[pos + 1])
        pos += 2
        if on_probe and on_tests:
            equivalent += 1  # the mutant agrees with the reference on every probe: not a wrong variant
            continue
        distinguishable += 1
        if not on_tests:
            killed += 1
        else:
            survivors.append(task.task_id)
    assert distinguishable > 1000
    # every observably wrong variant must fail the task's own tests (tests that catch off-by-one constants
    # and swapped operators); allow a handful of rare-input survivors but report them
    assert len(survivors) <= distinguishable // 200, (killed, distinguishable, survivors[:10])  # >= 99.5% killed
    print(f"mutants: {distinguishable} distinguishable, {killed} killed, {equivalent} equivalent")


# ----------------------------------------------------------------------------------------------- formats

# reference.md section 5: free text, exactly one ```python block, ending with ```\n
_FORMAT = re.compile(r"^(?:(?!```)[\s\S])*```python\n((?:(?!```)[\s\S])*?)```\n$")


def test_prompt_and_answer_match_the_format_reward(train_tasks):
    for t in train_tasks[:200]:
        prompt, answer = build_prompt(t), format_answer(t)
        assert prompt.startswith(t.question) and prompt.endswith(PROMPT_INSTRUCTION)
        m = _FORMAT.match(answer)
        assert m is not None, answer
        assert m.group(1) == t.solution
        assert answer.count("```") == 2 and answer.endswith("```\n")
        ast.parse(m.group(1))


def test_records(train_tasks):
    t = train_tasks[0]
    sft = to_sft_record(t)
    assert [m["role"] for m in sft["messages"]] == ["user", "assistant"]
    assert sft["messages"][0]["content"] == build_prompt(t)
    assert sft["messages"][1]["content"] == format_answer(t)
    pc = to_sft_record(t, style="prompt_completion")
    assert (pc["prompt"], pc["completion"]) == (build_prompt(t), format_answer(t))
    with pytest.raises(ValueError, match="style"):
        to_sft_record(t, style="chat")
    rl = to_rl_record(t)
    assert rl["prompt"] == build_prompt(t) and rl["test_cases"] == t.test_cases and "solution" not in rl
    rows = dataset("test", n=9, seed=2)
    assert len(rows) == 9 and Counter(r["tier"] for r in rows) == {"easy": 3, "medium": 3, "hard": 3}
    for r in rows:
        assert r["task_id"].startswith("synth/test/2/")
        assert {"prompt", "question", "test_cases", "test", "entry_point", "canonical_solution"} <= set(r)
        assert r["test"] == "\n".join(r["test_cases"]) + "\n"
    sols = list(iter_solution_texts(30, seed=0))
    assert sols == [x.solution for x in train_tasks[:30]]
    # headed by the question as a comment: every question line commented, so the document parses
    for text, task in zip(iter_solution_texts(30, seed=0, with_question=True), train_tasks[:30]):
        assert text.endswith(task.solution) and text.startswith("# ")
        comment = text[: -len(task.solution)]
        assert all(line.startswith("# ") for line in comment.splitlines())
        ast.parse(text)


def test_jsonl_round_trip(tmp_path, train_tasks):
    path = tmp_path / "sub" / "tasks.jsonl"
    assert write_jsonl(train_tasks[:50], path) == 50
    back = load_jsonl(path)
    assert [x.to_dict() for x in back] == [x.to_dict() for x in train_tasks[:50]]
    row = json.loads(path.read_text().splitlines()[0])
    assert {"question", "test_cases", "solution", "task_id", "entry_point", "tier", "concept"} <= set(row)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"task_id": "x", "question": "q"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:1: .*lacks fields"):
        load_jsonl(bad)
    bad.write_text("not json\n")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_jsonl(bad)
    with pytest.raises(FileNotFoundError):
        load_jsonl(tmp_path / "missing.jsonl")


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="split"):
        generate_tasks(3, "validation")
    with pytest.raises(ValueError, match="tiers"):
        generate_tasks(3, "train", tiers=("easy", "expert"))
    with pytest.raises(ValueError, match="n must be"):
        generate_tasks(-1, "train")
    with pytest.raises(ValueError, match="seed"):
        generate_tasks(3, "train", seed=-5)
    with pytest.raises(ValueError, match="unknown concept"):
        split_of("nope", (1,))
    with pytest.raises(ValueError, match="not a combination key"):
        split_of("add_const", (999,))


def test_cli_writes_jsonl(tmp_path):
    out = tmp_path / "t.jsonl"
    proc = subprocess.run([sys.executable, "-m", "diffucoder.tasks", "--split", "test", "--n", "12", "--format",
                           "sft", "--out", str(out), "--stats"], capture_output=True, text=True, cwd=REPO,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 12 and all("messages" in r for r in rows)
    assert "combination keys" in proc.stdout


def test_ideal_answers_earn_full_rewards(train_tasks):
    rewards = pytest.importorskip("diffucoder.rewards")  # the code/format rewards of reference.md section 5
    tasks = train_tasks[:30]
    answers = [format_answer(t) for t in tasks]
    assert rewards.code_format_reward(answers) == [1.0] * len(tasks)
    rows = [to_rl_record(t) for t in tasks]
    assert rewards.code_reward(answers, test_cases=[r["test_cases"] for r in rows]) == [1.0] * len(tasks)
    # a wrong program in the right format: full format reward, partial or no code reward
    wrong = [format_answer(t).replace("return", "return 1 +", 1) for t in tasks[:6]]
    assert all(r < 1.0 for r in rewards.code_reward(wrong, test_cases=[r["test_cases"] for r in rows[:6]]))
