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
    from diffucoder.evaluation.datasets import dataset_names

    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--samples", type=Path, help="EvalPlus-format jsonl of {task_id, solution|completion}")
    src.add_argument("--model", type=Path, help="checkpoint folder to generate samples with first")
    p.add_argument("--dataset", required=True, choices=dataset_names())
    p.add_argument("--dataset-path", type=Path, default=None,
                   help="EvalPlus jsonl(.gz) (default: ../shared/data/evalplus/...) or synthetic rows jsonl")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: next to --samples / eval/<dataset>)")
    p.add_argument("--n-samples", type=int, default=1, help="samples per task (with --model)")
    p.add_argument("--k", default="1", help="comma-separated k values for pass@k")
    p.add_argument("--prompt-style", choices=("base", "instruct", "chat"), default=None,
                   help="default: chat for synthetic, else base")
    p.add_argument("--tasks", default=None, help="comma-separated task ids (evaluate a subset)")
    p.add_argument("--workers", type=int, default=None, help="sandbox workers (default: CPU count)")
    p.add_argument("--timeout-scale", type=float, default=1.0, help="multiply every time limit")
    p.add_argument("--sanitize", action="store_true", help="sanitise given samples before scoring")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--steps", type=int, default=256)
    p.add_argument("--alg", default="entropy")
    p.add_argument("--temperature", type=float, default=0.2)
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")


def run(args: argparse.Namespace) -> int:
    from diffucoder.evaluation.datasets import load_dataset
    from diffucoder.evaluation.harness import EvalSettings, evaluate, model_generate_fn
    from diffucoder.execution import isolation_level

    try:
        ks = tuple(int(k) for k in str(args.k).split(","))
    except ValueError:
        print(f"--k must be comma-separated integers, got {args.k!r}")
        return 2
    style = args.prompt_style or ("chat" if args.dataset == "synthetic" else "base")
    task_ids = args.tasks.split(",") if args.tasks else None
    dataset = load_dataset(args.dataset, args.dataset_path, task_ids=task_ids)
    settings = EvalSettings(n_samples=args.n_samples, ks=ks, prompt_style=style, batch_size=args.batch_size,
                            workers=args.workers, timeout_scale=args.timeout_scale, task_ids=task_ids)
    generate = None
    if args.model is not None:
        generate, gen_settings = model_generate_fn(args.model, max_new_tokens=args.max_new_tokens, steps=args.steps,
                                                   alg=args.alg, temperature=args.temperature, top_p=args.top_p,
                                                   seed=args.seed, device=args.device)
        settings.generation = gen_settings
    out = args.out or (args.samples.parent / f"eval_{args.dataset}" if args.samples else
                       Path("eval") / args.dataset)
    print(f"dataset {dataset.name}: {len(dataset)} tasks, sha256 {dataset.sha256[:16]}; sandbox isolation: "
          f"{isolation_level()}")
    report = evaluate(dataset, out, settings, samples_path=args.samples, generate=generate,
                      sanitize_given=args.sanitize)
    for split, scores in report.pass_at_k.items():
        line = "  ".join(f"{k} {100 * v:.1f}" for k, v in scores.items())
        print(f"{dataset.name} {split}: {line}")
    print(f"results: {report.results_path}")
    print(json.dumps(report.pass_at_k))
    return 0
