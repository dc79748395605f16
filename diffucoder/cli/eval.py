"""``diffucoder eval``: score samples (or a model) on HumanEval / HumanEval+ / MBPP+ / synthetic tasks.

    diffucoder eval --samples samples.jsonl --dataset humaneval+ [--dataset-path HumanEvalPlus.jsonl.gz]
    diffucoder eval --model runs/sft --dataset humaneval --n-samples 10 --k 1,10 --prompt-style instruct

Results (``results.json``, the verdict cache and, with --model, ``samples.jsonl``) go to ``--out``; re-running the
same command continues an interrupted run.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    from diffucoder.cli.common import (add_fast_decoding_args, add_runtime_args, nonneg_float, positive_float,
                                       positive_int, unit_float)
    from diffucoder.evaluation.datasets import dataset_names

    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--samples", type=Path, help="EvalPlus-format jsonl of {task_id, solution|completion}")
    src.add_argument("--model", type=Path, help="checkpoint folder to generate samples with first")
    p.add_argument("--dataset", required=True, choices=dataset_names(), help="the benchmark to score on")
    p.add_argument("--dataset-path", type=Path, default=None,
                   help="another EvalPlus jsonl(.gz) than the release shipped with diffucoder (HumanEval+ v0.1.10, "
                        "MBPP+ v0.2.0), or synthetic rows jsonl")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: next to --samples / eval/<dataset>)")
    p.add_argument("--n-samples", type=positive_int, default=1, help="samples per task (with --model)")
    p.add_argument("--k", default="1", help="comma-separated k values for pass@k (each at most the samples per task)")
    p.add_argument("--prompt-style", choices=("base", "instruct", "chat"), default=None,
                   help="default: chat for synthetic, else base")
    p.add_argument("--tasks", default=None,
                   help="comma-separated task ids (evaluate a subset; its results go to results.tasks-<hash>.json, "
                        "never over a full run's results.json)")
    p.add_argument("--workers", type=positive_int, default=None, help="sandbox workers (default: CPU count)")
    p.add_argument("--timeout-scale", type=positive_float, default=1.0, help="multiply every time limit")
    p.add_argument("--sanitize", action="store_true", help="sanitise given samples before scoring")
    p.add_argument("--batch-size", type=positive_int, default=8, help="prompts decoded together (with --model)")
    p.add_argument("--max-new-tokens", type=positive_int, default=256, help="tokens to generate per sample")
    p.add_argument("--steps", type=positive_int, default=256, help="decoding steps per sample")
    p.add_argument("--alg", default="entropy", choices=["origin", "maskgit_plus", "topk_margin", "entropy"],
                   help="unmasking order (DiffuCoder: entropy)")
    p.add_argument("--temperature", type=nonneg_float, default=0.2, help="sampling temperature (0: greedy)")
    p.add_argument("--top-p", type=unit_float, default=0.95, help="nucleus sampling mass, in (0, 1]")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampling generator")
    add_fast_decoding_args(p)
    add_runtime_args(p)


def _parse_ks(text: str) -> tuple[int, ...]:
    from diffucoder.errors import InputError

    try:
        ks = tuple(int(k) for k in str(text).split(",") if k.strip())
    except ValueError:
        raise InputError(f"--k must be comma-separated integers, got {text!r}") from None
    if not ks or any(k < 1 for k in ks):
        raise InputError(f"--k values must be integers >= 1, got {text!r}")
    return tuple(sorted(set(ks)))


def run(args: argparse.Namespace) -> int:
    import warnings

    from diffucoder.evaluation.datasets import load_dataset
    from diffucoder.evaluation.harness import EvalSettings, evaluate, model_generate_fn
    from diffucoder.execution import isolation_level

    from diffucoder.cli.common import check_output_dir, fast_decoding_kwargs

    ks = _parse_ks(args.k)
    if args.model is not None and any(k > args.n_samples for k in ks):
        warnings.warn(f"--k {','.join(str(k) for k in ks if k > args.n_samples)} exceed --n-samples "
                      f"{args.n_samples}: those pass@k cannot be computed and will be dropped")
    style = args.prompt_style or ("chat" if args.dataset == "synthetic" else "base")
    task_ids = [t.strip() for t in args.tasks.split(",") if t.strip()] if args.tasks else None
    settings = EvalSettings(n_samples=args.n_samples, ks=ks, prompt_style=style, batch_size=args.batch_size,
                            workers=args.workers, timeout_scale=args.timeout_scale, task_ids=task_ids)
    dataset = load_dataset(args.dataset, args.dataset_path, task_ids=task_ids)
    generate = None
    if args.model is not None:
        generate, gen_settings = model_generate_fn(args.model, max_new_tokens=args.max_new_tokens, steps=args.steps,
                                                   alg=args.alg, temperature=args.temperature, top_p=args.top_p,
                                                   seed=args.seed, device=args.device, dtype=args.dtype,
                                                   threads=args.threads, **fast_decoding_kwargs(args))
        settings.generation = gen_settings
    out = check_output_dir(args.out or (args.samples.parent / f"eval_{args.dataset}" if args.samples else
                                        Path("eval") / args.dataset))
    release = f", {dataset.release}" if dataset.release else ""
    print(f"dataset {dataset.name}: {len(dataset)} tasks{release}, sha256 {dataset.sha256[:16]}; sandbox isolation: "
          f"{isolation_level()}")
    report = evaluate(dataset, out, settings, samples_path=args.samples, generate=generate,
                      sanitize_given=args.sanitize)
    for split, scores in report.pass_at_k.items():
        line = "  ".join(f"{k} {100 * v:.1f}" for k, v in scores.items())
        print(f"{dataset.name} {split}: {line}")
    print(f"results: {report.results_path}")
    print(json.dumps(report.pass_at_k))
    return 0
