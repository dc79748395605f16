"""Decoding speed at equal quality: exact (reference) decoding vs threshold parallel decoding vs the KV cache.

    .venv/bin/python benchmarks/decode_speed.py --quick                       # tiny random model, < 1 minute
    .venv/bin/python benchmarks/decode_speed.py --model RUN/sft/final         # a trained checkpoint (the demo's SFT)
    .venv/bin/python benchmarks/decode_speed.py --model M --tasks 150 --tiers easy --batch 1 --threads 1

Every mode decodes the same prompts in one process, interleaved batch by batch (each batch goes through every
mode before the next batch starts, so a machine that gets busier slows all modes alike). Modes:

- ``exact``: the reference's semantics, one token a step (``steps = max_new_tokens``), entropy order, no blocks,
  no cache; the baseline of every ratio.
- ``thr<τ>`` / ``thr<τ>-b<n>``: Fast-dLLM confidence-threshold parallel decoding, without and with semi-AR blocks
  of n (``-es``: with early stop), no cache.
- ``prefix<τ>-b<n>`` / ``dual<τ>-b<n>``: the same with the block-wise KV cache (prompt + finished blocks cached;
  dual: also the masked suffix) and early stop.

Per mode: wall time of the decode calls, tokens/s (canvas tokens, rows x max_new_tokens, per second: the same
numerator for every mode, so ratios are time ratios), model calls per canvas token, canvas positions computed
per token, and with ``--model`` the quality: greedy pass@1 on held-out synthetic tasks (test split, every sample
run in the sandbox), the per-task paired difference to exact with a 95% bootstrap interval, and the share of
tasks whose completion text equals exact's. The last lines name the best cached mode whose pass@1 is not below
exact's beyond the interval, its speed-up over exact and over the best threshold-only mode of the same quality:
``best cached/exact tokens/s: N.Nx``.

GPU (bf16): ``--device cuda --dtype bfloat16 --random-shape 1.5b --prompt-len 512 --max-new-tokens 256 --batch 16``
times a random-weight model of Qwen2.5-1.5B's shape (also ``0.5b``, ``7b``) and reports peak memory.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from diffucoder.model import DreamConfig, DreamModel
from diffucoder.sampling import decode_completions, diffusion_generate

# Qwen2.5 shapes (hidden, intermediate, layers, heads, kv heads, vocab) for random-weight GPU runs
SHAPES = {
    "0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                 num_key_value_heads=2, vocab_size=151936),
    "1.5b": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                 num_key_value_heads=2, vocab_size=151936),
    "7b": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
               num_key_value_heads=4, vocab_size=152064),
}


@dataclass
class Mode:
    name: str
    kwargs: dict[str, Any]
    kind: str  # "exact", "threshold" or "cached"
    seconds: float = 0.0
    passes: int = 0
    positions: int = 0
    rows: int = 0
    texts: list[str] = field(default_factory=list)
    passed: list[bool] = field(default_factory=list)


def build_modes(N: int, thresholds: list[float], blocks: list[int]) -> list[Mode]:
    base = dict(alg="entropy", temperature=0.0, top_p=None, top_k=None)
    modes = [Mode("exact", dict(base, steps=N), "exact")]
    for tau in thresholds:
        modes.append(Mode(f"thr{tau:g}", dict(base, threshold=tau), "threshold"))
        for b in blocks:
            modes.append(Mode(f"thr{tau:g}-b{b}-es", dict(base, threshold=tau, block_length=b, early_stop=True),
                              "threshold"))
            for cache in ("prefix", "dual"):
                modes.append(Mode(f"{cache}{tau:g}-b{b}", dict(base, threshold=tau, block_length=b, use_cache=cache,
                                                                early_stop=True), "cached"))
    return modes


def paired_ci(a: list[bool], b: list[bool], draws: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Mean of a - b over tasks and a 95% percentile-bootstrap interval (tasks resampled)."""
    d = [int(x) - int(y) for x, y in zip(a, b)]
    if not d:
        return 0.0, 0.0, 0.0
    rng = random.Random(seed)
    means = sorted(sum(rng.choice(d) for _ in d) / len(d) for _ in range(draws))
    return sum(d) / len(d), means[int(0.025 * draws)], means[int(0.975 * draws) - 1]


def _random_model(args: argparse.Namespace) -> tuple[DreamModel, int]:
    dtype = getattr(torch, args.dtype)
    if args.random_shape:
        cfg = DreamConfig(**SHAPES[args.random_shape], mask_token_id=SHAPES[args.random_shape]["vocab_size"] - 1,
                          eos_token_id=0, pad_token_id=1, tie_word_embeddings=False, max_position_embeddings=4096,
                          torch_dtype=args.dtype)
    else:
        cfg = DreamConfig.preset("5m", vocab_size=4096, mask_token_id=4095, eos_token_id=0, pad_token_id=1,
                                 tie_word_embeddings=False, initializer_range=0.3)
    with torch.device(args.device):
        model = DreamModel(cfg, init_weights=False)
    model.init_weights(torch.Generator(device=args.device).manual_seed(0))
    return model.to(dtype).eval(), cfg.vocab_size - 1


def run_random(args: argparse.Namespace) -> list[Mode]:
    """Speed only (a random model has no quality): random prompts of --prompt-len ids."""
    model, vocab_limit = _random_model(args)
    N = args.max_new_tokens
    modes = build_modes(N, args.thresholds, args.blocks)
    g = torch.Generator().manual_seed(1)
    n_batches = max(1, args.prompts // args.batch)
    batches = [torch.randint(2, vocab_limit, (args.batch, args.prompt_len), generator=g).to(args.device)
               for _ in range(n_batches)]
    for m in modes:  # warm-up (allocators, kernels), untimed
        diffusion_generate(model, batches[0][:1], max_new_tokens=N, vocab_limit=vocab_limit, **m.kwargs)
    for ids in batches:
        for m in modes:
            if args.device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            out = diffusion_generate(model, ids, max_new_tokens=N, vocab_limit=vocab_limit,
                                     return_dict_in_generate=True, **m.kwargs)
            if args.device == "cuda":
                torch.cuda.synchronize()
            m.seconds += time.perf_counter() - t0
            m.passes += out.trace.num_forward_passes
            m.positions += out.trace.extra["positions_computed"]
            m.rows += ids.shape[0]
            m.texts += [" ".join(map(str, r)) for r in out.sequences[:, args.prompt_len:].tolist()]
    return modes


def run_model(args: argparse.Namespace) -> tuple[list[Mode], int]:
    from diffucoder.evaluation.datasets import Dataset, tasks_from_rows
    from diffucoder.evaluation.harness import EvalSettings, score_samples
    from diffucoder.evaluation.prompts import PromptBuilder
    from diffucoder.evaluation.sanitize import sanitize
    from diffucoder.tasks import dataset as synthetic_rows
    from diffucoder.tokenizer import load_tokenizer

    model = DreamModel.from_pretrained(args.model, torch_dtype=getattr(torch, args.dtype)).to(args.device).eval()
    tok = load_tokenizer(args.model)
    rows = synthetic_rows("test", n=args.tasks, seed=args.seed, tiers=args.tiers)
    tasks = tasks_from_rows(rows)
    ds = Dataset("synthetic", tasks, "decode_speed", "decode_speed")
    builder = PromptBuilder("chat")
    prompts = [builder.build(t.prompt) for t in tasks]
    N = args.max_new_tokens
    modes = build_modes(N, args.thresholds, args.blocks)
    stop_ids = tok.stop_token_ids()
    from tqdm import tqdm

    bar = tqdm(total=len(prompts) * len(modes), desc="decode", disable=args.no_progress)
    for start in range(0, len(prompts), args.batch):
        chunk = prompts[start:start + args.batch]
        enc = tok.encode_batch(chunk)
        width = max(len(e) for e in enc)
        ids = torch.tensor([[tok.pad_token_id] * (width - len(e)) + e for e in enc], device=args.device)
        am = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in enc], device=args.device)
        for m in modes:
            t0 = time.perf_counter()
            out = diffusion_generate(model, ids, attention_mask=am, max_new_tokens=N, vocab_limit=tok.vocab_size,
                                     stop_token_ids=stop_ids, return_dict_in_generate=True, **m.kwargs)
            m.seconds += time.perf_counter() - t0
            m.passes += out.trace.num_forward_passes
            m.positions += out.trace.extra["positions_computed"]
            m.rows += len(chunk)
            m.texts += decode_completions(tok, out.sequences, width)
            bar.update(len(chunk))
    bar.close()
    with tempfile.TemporaryDirectory() as tmp:
        samples = {}
        for m in modes:
            for t, text in zip(tasks, m.texts):
                samples.setdefault(t.task_id, []).append(sanitize(builder.solution_text(t.prompt, text),
                                                                  t.entry_point or None))
        verdicts = score_samples(ds, samples, tmp, EvalSettings(), progress=not args.no_progress)
    for j, m in enumerate(modes):
        m.passed = [bool(verdicts[t.task_id][j]["plus"]) for t in tasks]
    return modes, len(tasks)


def report(modes: list[Mode], args: argparse.Namespace, n_tasks: int | None) -> dict[str, Any]:
    N = args.max_new_tokens
    exact = modes[0]
    tps = {m.name: m.rows * N / m.seconds for m in modes}
    header = f"{'mode':<18}{'seconds':>9}{'tok/s':>9}{'x exact':>9}{'calls/tok':>10}{'pos/tok':>9}"
    if n_tasks:
        header += f"{'pass@1':>8}{'d vs exact [95% CI]':>24}{'= exact':>9}"
    print(header)
    rows = []
    for m in modes:
        row = {"mode": m.name, "kind": m.kind, "settings": m.kwargs, "seconds": round(m.seconds, 3),
               "tokens_per_s": round(tps[m.name], 2), "speedup": round(tps[m.name] / tps["exact"], 2),
               "calls_per_token": round(m.passes / (m.rows * N), 4),
               "positions_per_token": round(m.positions / (m.rows * N), 2)}
        line = (f"{m.name:<18}{m.seconds:>9.2f}{tps[m.name]:>9.1f}{row['speedup']:>8.2f}x"
                f"{row['calls_per_token']:>10.3f}{row['positions_per_token']:>9.1f}")
        agree = sum(a == b for a, b in zip(m.texts, exact.texts)) / max(len(m.texts), 1)
        row["agreement_with_exact"] = round(agree, 4)
        if n_tasks:
            d, lo, hi = paired_ci(m.passed, exact.passed)
            row.update(pass_at_1=sum(m.passed) / n_tasks, delta=d, delta_ci95=[lo, hi])
            line += f"{100 * row['pass_at_1']:>7.1f}%{f'{100 * d:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]':>24}"
        line += f"{100 * agree:>8.0f}%"
        print(line)
        rows.append(row)

    def same_quality(r: dict) -> bool:  # not below exact beyond the interval
        return not n_tasks or r["delta_ci95"][1] >= 0

    cached = [r for r in rows if r["kind"] == "cached" and same_quality(r)]
    thr = [r for r in rows if r["kind"] == "threshold" and same_quality(r)]
    summary: dict[str, Any] = {"rows": rows, "n_tasks": n_tasks, "max_new_tokens": N, "batch": args.batch,
                               "threads": torch.get_num_threads(), "device": args.device, "dtype": args.dtype}
    if args.device == "cuda":
        summary["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
        print(f"peak GPU memory: {summary['peak_memory_gib']:.2f} GiB")
    best_thr = max(thr, key=lambda r: r["tokens_per_s"]) if thr else None
    if best_thr:
        print(f"best threshold-only at exact's quality: {best_thr['mode']} {best_thr['speedup']:.1f}x exact")
    if cached:
        best = max(cached, key=lambda r: r["tokens_per_s"])
        summary["best_cached"] = best["mode"]
        if best_thr:
            ratio = best["tokens_per_s"] / best_thr["tokens_per_s"]
            summary["best_cached_over_best_threshold"] = round(ratio, 2)
            print(f"best cached/best threshold-only tokens/s: {ratio:.1f}x ({best['mode']} vs {best_thr['mode']})")
        summary["best_cached_over_exact"] = best["speedup"]
        print(f"best cached/exact tokens/s: {best['speedup']:.1f}x ({best['mode']})")
    else:
        print("best cached/exact tokens/s: none of the cached modes kept exact's quality")
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="a checkpoint folder with tokenizer.json (quality measured on synthetic tasks)")
    p.add_argument("--quick", action="store_true", help="a tiny random model, a few prompts: under a minute")
    p.add_argument("--random-shape", choices=sorted(SHAPES), help="random-weight model of a Qwen2.5 shape (GPU)")
    p.add_argument("--tasks", type=int, default=100, help="held-out synthetic tasks (with --model)")
    p.add_argument("--tiers", default="easy", help="comma-separated task tiers (with --model)")
    p.add_argument("--seed", type=int, default=0, help="seed of the held-out task draw")
    p.add_argument("--prompts", type=int, default=8, help="random prompts (without --model)")
    p.add_argument("--prompt-len", type=int, default=64, help="random prompt length (without --model)")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--batch", type=int, default=1, help="prompts decoded together")
    p.add_argument("--thresholds", default="0.9,0.7", help="comma-separated confidence thresholds")
    p.add_argument("--blocks", default="16", help="comma-separated block lengths")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--out", type=Path, help="write the table as JSON here")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    try:
        args.thresholds = [float(x) for x in args.thresholds.split(",") if x.strip()]
        args.blocks = [int(x) for x in args.blocks.split(",") if x.strip()]
    except ValueError:
        p.error("--thresholds must be numbers and --blocks integers, comma-separated")
    args.tiers = [t.strip() for t in args.tiers.split(",") if t.strip()]
    if args.quick:
        args.prompts, args.max_new_tokens, args.prompt_len = 4, 32, 32
        args.blocks = [8]
    if args.max_new_tokens < 1 or args.batch < 1:
        p.error("--max-new-tokens and --batch must be >= 1")
    if args.model and not Path(args.model).is_dir():
        p.error(f"--model {args.model}: no such folder")
    torch.set_num_threads(args.threads)
    t0 = time.time()
    if args.model:
        modes, n_tasks = run_model(args)
    else:
        modes, n_tasks = run_random(args), None
    summary = report(modes, args, n_tasks)
    summary["wall_s"] = round(time.time() - t0, 1)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
