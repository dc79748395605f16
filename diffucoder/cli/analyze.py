"""``diffucoder analyze``: the decoding-order study of paper section 4 on a checkpoint.

    diffucoder analyze --model runs/sft --prompts synthetic --temperatures 0.2,0.6,1.0,1.2 --out runs/analysis

writes ``analysis.json`` (settings, AR-ness@k per temperature, first-step confidence profile, reveal heatmaps,
sample completions, pass@k with ``--eval``) and PNG plots (``ar_ness.png``, ``first_step_profile.png``,
``reveal_heatmap_T*.png``, ``pass_at_k.png``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, type=Path, help="checkpoint folder (config, weights, tokenizer)")
    p.add_argument("--prompts", required=True,
                   help="an evaluation set: 'humaneval', 'humaneval+', 'mbpp+', 'synthetic' (held-out "
                        "diffucoder.tasks); or a .jsonl/.json/text file of prompts")
    p.add_argument("--temperatures", default="0.2,0.6,1.0,1.2", help="comma-separated sampling temperatures")
    p.add_argument("--out", type=Path, default=Path("analysis"), help="output folder")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--steps", type=int, default=None, help="decoding steps (default: one token per step)")
    p.add_argument("--alg", default="entropy", choices=["origin", "maskgit_plus", "topk_margin", "entropy"])
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--limit", type=int, default=None, help="use at most this many prompts")
    p.add_argument("--samples", type=int, default=1, help="completions per prompt (for pass@k use 10)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-k", type=int, default=10, help="AR-ness@k for k = 1..max-k")
    p.add_argument("--prompt-style", choices=["base", "instruct", "chat"], default=None,
                   help="how prompts are presented (default: chat for synthetic, base otherwise)")
    p.add_argument("--eval", action="store_true",
                   help="score pass@1 / pass@k of the completions (evaluation sets only; runs code in the sandbox)")
    p.add_argument("--workers", type=int, default=None, help="sandbox workers for --eval")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "auto"])
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--no-plots", action="store_true", help="write only analysis.json")


def run(args: argparse.Namespace) -> int:
    import torch

    from diffucoder.analysis.experiment import analyze_decoding_order, load_prompt_set
    from diffucoder.model import DreamModel
    from diffucoder.tokenizer import load_tokenizer

    try:
        temps = [float(t) for t in args.temperatures.split(",") if t.strip()]
    except ValueError:
        print(f"error: --temperatures must be comma-separated numbers, got {args.temperatures!r}", file=sys.stderr)
        return 2
    if not temps or any(t < 0 for t in temps):
        print("error: --temperatures needs at least one value, none negative", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        tok = load_tokenizer(args.model)
        dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "auto": "auto"}[args.dtype]
        model = DreamModel.from_pretrained(args.model, torch_dtype=dtype).eval()
        prompts = load_prompt_set(args.prompts, tok, style=args.prompt_style, limit=args.limit, seed=args.seed,
                                  with_tests=args.eval, workers=args.workers)
        result = analyze_decoding_order(
            model, tok, prompts, temps, max_new_tokens=args.max_new_tokens, steps=args.steps, alg=args.alg,
            top_p=args.top_p, samples_per_prompt=args.samples, batch_size=args.batch_size, seed=args.seed,
            ks=range(1, args.max_k + 1))
    except (FileNotFoundError, ValueError, RuntimeError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    result.settings["model"] = str(args.model)
    paths = result.write(args.out, plots=not args.no_plots)
    print(f"{'T':>5} {'local@1':>8} {'local@5':>8} {'global@1':>9} {'global@5':>9}  pass@k")
    for r in result.results:
        c = r.ar_ness
        at = {k: i for i, k in enumerate(c.ks)}
        loc5 = c.local[at[5]] if 5 in at else float("nan")
        glo5 = c.global_[at[5]] if 5 in at else float("nan")
        print(f"{r.temperature:>5g} {c.local[0]:>8.3f} {loc5:>8.3f} {c.global_[0]:>9.3f} {glo5:>9.3f}  "
              f"{r.pass_at_k or ''}")
    for path in paths:
        print(f"wrote {path}")
    return 0
