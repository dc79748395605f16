"""Coupled vs decoupled vs full-mask vs d1 GRPO on the synthetic tasks: held-out pass@1 before/after, reward curves.

    .venv/bin/python benchmarks/rl_experiment.py --sft runs/sft_synthetic/final [--steps 20] [--seeds 0,1]
        [--tiers easy]

``--tiers`` picks the difficulty tiers of the training and held-out tasks. Use ``easy`` for a model that
solves only easy tasks: prompts it never solves give zero-variance groups. docs/rl-experiment holds a run.

From one SFT model, each estimator gets the same budget: the same optimizer steps, prompts, G completions per
prompt, rollout settings and learning rate; and the same forward passes per completion where the estimator is
random (coupled = one complementary pair + the full-mask pass = 3 passes; decoupled = 3 passes; d1 = 3 prompt
masks averaged; coupled_normalized = coupled's masks with weight 1, 3 passes, not in the default
``--estimators`` list). ``full_mask`` is deterministic (1 pass: more would repeat it). Held-out pass@1 is measured on
synthetic *test-split* tasks (combinations never seen in training) before and after, with the same decoding
settings for every model; a completion passes when every test passes (code reward 1.0).

``--toy-reward vowels`` swaps the code rewards for a reward any model can learn (the fraction of vowels in the
answer) and skips pass@1: a check that each estimator's GRPO actually climbs a reward, cheap enough for a tiny
model (``--tiny --toy-reward vowels --chat-template false``).

Writes ``OUT/results.json`` (settings, per-run pass@1 and reward history), ``OUT/reward_curves.png`` and prints a
table. ``--tiny`` runs the whole pipeline on a tiny random model (for tests; its numbers mean nothing).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ESTIMATOR_SETTINGS: dict[str, dict[str, Any]] = {
    "coupled": {"estimator": "coupled", "num_mask_pairs": 1, "full_mask_pass": True},
    "decoupled": {"estimator": "decoupled", "num_mask_pairs": 1, "full_mask_pass": True},
    "full_mask": {"estimator": "full_mask"},
    "d1": {"estimator": "d1", "estimator_passes": 3, "prompt_mask_prob": 0.15},
    "coupled_normalized": {"estimator": "coupled_normalized", "num_mask_pairs": 1, "full_mask_pass": True},
}


def find_sft(explicit: str | None) -> Path | None:
    if explicit:
        return Path(explicit)
    runs = ROOT / "runs"
    if not runs.is_dir():
        return None
    cands = [p.parent for p in runs.rglob("config.json") if "sft" in str(p.parent.relative_to(runs))
             and (p.parent / "tokenizer.json").is_file() and any(p.parent.glob("*.safetensors"))
             and "rl" not in p.parent.name]
    return max(cands, key=lambda p: p.stat().st_mtime) if cands else None


def load_start(args: argparse.Namespace) -> tuple[Any, Any, str]:
    from diffucoder.model import DreamConfig, DreamModel
    from diffucoder.tokenizer import load_tokenizer, train_tokenizer

    if args.tiny:
        from diffucoder.tasks import format_answer, generate_tasks

        tok = train_tokenizer([format_answer(t) + t.question for t in generate_tasks(100, "train", seed=0)],
                              vocab_size=400)
        cfg = DreamConfig.preset("tiny", vocab_size=tok.vocab_size, mask_token_id=tok.mask_token_id)
        model = DreamModel(cfg, init_weights=False)
        model.init_weights(generator=torch.Generator().manual_seed(0))
        return model, tok, "tiny random model (--tiny: pipeline check only)"
    path = find_sft(args.sft)
    if path is None:
        raise SystemExit("no SFT model: pass --sft PATH (a checkpoint folder with tokenizer.json) or --tiny")
    model = DreamModel.from_pretrained(path, torch_dtype=torch.float32)
    return model, load_tokenizer(path), f"SFT checkpoint {path} ({model.num_parameters() / 1e6:.2f}M parameters)"


def pass_at_1(model: Any, tok: Any, rows: list[dict[str, Any]], args: argparse.Namespace, pool: Any,
              seed: int = 1234) -> dict[str, float]:
    """Fraction of held-out tasks solved (mean over ``--eval-samples`` samples per task) and mean format score."""
    from diffucoder.rewards.code import code_format_reward, code_reward
    from diffucoder.rl.rollout import generate_rollouts

    g = torch.Generator().manual_seed(seed)
    solved, fmt, n, errors = 0.0, 0.0, 0, 0
    bs = max(1, args.eval_batch // args.eval_samples)
    for s in range(0, len(rows), bs):
        chunk = rows[s:s + bs]
        ro = generate_rollouts(model, tok, chunk, args.eval_samples, args.max_completion_length, args.diffusion_steps,
                               args.eval_temperature, args.top_p, "entropy", g,
                               chat_template=args.chat_template == "true")
        tests = [r["test_cases"] for r in ro.rows]
        code = None
        for attempt in range(2):  # a transient sandbox failure is retried once, then scored as unsolved
            try:
                code = code_reward(ro.texts, test_cases=tests, pool=pool)
                break
            except Exception as e:  # noqa: BLE001 - reported, never fatal
                print(f"warning: scoring failed (attempt {attempt + 1}): {type(e).__name__}: {e}", file=sys.stderr)
        if code is None:
            errors += len(ro.texts)
            code = [0.0] * len(ro.texts)
        f = code_format_reward(ro.texts)
        solved += sum(1.0 for c in code if c == 1.0)
        fmt += sum(f)
        n += len(code)
    return {"pass@1": solved / max(n, 1), "format": fmt / max(n, 1), "n": n, "scoring_errors": errors}


def vowel_reward(completions: list[str], **kwargs: Any) -> list[float]:
    """Toy reward: the fraction of the answer's characters that are lower-case vowels."""
    return [sum(ch in "aeiou" for ch in c) / max(1, len(c)) for c in completions]


def plot_curves(runs: list[dict[str, Any]], path: Path, window: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(7, 4.2))
    by_est: dict[str, list[list[float]]] = {}
    for r in runs:
        by_est.setdefault(r["estimator"], []).append([h["reward_mean"] for h in r["history"] if h["iteration"] == 0])
    for est, curves in by_est.items():
        L = min(len(c) for c in curves)
        arr = np.array([c[:L] for c in curves])  # (seeds, rollout batches)
        k = max(1, min(window, L))
        smooth = np.array([np.convolve(c, np.ones(k) / k, mode="valid") for c in arr])
        x = np.arange(k, L + 1)
        mean = smooth.mean(0)
        ax.plot(x, mean, label=f"{est} ({len(curves)} seed{'s' if len(curves) > 1 else ''})")
        if len(curves) > 1:
            ax.fill_between(x, smooth.min(0), smooth.max(0), alpha=0.2)
    ax.set_xlabel("rollout batch")
    ax.set_ylabel(f"mean reward, moving avg {window}")
    ax.set_title("GRPO on synthetic tasks: reward by log-likelihood estimator")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sft", default=None, help="SFT checkpoint folder (default: newest *sft* folder under runs/)")
    ap.add_argument("--tiny", action="store_true", help="use a tiny random model (pipeline check)")
    ap.add_argument("--out", default="runs/rl_experiment")
    ap.add_argument("--estimators", default="coupled,decoupled,full_mask,d1")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--steps", type=int, default=20, help="optimizer steps per run (mu = 2 per rollout batch)")
    ap.add_argument("--num-generations", type=int, default=4)
    ap.add_argument("--batch", type=int, default=8, help="completions per step")
    ap.add_argument("--num-iterations", type=int, default=2)
    ap.add_argument("--lr", type=float, default=2e-5)
    ap.add_argument("--beta", type=float, default=0.01)
    ap.add_argument("--temperature", type=float, default=1.2, help="rollout temperature")
    ap.add_argument("--top-p", type=float, default=0.95)
    ap.add_argument("--max-completion-length", type=int, default=64)
    ap.add_argument("--diffusion-steps", type=int, default=32)
    ap.add_argument("--train-tasks", type=int, default=400)
    ap.add_argument("--eval-tasks", type=int, default=100)
    ap.add_argument("--eval-samples", type=int, default=1)
    ap.add_argument("--eval-temperature", type=float, default=0.0)
    ap.add_argument("--eval-batch", type=int, default=32)
    ap.add_argument("--task-seed", type=int, default=0)
    ap.add_argument("--tiers", default="easy,medium,hard",
                    help="difficulty tiers of the training and held-out tasks, comma-separated (repeat one to weight "
                         "it), e.g. 'easy' for a model that only solves easy tasks")
    ap.add_argument("--window", type=int, default=3, help="moving-average window of the reward curves")
    ap.add_argument("--toy-reward", choices=["vowels"], default=None,
                    help="replace the code rewards by a learnable toy reward and skip pass@1")
    ap.add_argument("--chat-template", choices=["true", "false"], default="true",
                    help="wrap prompts in the chat template (false: shorter prompts for tiny runs)")
    args = ap.parse_args(argv)

    from diffucoder.execution import SandboxPool
    from diffucoder.rl import GRPOConfig, train_grpo
    from diffucoder.tasks import check_tiers, generate_tasks, to_rl_record

    try:
        tiers = check_tiers([t.strip() for t in args.tiers.split(",") if t.strip()])
    except ValueError as e:
        raise SystemExit(f"--tiers: {e}") from None
    t0 = time.time()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start, tok, desc = load_start(args)
    print(f"start model: {desc}")
    train_rows = [to_rl_record(t) for t in generate_tasks(args.train_tasks, "train", seed=args.task_seed,
                                                          tiers=tiers)]
    eval_rows = [to_rl_record(t) for t in generate_tasks(args.eval_tasks, "test", seed=args.task_seed + 1,
                                                         tiers=tiers)]
    estimators = [e for e in args.estimators.split(",") if e]
    unknown = [e for e in estimators if e not in ESTIMATOR_SETTINGS]
    if unknown:
        raise SystemExit(f"unknown estimators {unknown}; choose from {list(ESTIMATOR_SETTINGS)}")
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    results: dict[str, Any] = {"start_model": desc, "settings": vars(args), "runs": []}
    toy = args.toy_reward is not None
    chat = args.chat_template == "true"
    with SandboxPool(workers=2) as pool:
        before = {"pass@1": float("nan"), "format": float("nan"), "n": 0} if toy else \
            pass_at_1(start, tok, eval_rows, args, pool)
        results["before"] = before
        print(f"before RL: held-out pass@1 {before['pass@1']:.3f} (format {before['format']:.3f}, n={before['n']})",
              flush=True)
        for est in estimators:
            for seed in seeds:
                model = copy.deepcopy(start)
                cfg = GRPOConfig(
                    output_dir=str(out / f"{est}-seed{seed}"), overwrite_output_dir=True, seed=seed,
                    num_generations=args.num_generations, per_device_train_batch_size=args.batch,
                    max_steps=args.steps, num_iterations=args.num_iterations, beta=args.beta, epsilon=0.5,
                    learning_rate=args.lr, warmup_ratio=0.05, temperature=args.temperature, top_p=args.top_p,
                    max_completion_length=args.max_completion_length, diffusion_steps=args.diffusion_steps,
                    ref_model_sync_steps=max(2, args.steps // 2), save_steps=0, save_final_model=False,
                    reward_workers=2, disable_tqdm=False, chat_template=chat,
                    **({"reward_funcs": ["vowels"], "reward_weights": [1.0]} if toy else {}),
                    **ESTIMATOR_SETTINGS[est],
                )
                t1 = time.time()
                res = train_grpo(cfg, model=model, tokenizer=tok, rows=train_rows,
                                 reward_funcs=[vowel_reward] if toy else None)
                after = dict(before) if toy else pass_at_1(res.model, tok, eval_rows, args, pool)
                run = {"estimator": est, "seed": seed, "passes": cfg.estimator_config().passes,
                       "after": after, "seconds": time.time() - t1, "counters": res.counters,
                       "history": [{k: v for k, v in h.items() if k not in ("counters", "reward_errors")}
                                   for h in res.history]}
                results["runs"].append(run)
                first = [h["reward_mean"] for h in res.history if h["iteration"] == 0]
                k = max(1, len(first) // 4)
                print(f"{est:>10} seed {seed}: pass@1 {before['pass@1']:.3f} -> {after['pass@1']:.3f}, reward "
                      f"first/last quarter {sum(first[:k]) / k:.3f} -> {sum(first[-k:]) / k:.3f} "
                      f"({run['seconds']:.0f} s)", flush=True)
                (out / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    plot_curves(results["runs"], out / "reward_curves.png", args.window)
    print()
    print(f"{'estimator':>10} {'passes':>6} {'pass@1 before':>13} {'after (seed mean)':>17} "
          f"{'reward first->last quarter':>27} {'code reward 1st->2nd half':>26} {'zero-var groups':>15} "
          f"{'mean KL':>8}")
    for est in estimators:
        rs = [r for r in results["runs"] if r["estimator"] == est]
        after = sum(r["after"]["pass@1"] for r in rs) / len(rs)
        curves = [[h["reward_mean"] for h in r["history"] if h["iteration"] == 0] for r in rs]
        k = max(1, min(len(c) for c in curves) // 4)
        a = sum(sum(c[:k]) / k for c in curves) / len(curves)
        b = sum(sum(c[-k:]) / k for c in curves) / len(curves)
        code = [[h.get("reward/code", float("nan")) for h in r["history"] if h["iteration"] == 0] for r in rs]
        half = [(sum(c[:len(c) // 2]) / max(1, len(c) // 2), sum(c[len(c) // 2:]) / max(1, len(c) - len(c) // 2))
                for c in code]
        c1, c2 = (sum(x[i] for x in half) / len(half) for i in (0, 1))
        zv = sum(r["counters"]["zero_variance_groups"] for r in rs) / max(1, sum(r["counters"]["groups"] for r in rs))
        kls = [h["kl"] for r in rs for h in r["history"] if h.get("kl") is not None]
        kl = sum(kls) / len(kls) if kls else float("nan")
        print(f"{est:>10} {rs[0]['passes']:>6} {before['pass@1']:>13.3f} {after:>17.3f} {a:>13.3f} -> {b:<10.3f} "
              f"{c1:>12.3f} -> {c2:<10.3f} {zv:>15.0%} {kl:>8.4f}")
    print(f"\nwrote {out / 'results.json'} and {out / 'reward_curves.png'} ({time.time() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
