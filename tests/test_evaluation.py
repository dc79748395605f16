"""Evaluation: pass@k by hand, the sanitiser, prompts, datasets, the resumable harness and the CLI."""

from __future__ import annotations

import json
import math

import pytest

from diffucoder.evaluation.datasets import (
    Dataset,
    dataset_names,
    load_dataset,
    load_evalplus,
    load_humaneval_dataset,
    register_dataset,
    tasks_from_rows,
)
from diffucoder.evaluation.harness import EvalSettings, evaluate, generate_samples
from diffucoder.evaluation.metrics import mean_pass_at_k, pass_at_k
from diffucoder.evaluation.prompts import INSTRUCTION_PREFIX, RESPONSE_PREFIX, PromptBuilder
from diffucoder.evaluation.sanitize import sanitize
from diffucoder.execution import SandboxPool

from diffucoder.evaluation.datasets import DATA_DIR as EVALPLUS  # the release files shipped with the package


@pytest.fixture(scope="module")
def pool():
    with SandboxPool(workers=2) as p:
        yield p


# pass@k ------------------------------------------------------------------------------------------------------

def test_pass_at_k_by_hand():
    # n=5, c=2, k=1: 1 - C(3,1)/C(5,1) = 1 - 3/5 = 0.4 (= c/n)
    assert pass_at_k(5, 2, 1) == pytest.approx(0.4)
    # n=5, c=2, k=2: 1 - C(3,2)/C(5,2) = 1 - 3/10 = 0.7
    assert pass_at_k(5, 2, 2) == pytest.approx(0.7)
    # n=10, c=1, k=5: 1 - C(9,5)/C(10,5) = 1 - 126/252 = 0.5
    assert pass_at_k(10, 1, 5) == pytest.approx(0.5)
    # n - c < k: some correct sample is always drawn
    assert pass_at_k(3, 2, 2) == 1.0
    assert pass_at_k(4, 0, 2) == 0.0
    for n, c, k in [(20, 7, 3), (200, 13, 10), (7, 7, 1)]:
        assert pass_at_k(n, c, k) == pytest.approx(1 - math.comb(n - c, k) / math.comb(n, k))
    assert mean_pass_at_k([5, 5], [2, 0], 1) == pytest.approx(0.2)


def test_pass_at_k_rejects_bad_input():
    with pytest.raises(ValueError, match="at least 10 samples"):
        pass_at_k(5, 1, 10)
    with pytest.raises(ValueError, match="0 <= c <= n"):
        pass_at_k(5, 6, 1)


# sanitiser ---------------------------------------------------------------------------------------------------

def test_sanitize_picks_the_block_with_the_entry_point_and_prunes():
    text = (
        "Here is a helper:\n```python\nprint('hi')\n```\nAnd the answer:\n```python\nimport math\n"
        "from typing import List\n\nCONST = 3\nUNUSED = 4\n\ndef helper(x):\n    return x * CONST\n\n"
        "def unrelated():\n    return 0\n\n@staticmethod\ndef decorated():\n    pass\n\n"
        "def solve(xs: List[int]) -> int:\n    return helper(math.floor(sum(xs)))\n\n"
        "print(solve([1, 2]))\nassert solve([1]) == 3\nif __name__ == '__main__':\n    solve([])\n```\nDone."
    )
    out = sanitize(text, "solve")
    assert "def solve" in out and "def helper" in out and "CONST = 3" in out and "import math" in out
    assert "from typing import List" in out
    for gone in ("UNUSED", "unrelated", "print(", "assert", "__main__", "decorated"):
        assert gone not in out
    ns: dict = {}
    exec(out, ns)
    assert ns["solve"]([1, 2]) == 9


def test_sanitize_truncated_base_model_output():
    text = "def add(a, b):\n    return a + b\n\n\ndef check():\n    assert add(1, 2) == 3\n\nprint(add(1,"
    out = sanitize(text, "add")
    assert out == "def add(a, b):\n    return a + b\n"


def test_sanitize_unclosed_fence_and_garbage():
    assert "def f" in sanitize("```python\ndef f():\n    return 1\n", "f")
    assert sanitize("no code here at all !!", "f") == ""
    assert sanitize("", None) == ""


def test_sanitize_keeps_classes_used_by_the_entry_point():
    code = "class Node:\n    def __init__(self, v):\n        self.v = v\n\ndef make(v):\n    return Node(v)\n"
    assert sanitize(code, "make") == code


# prompts -----------------------------------------------------------------------------------------------------

def test_prompts_follow_qwen_eval():
    p = 'def f(x):\n    """Return x."""\n'
    assert PromptBuilder("base").build(p) == p.strip() + "\n"
    inst = PromptBuilder("instruct").build(p)
    assert INSTRUCTION_PREFIX in inst and inst.endswith(f"{RESPONSE_PREFIX}\n```python\n")
    assert f"```\n{p.strip()}\n```" in inst and inst.count("<|im_start|>") == 3
    assert PromptBuilder("instruct").solution_text(p, "def f(x):\n    return x\n```") .startswith("```python\n")
    with pytest.raises(ValueError, match="prompt style"):
        PromptBuilder("fancy")


# datasets ----------------------------------------------------------------------------------------------------

def test_humaneval_canonical_solutions_pass_and_broken_fail(pool):
    ds = load_humaneval_dataset()
    assert len(ds) == 164 and len(ds.sha256) == 64
    tasks = ds.tasks[:12]
    good = pool.map([t.job(t.reference_program) for t in tasks])
    bad = pool.map([t.job(t.prompt + "    return None\n") for t in tasks])
    assert all(r.passed for r in good), [(r.status, r.error) for r in good if not r.passed]
    assert not any(r.passed for r in bad)


def test_registry_and_unknown_names():
    assert {"humaneval", "humaneval+", "mbpp+", "synthetic"} <= set(dataset_names())
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("nope")
    rows = [{"task_id": "t/0", "question": "Write inc(x).", "test_cases": ["assert inc(1) == 2"],
             "solution": "def inc(x):\n    return x + 1\n", "entry_point": "inc"}]
    register_dataset("tiny-test", lambda path: Dataset("tiny-test", tasks_from_rows(rows), "inline", "0" * 64))
    assert load_dataset("tiny-test").tasks[0].tests == ["assert inc(1) == 2"]
    with pytest.raises(ValueError, match="test_cases"):
        tasks_from_rows([{"question": "q"}])


def test_synthetic_tasks_hook(pool):
    pytest.importorskip("diffucoder.tasks")
    ds = load_dataset("synthetic")
    assert len(ds) == 300 and ds.tasks[0].tests
    res = pool.map([t.job(t.canonical_solution) for t in ds.tasks[:20]])
    assert all(r.passed for r in res), [(r.status, r.error) for r in res if not r.passed]


def test_evalplus_tasks_judge_canonical_and_wrong(pool):
    pytest.importorskip("evalplus")
    he = load_evalplus(EVALPLUS / "HumanEvalPlus-v0.1.10.jsonl.gz", "humaneval",
                       task_ids=["HumanEval/0", "HumanEval/2", "HumanEval/22", "HumanEval/32"], progress=False)
    mb = load_evalplus(EVALPLUS / "MbppPlus-v0.2.0.jsonl.gz", "mbpp", task_ids=["Mbpp/2", "Mbpp/737"],
                       progress=False)
    for ds in (he, mb):
        for t in ds.tasks:
            assert t.n_base_tests and len(t.tests) > t.n_base_tests
            assert pool.run(t.job(t.reference_program)).passed, t.task_id
            wrong = t.reference_program + f"\n\ndef {t.entry_point}(*a):\n    return None\n"
            assert not pool.run(t.job(wrong)).passed, t.task_id
    with pytest.raises(ValueError, match="unknown task ids"):
        load_evalplus(EVALPLUS / "MbppPlus-v0.2.0.jsonl.gz", "mbpp", task_ids=["Mbpp/0"], progress=False)


# harness -----------------------------------------------------------------------------------------------------

def _small_humaneval(n: int = 6) -> Dataset:
    full = load_humaneval_dataset()
    return Dataset("humaneval", full.tasks[:n], full.source, full.sha256)


def test_harness_generate_score_and_results_file(tmp_path, pool):
    ds = _small_humaneval()
    canon = {t.prompt.strip() + "\n": t.canonical_solution for t in ds.tasks}
    calls = []

    def generate(prompts: list[str]) -> list[str]:
        calls.append(len(prompts))
        # sample 0 of each task is right, sample 1 wrong (returns None)
        return [canon[p] if i % 2 == 0 else "    return None\n" for i, p in enumerate(prompts)]

    settings = EvalSettings(n_samples=2, ks=(1, 2), prompt_style="base", batch_size=2,
                            generation={"model": "test-oracle"})
    rep = evaluate(ds, tmp_path, settings, generate=generate, pool=pool, progress=False)
    assert sum(calls) == 12
    assert rep.pass_at_k["base"]["pass@1"] == pytest.approx(0.5)
    assert rep.pass_at_k["base"]["pass@2"] == pytest.approx(1.0)
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["dataset_sha256"] == ds.sha256 and res["settings"]["generation"] == {"model": "test-oracle"}
    assert res["settings"]["n_samples"] == 2 and res["settings"]["isolation"] in ("namespaces", "rlimits")
    lines = [json.loads(x) for x in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert len(lines) == 12 and all({"task_id", "solution"} <= set(x) for x in lines)


def test_harness_resumes_without_recomputing(tmp_path, pool):
    ds = _small_humaneval(4)
    canon = {t.prompt.strip() + "\n": t.canonical_solution for t in ds.tasks}
    settings = EvalSettings(n_samples=2, ks=(1,), batch_size=2)
    seen = []

    def flaky(prompts):
        seen.extend(prompts)
        if len(seen) > 4:
            raise KeyboardInterrupt  # interrupted after two batches
        return [canon[p] for p in prompts]

    with pytest.raises(KeyboardInterrupt):
        generate_samples(ds, flaky, tmp_path, settings, progress=False)
    with open(tmp_path / "samples.jsonl", "a") as f:
        f.write('{"task_id": "HumanEval/1", "sol')  # a torn last line, as after a crash
    done_before = len(seen)
    rest = []
    generate_samples(ds, lambda ps: rest.extend(ps) or [canon[p] for p in ps], tmp_path, settings, progress=False)
    assert done_before == 6 and len(rest) == 8 - 4  # only the missing samples are generated
    rep = evaluate(ds, tmp_path, settings, samples_path=tmp_path / "samples.jsonl", pool=pool, progress=False)
    assert rep.pass_at_k["base"]["pass@1"] == 1.0
    cache_lines = (tmp_path / "eval_cache.jsonl").read_text().splitlines()
    rep2 = evaluate(ds, tmp_path, settings, samples_path=tmp_path / "samples.jsonl", pool=pool, progress=False)
    assert rep2.pass_at_k == rep.pass_at_k
    assert (tmp_path / "eval_cache.jsonl").read_text().splitlines() == cache_lines  # nothing re-run


def test_samples_must_cover_every_task(tmp_path, pool):
    ds = _small_humaneval(3)
    p = tmp_path / "s.jsonl"
    p.write_text(json.dumps({"task_id": ds.tasks[0].task_id, "completion": ds.tasks[0].canonical_solution}) + "\n")
    with pytest.raises(ValueError, match="no samples for 2 task"):
        evaluate(ds, tmp_path, EvalSettings(), samples_path=p, pool=pool, progress=False)
    ok = evaluate(ds, tmp_path, EvalSettings(task_ids=[ds.tasks[0].task_id]), samples_path=p, pool=pool,
                  progress=False)
    assert ok.pass_at_k["base"]["pass@1"] == 1.0
    p.write_text(json.dumps({"task_id": "Nope/1", "solution": "x"}) + "\n")
    with pytest.raises(ValueError, match="not in humaneval"):
        evaluate(ds, tmp_path, EvalSettings(), samples_path=p, pool=pool, progress=False)


def test_cli_scores_samples(tmp_path):
    from diffucoder.cli.main import main

    ds = load_humaneval_dataset()
    p = tmp_path / "samples.jsonl"
    with open(p, "w") as f:
        for t in ds.tasks:
            f.write(json.dumps({"task_id": t.task_id, "completion": t.canonical_solution}) + "\n")
    assert main(["eval", "--samples", str(p), "--dataset", "humaneval", "--out", str(tmp_path / "out"),
                 "--workers", "2"]) == 0
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    assert res["pass_at_k"]["base"]["pass@1"] == 1.0 and res["n_tasks"] == 164


def test_cli_model_path_reports_a_clear_error(tmp_path, capsys):
    from diffucoder.cli.main import main

    assert main(["eval", "--model", str(tmp_path / "missing"), "--dataset", "humaneval"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"error: {tmp_path / 'missing'}: no such checkpoint folder"


def test_cli_generates_with_a_tiny_model_end_to_end(tmp_path, tiny_model, tiny_tokenizer):
    pytest.importorskip("diffucoder.tasks")
    from diffucoder.cli.main import main

    folder = tmp_path / "ckpt"
    tiny_model.save_pretrained(folder, tokenizer=tiny_tokenizer)
    ids = ",".join(t.task_id for t in load_dataset("synthetic").tasks[:2])
    out = tmp_path / "out"
    args = ["eval", "--model", str(folder), "--dataset", "synthetic", "--tasks", ids, "--n-samples", "2",
            "--k", "1,2", "--max-new-tokens", "8", "--steps", "4", "--out", str(out), "--workers", "1"]
    assert main(args) == 0
    (subset_results,) = out.glob("results.tasks-*.json")  # a --tasks run writes beside results.json
    res = json.loads(subset_results.read_text())
    assert res["n_tasks"] == 2 and res["settings"]["generation"]["steps"] == 4 and res["subset"]
    assert res["settings"]["prompt_style"] == "chat"
    assert len((out / "samples.jsonl").read_text().splitlines()) == 4
    assert main(args) == 0  # a re-run resumes: nothing left to generate or score
    assert len((out / "samples.jsonl").read_text().splitlines()) == 4


def test_subset_loading_and_scoring(tmp_path, pool):
    full = load_humaneval_dataset()
    sub = load_dataset("humaneval", task_ids=["HumanEval/3", "HumanEval/1"])
    assert [t.task_id for t in sub.tasks] == ["HumanEval/3", "HumanEval/1"] and sub.sha256 == full.sha256
    with pytest.raises(ValueError, match="unknown task ids"):
        load_dataset("humaneval", task_ids=["HumanEval/999"])
    p = tmp_path / "all.jsonl"
    p.write_text("".join(json.dumps({"task_id": t.task_id, "completion": t.canonical_solution}) + "\n"
                         for t in full.tasks))
    rep = evaluate(sub, tmp_path / "out", EvalSettings(task_ids=["HumanEval/3", "HumanEval/1"]), samples_path=p,
                   pool=pool, progress=False)
    assert rep.n_tasks == 2 and rep.pass_at_k["base"]["pass@1"] == 1.0
