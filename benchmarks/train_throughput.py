"""Training throughput and MFU of the masked-diffusion training step on this machine.

For each model size and precision, runs the real training step of ``diffucoder.training`` (noising with
per-row generators, forward with the LM head at masked rows only, ELBO-weighted CE, backward, AdamW) on random
token rows and reports tokens/s and MFU = achieved FLOP/s / peak FLOP/s, where the peak is this machine's best
measured dense matmul rate in the same precision, measured in the same run.

FLOPs counted (the work the step must do, not recomputation): 6 * (non-embedding matmul parameters) per token,
attention scores and values 6 * 2 * L * (heads * head_dim) per token per layer (fwd 2 matmuls of 2*L*d, bwd x2),
and the LM head 6 * hidden * vocab per *masked* token (it runs only there). Embedding lookups, norms, RoPE,
softmax and the optimizer count as zero, as usual for MFU.

    python benchmarks/train_throughput.py                 # tiny, 5m, 20m in fp32 and bf16
    python benchmarks/train_throughput.py --models 5m --precisions bf16 --seconds 20
    python benchmarks/train_throughput.py --models 5m --precisions fp32 --profile   # where the time goes
    python benchmarks/train_throughput.py --models 5m --baseline   # + transformers' Qwen2, same shape, same run

``--baseline`` also times transformers' ``Qwen2ForCausalLM`` of the same shape (SDPA attention, causal LM loss
with its LM head on every token, AdamW) in the same process, as the yardstick the targets are set against. Its
FLOPs are counted the same way, with the head on every token (the work it does).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffucoder.model import DreamConfig, DreamModel  # noqa: E402
from diffucoder.training.config import DiffusionSection  # noqa: E402
from diffucoder.training.data import noise_rows, step_t  # noqa: E402
from diffucoder.training.loop import DiffusionObjective, param_groups  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def matmul_peak(dtype: torch.dtype, n: int = 2048, seconds: float = 3.0) -> float:
    """Best dense matmul rate (FLOP/s) over several sizes, in ``dtype`` (the best single product, so a busy
    moment on a shared machine does not lower the peak)."""
    best = 0.0
    for size in (n // 2, n, n * 3 // 2):
        a = torch.randn(size, size).to(dtype)
        b = torch.randn(size, size).to(dtype)
        for _ in range(2):
            a @ b
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds / 3:
            s0 = time.perf_counter()
            a @ b
            best = max(best, 2 * size**3 / (time.perf_counter() - s0))
    return best


def time_steps(step: Callable[[int], Any], seconds: float) -> list[tuple[float, Any]]:
    """(wall seconds, return value) of ``step(i)`` for i = 2, 3, ... for at least ``seconds`` and 3 steps,
    after 2 untimed warm-up steps."""
    for i in range(2):
        step(i)
    out = []
    i, t0 = 2, time.perf_counter()
    while time.perf_counter() - t0 < seconds or i < 5:
        s0 = time.perf_counter()
        r = step(i)
        out.append((time.perf_counter() - s0, r))
        i += 1
    return out


def step_flops(cfg: DreamConfig, tokens: int, masked: int, seq_len: int) -> float:
    h, hd = cfg.hidden_size, cfg.dim_per_head
    q, kv = cfg.num_attention_heads * hd, cfg.num_key_value_heads * hd
    per_layer = h * q + 2 * h * kv + q * h + 3 * h * cfg.intermediate_size
    dense = 6 * cfg.num_hidden_layers * per_layer * tokens
    attn = 6 * cfg.num_hidden_layers * 2 * seq_len * q * tokens
    head = 6 * h * cfg.vocab_size * masked
    return float(dense + attn + head)


@dataclass
class Result:
    model: str
    precision: str
    params: int
    non_embedding_params: int
    batch: int
    seq_len: int
    tokens_per_s: float
    tflops: float
    peak_tflops: float
    mfu: float
    best_tokens_per_s: float
    best_mfu: float
    steps: int


def random_rows(vocab: int, seq_len: int) -> torch.Tensor:
    """64 fixed random token rows (ids below the mask id) that the timed steps cycle through."""
    return torch.randint(0, vocab - 1, (64, seq_len), generator=torch.Generator().manual_seed(0))


def summarize(name: str, precision: str, params: int, non_embedding: int, batch: int, seq_len: int,
              times: list[float], flops: list[float], peak: float) -> Result:
    """The median step (robust to other processes on a shared machine) and the fastest one."""
    order = sorted(range(len(times)), key=times.__getitem__)
    med, best = order[len(order) // 2], order[0]
    tokens = batch * seq_len
    return Result(name, precision, params, non_embedding, batch, seq_len, tokens / times[med],
                  flops[med] / times[med] / 1e12, peak / 1e12, flops[med] / times[med] / peak, tokens / times[best],
                  flops[best] / times[best] / peak, len(times))


def bench(preset: str, precision: str, peak: float, vocab: int, seq_len: int, batch: int, seconds: float,
          profile: bool = False) -> Result:
    cfg = DreamConfig.preset(preset, vocab_size=vocab, mask_token_id=vocab - 1, shift_logits=True)
    model = DreamModel(cfg)
    obj = DiffusionObjective(model).train()
    opt = torch.optim.AdamW(param_groups(model, 0.1), lr=1e-4)
    diff = DiffusionSection(t_sampling="stratified")
    data = random_rows(vocab, seq_len)

    def step(i: int) -> tuple[int, int]:
        idx = [(i * batch + b) % 64 for b in range(batch)]
        rows = noise_rows(data[idx], torch.zeros(batch, dtype=torch.long), step_t(0, i, batch, diff),
                          [(0, i, b) for b in range(batch)], mask_token_id=vocab - 1, pad_token_id=0,
                          shift=True, diff=diff, step=i)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            wce, ce, nm, nk = obj(rows.xt, rows.x0, rows.is_masked, rows.t, rows.maskable, rows.attention_mask)
        (wce / nm.clamp_min(1)).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return batch * seq_len, int(nm)

    timed = time_steps(step, seconds)
    times = [t for t, _ in timed]
    flops = [step_flops(cfg, tk, m, seq_len) for _, (tk, m) in timed]
    i = len(timed) + 2
    if profile:  # where the step's time goes, by operator
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as torch_profile

        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            for j in range(3):
                step(i + j)
        print(f"\n{preset} {precision}: 3 steps by operator (self time)")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12, max_name_column_width=50))
    return summarize(preset, precision, model.num_parameters(), model.num_parameters(exclude_embeddings=True),
                     batch, seq_len, times, flops, peak)


def bench_hf(preset: str, precision: str, peak: float, vocab: int, seq_len: int, batch: int,
             seconds: float) -> Result:
    """transformers' Qwen2ForCausalLM of the same shape: a causal-LM training step (the baseline row)."""
    import transformers

    cfg = DreamConfig.preset(preset, vocab_size=vocab, mask_token_id=vocab - 1, shift_logits=True)
    qc = transformers.Qwen2Config(
        vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers, num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_key_value_heads, rope_theta=cfg.rope_theta, rms_norm_eps=cfg.rms_norm_eps,
        tie_word_embeddings=cfg.tie_word_embeddings, max_position_embeddings=cfg.max_position_embeddings,
        attn_implementation="sdpa",
    )
    model = transformers.Qwen2ForCausalLM(qc).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    data = random_rows(vocab, seq_len)

    def step(i: int) -> None:
        x = data[[(i * batch + b) % 64 for b in range(batch)]]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = model(input_ids=x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    times = [t for t, _ in time_steps(step, seconds)]
    tokens = batch * seq_len
    flops = step_flops(cfg, tokens, tokens, seq_len)  # the head runs on every token here
    n_emb = model.model.embed_tokens.weight.numel()
    n = sum(p.numel() for p in model.parameters())
    return summarize(f"hf-{preset}", precision, n, n - n_emb, batch, seq_len, times, [flops] * len(times), peak)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["tiny", "5m", "20m"])
    ap.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=list(DTYPES))
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=15.0, help="timed seconds per configuration")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    ap.add_argument("--profile", action="store_true", help="also print a per-operator profile of 3 steps")
    ap.add_argument("--baseline", action="store_true",
                    help="also time transformers' Qwen2ForCausalLM of each shape (needs transformers)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    load = os.getloadavg()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average before: "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    peaks = {p: matmul_peak(DTYPES[p]) for p in args.precisions}
    for p, v in peaks.items():
        print(f"measured matmul peak {p}: {v / 1e9:.1f} GFLOP/s")
    results = []
    print("tok/s, GFLOP/s and MFU of the median step; 'best' = the fastest step")
    print(f"{'model':>6} {'prec':>5} {'params':>9} {'non-emb':>9} {'tok/s':>8} {'GFLOP/s':>8} {'MFU':>6} "
          f"{'best tok/s':>10} {'best MFU':>8} {'steps':>5}")
    for m in args.models:
        for p in args.precisions:
            rows = [bench(m, p, peaks[p], args.vocab, args.seq_len, args.batch, args.seconds, args.profile)]
            if args.baseline:
                rows.append(bench_hf(m, p, peaks[p], args.vocab, args.seq_len, args.batch, args.seconds))
            for r in rows:
                results.append(r)
                print(f"{r.model:>6} {r.precision:>5} {r.params:>9,} {r.non_embedding_params:>9,} "
                      f"{r.tokens_per_s:>8.0f} {r.tflops * 1e3:>8.1f} {r.mfu:>6.1%} {r.best_tokens_per_s:>10.0f} "
                      f"{r.best_mfu:>8.1%} {r.steps:>5}", flush=True)
    load = os.getloadavg()
    print(f"load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    if args.json:
        args.json.write_text(json.dumps({"peaks": peaks, "results": [asdict(r) for r in results],
                                         "threads": torch.get_num_threads()}, indent=2))


if __name__ == "__main__":
    main()
