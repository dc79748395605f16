"""``diffucoder analyze``: the decoding-order study of paper section 4 on a checkpoint.

    diffucoder analyze --model runs/sft --prompts synthetic --temperatures 0.2,0.6,1.0,1.2 --out runs/analysis

writes ``analysis.json`` (settings, AR-ness@k per temperature, first-step confidence profile, reveal heatmaps,
sample completions, pass@k with ``--eval``) and PNG plots (``ar_ness.png``, ``first_step_profile.png``,
``reveal_heatmap_T*.png``, ``pass_at_k.png``).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    from diffucoder.cli.common import add_runtime_args, positive_int, unit_float

    p.add_argument("--model", required=True, type=Path, help="checkpoint folder (config, weights, tokenizer)")
    p.add_argument("--prompts", required=True,
                   help="an evaluation set: 'humaneval', 'humaneval+', 'mbpp+', 'synthetic' (held-out "
                        "diffucoder.tasks); or a .jsonl/.json/text file of prompts")
    p.add_argument("--temperatures", default="0.2,0.6,1.0,1.2", help="comma-separated sampling temperatures")
    p.add_argument("--out", type=Path, default=Path("analysis"), help="output folder")
    p.add_argument("--max-new-tokens", type=positive_int, default=64, help="tokens to generate per prompt")
    p.add_argument("--steps", type=positive_int, default=None, help="decoding steps (default: one token per step)")
    p.add_argument("--alg", default="entropy", choices=["origin", "maskgit_plus", "topk_margin", "entropy"],
                   help="unmasking order (DiffuCoder: entropy)")
    p.add_argument("--top-p", type=unit_float, default=0.95, help="nucleus sampling mass, in (0, 1]")
    p.add_argument("--limit", type=positive_int, default=None, help="use at most this many prompts")
    p.add_argument("--samples", type=positive_int, default=1, help="completions per prompt (for pass@k use 10)")
    p.add_argument("--batch-size", type=positive_int, default=8, help="prompts decoded together")
    p.add_argument("--max-k", type=positive_int, default=10, help="AR-ness@k for k = 1..max-k")
    p.add_argument("--prompt-style", choices=["base", "instruct", "chat"], default=None,
                   help="how prompts are presented (default: chat for synthetic, base otherwise)")
    p.add_argument("--eval", action="store_true",
                   help="score pass@1 / pass@k of the completions (evaluation sets only; runs code in the sandbox)")
    p.add_argument("--workers", type=positive_int, default=None, help="sandbox workers for --eval")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampling generators")
    p.add_argument("--no-plots", action="store_true", help="write only analysis.json")
    add_runtime_args(p)


def run(args: argparse.Namespace) -> int:
    import math

    from diffucoder.analysis.experiment import analyze_decoding_order, load_prompt_set
    from diffucoder.cli.common import check_output_dir, load_model
    from diffucoder.errors import InputError

    try:
        temps = [float(t) for t in args.temperatures.split(",") if t.strip()]
    except ValueError:
        raise InputError(f"--temperatures must be comma-separated numbers, got {args.temperatures!r}") from None
    if not temps or any(t < 0 or not math.isfinite(t) for t in temps):
        raise InputError(f"--temperatures needs at least one value, none negative, got {args.temperatures!r}")
    check_output_dir(args.out)
    model, tok, _ = load_model(args.model, args.dtype, args.device, args.threads)
    prompts = load_prompt_set(args.prompts, tok, style=args.prompt_style, limit=args.limit, seed=args.seed,
                              with_tests=args.eval, workers=args.workers)
    result = analyze_decoding_order(
        model, tok, prompts, temps, max_new_tokens=args.max_new_tokens, steps=args.steps, alg=args.alg,
        top_p=args.top_p, samples_per_prompt=args.samples, batch_size=args.batch_size, seed=args.seed,
        ks=range(1, args.max_k + 1))
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
