"""Diffusion decoding throughput: generated tokens per second and forward passes per generated token.

    .venv/bin/python benchmarks/generate_throughput.py                       # tiny random model, CPU
    .venv/bin/python benchmarks/generate_throughput.py --model runs/sft      # a trained checkpoint

For batch sizes 1 and 8 it times ``diffusion_generate`` with one token per step (entropy order, as DiffuCoder),
half as many steps, semi-AR blocks, and Fast-dLLM-style threshold decoding (which only saves passes when the
model is confident: on a random model it degenerates to one token per pass). "fwd share" is the share of the
wall time spent in the model's forward passes; the rest is the sampler, dominated by the top-p filter's full
sort of the vocabulary at every masked position (kept exact, as the reference; the "greedy, no top-p" row shows
the sampler without it).
"""

from __future__ import annotations

import argparse
import time

import torch

from diffucoder.model import DreamConfig, DreamModel
from diffucoder.model.config import PRESETS
from diffucoder.sampling import diffusion_generate


def _model(args: argparse.Namespace) -> tuple[DreamModel, int]:
    if args.model:
        from diffucoder.tokenizer import load_tokenizer

        model = DreamModel.from_pretrained(args.model, torch_dtype=torch.float32).eval()
        return model, load_tokenizer(args.model).vocab_size
    # init std 0.3 gives logits of std ~2.4 at hidden 64, about a trained model's spread; the default 0.02 makes
    # every next-token distribution nearly uniform, the worst case for the top-p filter (nucleus ~ vocabulary)
    cfg = DreamConfig.preset(args.preset, vocab_size=args.vocab, mask_token_id=args.vocab - 1,
                             eos_token_id=0, pad_token_id=1, tie_word_embeddings=False,
                             initializer_range=args.init_std)
    model = DreamModel(cfg, init_weights=False)
    model.init_weights(torch.Generator().manual_seed(0))
    return model.eval(), args.vocab


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="checkpoint folder (default: a random --preset model)")
    p.add_argument("--preset", default="tiny", choices=sorted(PRESETS))
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--init-std", type=float, default=0.3, help="init std of the random model")
    p.add_argument("--prompt-len", type=int, default=32)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--batches", default="1,8")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=1, help="timed runs per setting (best is reported)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model, vocab_limit = _model(args)
    N = args.new_tokens
    calls = {"n": 0, "t": 0.0}
    starts: list[float] = []
    model.register_forward_pre_hook(lambda *_: starts.append(time.perf_counter()))

    def _post(*_):
        calls["n"] += 1
        calls["t"] += time.perf_counter() - starts.pop()

    model.register_forward_hook(_post)
    settings = [
        ("entropy, 1 tok/step", dict(steps=N, alg="entropy")),
        ("  greedy, no top-p", dict(steps=N, alg="entropy", temperature=0.0, top_p=None)),
        ("entropy, 2 tok/step", dict(steps=N // 2, alg="entropy")),
        ("origin, 1 tok/step", dict(steps=N, alg="origin")),
        (f"blocks of {N // 4}", dict(steps=N, alg="entropy", block_length=N // 4)),
        ("threshold 0.9", dict(alg="maskgit_plus", threshold=0.9)),
        ("threshold 0.1", dict(alg="maskgit_plus", threshold=0.1)),
    ]
    n_params = model.num_parameters()
    name = args.model or f"{args.preset} (random, init std {args.init_std})"
    print(f"model: {name}, {n_params / 1e6:.2f}M params, vocab "
          f"{model.config.vocab_size}, prompt {args.prompt_len}, {N} new tokens, {torch.get_num_threads()} threads")
    print(f"{'setting':<22} {'batch':>5} {'tok/s':>8} {'passes/tok':>10} {'s/run':>7} {'fwd share':>9}")
    gen = torch.Generator().manual_seed(0)
    for B in [int(b) for b in args.batches.split(",")]:
        ids = torch.randint(2, vocab_limit - 2, (B, args.prompt_len), generator=gen)
        for name, kw in settings:
            best = None
            for _ in range(args.repeats + 1):  # the first run warms up
                calls.update(n=0, t=0.0)
                t0 = time.perf_counter()
                kw_run = {"temperature": 0.2, "top_p": 0.95, **kw}  # DiffuCoder's sampling unless overridden
                out = diffusion_generate(model, ids, max_new_tokens=N, vocab_limit=vocab_limit,
                                         return_dict_in_generate=True, generator=torch.Generator().manual_seed(1),
                                         **kw_run)
                dt = time.perf_counter() - t0
                row = (dt, calls["n"], calls["t"], out.trace.num_forward_passes)
                if best is None or dt < best[0]:
                    best = row
            dt, n_calls, fwd_t, passes = best
            print(f"{name:<22} {B:>5} {B * N / dt:>8.1f} {passes / N:>10.3f} {dt:>7.2f} {fwd_t / dt:>9.0%}", flush=True)


if __name__ == "__main__":
    main()
