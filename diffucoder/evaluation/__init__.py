"""Benchmarks and the evaluation harness: HumanEval, HumanEval+ / MBPP+ (EvalPlus files), synthetic tasks.

    from diffucoder.evaluation import load_dataset, evaluate, EvalSettings
    ds = load_dataset("humaneval+")                      # or "humaneval", "mbpp+", "synthetic"
    report = evaluate(ds, "runs/eval", EvalSettings(n_samples=10, ks=(1, 10), prompt_style="instruct"),
                      generate=my_generate)            # generate(prompts: list[str]) -> list[str]
    report.pass_at_k                                  # {"base": {"pass@1": ...}, "plus": {...}}

Modules: ``datasets`` (loading, the registry, ``Task.job``), ``prompts`` (Qwen2.5-Coder-style base / instruct
prompts), ``sanitize`` (code extraction and pruning), ``metrics`` (unbiased pass@k), ``harness`` (resumable
generation and scoring, ``samples.jsonl`` / ``results.json``, ``model_generate_fn``), ``evalplus_ref`` (the
``evalplus`` package's own verdicts, for agreement checks). Programs run in ``diffucoder.execution``'s sandbox.
"""

from diffucoder.evaluation.datasets import (
    Dataset,
    Task,
    dataset_names,
    load_dataset,
    load_evalplus,
    load_humaneval,
    register_dataset,
    tasks_from_rows,
)
from diffucoder.evaluation.harness import (
    EvalReport,
    EvalSettings,
    evaluate,
    generate_samples,
    loaded_model_generate_fn,
    model_generate_fn,
)
from diffucoder.evaluation.metrics import mean_pass_at_k, pass_at_k
from diffucoder.evaluation.prompts import PromptBuilder
from diffucoder.evaluation.sanitize import sanitize

__all__ = [
    "Dataset",
    "EvalReport",
    "EvalSettings",
    "PromptBuilder",
    "Task",
    "dataset_names",
    "evaluate",
    "generate_samples",
    "load_dataset",
    "load_evalplus",
    "load_humaneval",
    "loaded_model_generate_fn",
    "mean_pass_at_k",
    "model_generate_fn",
    "pass_at_k",
    "register_dataset",
    "sanitize",
    "tasks_from_rows",
]
