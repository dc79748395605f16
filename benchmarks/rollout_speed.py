"""GRPO rollout speed: the CPU recipe's exact decoding vs cached parallel decoding, at the same reward.

    .venv/bin/python benchmarks/rollout_speed.py --model RUN/sft/final              # the demo's SFT model
    .venv/bin/python benchmarks/rollout_speed.py --model M --prompts 8 --generations 8 --repeats 3

A fixed batch of train-split synthetic prompts (``--tiers``) is decoded G times each with
:func:`diffucoder.rl.rollout.generate_rollouts`, as the trainer does, once per setting and repeat, settings
interleaved (repeat r runs every setting before repeat r + 1, each repeat with its own rollout seed shared by the
settings). Settings: ``exact`` is ``configs/rl_synthetic_cpu.yaml``'s rollout (64 tokens in 32 steps, entropy
order, temperature 1.2, top-p 0.95, top-k 50, one block, no cache); ``fast`` adds blocks, a confidence threshold,
the dual KV cache and early stop (``--block``, ``--threshold``, ``--cache``). Both are scored with the recipe's
rewards (0.5 x format + 2.0 x code, code run in the sandbox). Printed: canvas tokens/s (rows x tokens per second
of decoding), the fast/exact ratio, mean reward per setting with a 95% bootstrap interval over prompts, and the
paired per-prompt difference of group-mean rewards (fast - exact) with its interval.
"""

from __future__ import annotations

import argparse
import random
import sys
import time

import torch


def bootstrap(values: list[float], draws: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Mean and 95% percentile-bootstrap interval."""
    rng = random.Random(seed)
    means = sorted(sum(rng.choice(values) for _ in values) / len(values) for _ in range(draws))
    return sum(values) / len(values), means[int(0.025 * draws)], means[int(0.975 * draws) - 1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="an SFT checkpoint folder with tokenizer.json")
    p.add_argument("--prompts", type=int, default=8, help="prompts in the fixed batch")
    p.add_argument("--generations", type=int, default=8, help="G: completions per prompt")
    p.add_argument("--repeats", type=int, default=3, help="rollout seeds (every setting decodes each)")
    p.add_argument("--tiers", default="easy,medium")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--steps", type=int, default=32, help="exact decoding steps (the recipe's diffusion_steps)")
    p.add_argument("--temperature", type=float, default=1.2)
    p.add_argument("--block", type=int, default=16)
    p.add_argument("--threshold", type=float, default=0.9)
    p.add_argument("--cache", default="dual", choices=["prefix", "dual"])
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    from diffucoder.execution import SandboxPool
    from diffucoder.model import DreamModel
    from diffucoder.rl.rollout import generate_rollouts, resolve_reward_funcs, score_completions, RewardStats
    from diffucoder.tasks import generate_tasks, to_rl_record
    from diffucoder.tokenizer import load_tokenizer

    model = DreamModel.from_pretrained(args.model, torch_dtype=torch.float32).eval()
    tok = load_tokenizer(args.model)
    tiers = [t.strip() for t in args.tiers.split(",") if t.strip()]
    rows = [to_rl_record(t) for t in generate_tasks(args.prompts, "train", seed=12345, tiers=tiers)]
    base = dict(top_k=50)
    settings = {
        "exact": dict(steps=args.steps, decoding=base),
        "fast": dict(steps=args.steps, decoding=dict(base, block_length=args.block, threshold=args.threshold,
                                                      use_cache=args.cache, early_stop=True)),
    }
    pool = SandboxPool(workers=2)
    try:
        funcs = resolve_reward_funcs(["code_format", "code"], pool=lambda: pool, timeout=5.0)
        stats = [RewardStats(), RewardStats()]
        seconds = {k: 0.0 for k in settings}
        tokens = {k: 0 for k in settings}
        group_reward: dict[str, list[list[float]]] = {k: [] for k in settings}  # [repeat][prompt]
        for r in range(args.repeats):
            for name, s in settings.items():
                gen = torch.Generator().manual_seed(1000 + r)
                ro = generate_rollouts(model, tok, rows, args.generations, args.max_new_tokens, s["steps"],
                                       args.temperature, 0.95, "entropy", gen, **s["decoding"])
                seconds[name] += ro.seconds
                tokens[name] += ro.completion_ids.numel()
                rewards, _ = score_completions(ro.texts, ro.rows, funcs, [0.5, 2.0], stats)
                G = args.generations
                group_reward[name].append([float(rewards[i * G:(i + 1) * G].mean()) for i in range(len(rows))])
                print(f"repeat {r} {name}: {ro.seconds:.1f}s, mean reward {float(rewards.mean()):.3f}", flush=True)
    finally:
        pool.close()

    tps = {k: tokens[k] / seconds[k] for k in settings}
    print(f"\n{'setting':<8}{'seconds':>9}{'tok/s':>9}{'mean reward [95% CI over prompt x repeat]':>46}")
    for k in settings:
        flat = [v for rep in group_reward[k] for v in rep]
        m, lo, hi = bootstrap(flat)
        print(f"{k:<8}{seconds[k]:>9.1f}{tps[k]:>9.1f}{f'{m:.3f} [{lo:.3f}, {hi:.3f}]':>46}")
    diffs = [f - e for rf, re in zip(group_reward["fast"], group_reward["exact"]) for f, e in zip(rf, re)]
    d, lo, hi = bootstrap(diffs)
    print(f"paired reward difference fast - exact: {d:+.3f} [{lo:+.3f}, {hi:+.3f}] "
          f"({len(diffs)} prompt x repeat groups of {args.generations})")
    print(f"rollout tokens/s fast/exact: {tps['fast'] / tps['exact']:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
