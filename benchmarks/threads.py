"""One torch thread against several, side by side in one process, for decoding and for a training step.

    .venv/bin/python benchmarks/threads.py                         # tiny, 5m and 20m presets, 1 vs 2 threads
    .venv/bin/python benchmarks/threads.py --presets 5m --threads 1,2,4 --repeats 5

For every preset and task the thread counts take turns (1, 2, 1, 2, ...), so a change in the machine's load
hits all of them alike; the median of ``--repeats`` timed runs is reported, with each count's time as a ratio
to one thread's. Decoding is ``diffusion_generate`` (entropy order, top-p 0.95, 64 new tokens in 32 steps, a
32-token prompt) at batch 1 and 8; the training step is a forward and backward of the masked-diffusion loss
on 16 rows of 128 tokens plus an AdamW step. This is what ``diffucoder.runtime.default_threads`` is set from.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from diffucoder.model import DreamConfig, DreamModel


def _model(preset: str, vocab: int) -> DreamModel:
    cfg = DreamConfig.preset(preset, vocab_size=vocab, mask_token_id=vocab - 1, eos_token_id=0, pad_token_id=1)
    model = DreamModel(cfg, init_weights=False)
    model.init_weights(torch.Generator().manual_seed(0))
    return model


def decode_task(model: DreamModel, batch: int, vocab: int):
    from diffucoder.sampling import diffusion_generate

    ids = torch.randint(2, vocab - 2, (batch, 32), generator=torch.Generator().manual_seed(0))
    model.eval()

    def run() -> None:
        with torch.no_grad():
            diffusion_generate(model, ids, max_new_tokens=64, steps=32, alg="entropy", temperature=0.2, top_p=0.95,
                               generator=torch.Generator().manual_seed(1), vocab_limit=vocab - 1)
    return run


def train_task(model: DreamModel, vocab: int):
    from diffucoder.diffusion.losses import model_loss_sums

    g = torch.Generator().manual_seed(0)
    x0 = torch.randint(2, vocab - 2, (16, 128), generator=g)  # (B, L)
    t = torch.rand(16, generator=g).clamp_min(0.1)  # (B,)
    is_masked = torch.rand(16, 128, generator=g) < t[:, None]  # (B, L)
    is_masked[:, 0] = False  # with the AR shift, position 0 carries no prediction
    xt = torch.where(is_masked, torch.full_like(x0, vocab - 1), x0)
    maskable = torch.ones_like(is_masked)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()

    def run() -> None:
        s = model_loss_sums(model, xt, x0, is_masked, t, maskable, None)
        (s.weighted_ce / s.n_masked.clamp_min(1)).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return run


def measure(run, thread_counts: list[int], repeats: int) -> dict[int, float]:
    times: dict[int, list[float]] = {n: [] for n in thread_counts}
    for n in thread_counts:  # warm-up at every count
        torch.set_num_threads(n)
        run()
    for _ in range(repeats):
        for n in thread_counts:
            torch.set_num_threads(n)
            t0 = time.perf_counter()
            run()
            times[n].append(time.perf_counter() - t0)
    return {n: statistics.median(ts) for n, ts in times.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--presets", default="tiny,5m,20m", help="comma-separated DreamConfig presets")
    p.add_argument("--threads", default="1,2", help="comma-separated thread counts (the first is the baseline)")
    p.add_argument("--vocab", type=int, default=4096, help="vocabulary of the random models")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per thread count (median reported)")
    p.add_argument("--tasks", default="decode1,decode8,train", help="decodeB (B = batch size) and/or train")
    args = p.parse_args()
    counts = [int(x) for x in args.threads.split(",")]
    base = counts[0]
    print(f"torch {torch.__version__}, default threads {torch.get_num_threads()}, repeats {args.repeats}")
    print(f"{'preset':>6} {'params':>8} {'task':>9} " + " ".join(f"{f'{n} thr s':>9}" for n in counts)
          + " " + " ".join(f"{f'{n}/{base}':>7}" for n in counts[1:]))
    for preset in args.presets.split(","):
        model = _model(preset, args.vocab)
        n_params = model.num_parameters()
        for task in args.tasks.split(","):
            run = train_task(model, args.vocab) if task == "train" else decode_task(model, int(task[6:]), args.vocab)
            med = measure(run, counts, args.repeats)
            print(f"{preset:>6} {n_params / 1e6:>7.1f}M {task:>9} " + " ".join(f"{med[n]:>9.3f}" for n in counts)
                  + " " + " ".join(f"{med[n] / med[base]:>7.2f}" for n in counts[1:]), flush=True)


if __name__ == "__main__":
    main()
