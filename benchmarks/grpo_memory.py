"""Peak memory and time of one GRPO micro-batch, before vs after the lean log-prob passes, side by side.

    .venv/bin/python benchmarks/grpo_memory.py [--layers 24] [--rows 1] [--prompt 512] [--completion 256]
        [--no-gradient-checkpointing] [--repeats 1] [--json out.json]

The model is a random Dream model of Qwen2.5-0.5B's shape (hidden 896, 24 layers, 14 heads, 2 KV heads,
intermediate 4864, vocab 151936, tied embeddings, 494M parameters), fp32 on CPU. One micro-batch is ``--rows``
completions with the coupled estimator and its full-mask pass (3 passes, so 3 * rows sequences of
prompt + completion tokens), measured in two phases:

- ``score``: a no-grad log-prob pass (what the reference model and the old-policy pass cost);
- ``train``: the policy's log-prob pass with gradients, the clipped GRPO loss with k3 KL, backward, and the
  trainer's gradient finishing (non-finite check and norm clipping).

Variants (each in its own fresh subprocess, alternated, so they share the machine's state):

- ``before``: the previous computation: full (rows, L, V) logits from ``model.token_logits``, sliced to the
  completion, fp32 log-softmax, gather; the non-finite check concatenated an fp32 copy of every gradient;
- ``after``: ``diffusion.estimators.completion_token_logp`` (LM head only at the positions that predict
  completion tokens, chunked log-softmax recomputed in backward) and the norm-based non-finite check.

Peak memory is the process's peak resident set (VmHWM, reset through ``/proc/self/clear_refs`` before each
phase); "extra" subtracts the resident set just before the phase (model, inputs, and for ``train`` nothing
else). Both variants print their loss and gradient norm, which must agree. On a shared CPU only the ratios of
one run mean anything.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

QWEN25_05B = dict(hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                  intermediate_size=4864, vocab_size=151936, tie_word_embeddings=True, rope_theta=1e6,
                  rms_norm_eps=1e-6, max_position_embeddings=32768)


def _status_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{key} not in /proc/self/status")


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        return True
    except OSError:
        return False


def _old_nonfinite_check(params: list[torch.nn.Parameter]) -> bool:
    """The trainer's previous check: an fp32 copy of every gradient, concatenated."""
    grads = [p.grad for p in params if p.grad is not None]
    flat = torch.cat([g.reshape(-1).float() for g in grads])
    return bool(torch.isfinite(flat).all())


def run_variant(args: argparse.Namespace) -> dict[str, float]:
    """One variant in this process; returns its figures."""
    from diffucoder.diffusion.estimators import (EstimatorConfig, completion_token_logp, draw_mask_plan,
                                                 estimate_logp, full_logits_token_logp)
    from diffucoder.model import DreamConfig, DreamModel
    from diffucoder.rl.loss import grpo_loss

    torch.set_num_threads(args.threads)
    shape = dict(QWEN25_05B, num_hidden_layers=args.layers, vocab_size=args.vocab)
    V = shape["vocab_size"]
    cfg = DreamConfig(**shape, mask_token_id=V - 1, torch_dtype="float32")
    model = DreamModel(cfg, init_weights=False)
    model.init_weights(generator=torch.Generator().manual_seed(0))
    model.model.gradient_checkpointing = args.gradient_checkpointing
    g = torch.Generator().manual_seed(1)
    B, Lp, Lc = args.rows, args.prompt, args.completion
    ids = torch.randint(0, V - 1, (B, Lp + Lc), generator=g)
    attn = torch.ones(B, Lp + Lc, dtype=torch.long)
    plan = draw_mask_plan(EstimatorConfig("coupled", full_mask_pass=True), attn[:, :Lp], Lc, generator=g)
    adv = torch.linspace(-1.0, 1.0, B) if B > 1 else torch.ones(1)
    cmask = torch.ones(B, Lc)
    if args.variant == "before":
        def logp_fn(x, y, lp, a):
            return full_logits_token_logp(model, x, y, lp, a)
    else:
        def logp_fn(x, y, lp, a):
            return completion_token_logp(model, x, y, lp, a)
    mask_id = cfg.mask_token_id
    out: dict[str, float] = {"params_m": model.num_parameters() / 1e6, "tokens": float(plan.num_passes * B * (Lp + Lc))}
    can_reset = _reset_peak()

    # phase 1: a no-grad scoring pass (reference / old policy)
    model.eval()
    base = _status_kib("VmRSS")
    _reset_peak()
    t0 = time.perf_counter()
    with torch.no_grad():
        ref = estimate_logp(model, ids, attn, plan, mask_id, logp_fn=logp_fn).logp  # (B, Lc)
    out["score_s"] = time.perf_counter() - t0
    out["score_peak_gib"] = _status_kib("VmHWM") / 2 ** 20
    out["score_extra_gib"] = (_status_kib("VmHWM") - base) / 2 ** 20

    # phase 2: policy pass with gradients, loss, backward, gradient finishing
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    base = _status_kib("VmRSS")
    _reset_peak()
    t0 = time.perf_counter()
    logp = estimate_logp(model, ids, attn, plan, mask_id, logp_fn=logp_fn).logp  # (B, Lc)
    loss = grpo_loss(logp, logp.detach(), adv, cmask, ref_logp=ref - 0.01, beta=0.01, epsilon_low=0.5).loss
    loss.backward()
    finite = _old_nonfinite_check(params) if args.variant == "before" else True
    gn = float(torch.nn.utils.clip_grad_norm_(params, 0.2))
    finite = finite and math.isfinite(gn)
    out["train_s"] = time.perf_counter() - t0
    out["train_peak_gib"] = _status_kib("VmHWM") / 2 ** 20
    out["train_extra_gib"] = (_status_kib("VmHWM") - base) / 2 ** 20
    out.update(loss=float(loss.detach()), grad_norm=gn, finite=float(finite), peak_reset=float(can_reset),
               ref_logp_mean=float(ref.mean()))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", choices=["before", "after"], default=None,
                    help="run one variant in this process and print its JSON (the driver does this per variant)")
    ap.add_argument("--layers", type=int, default=24, help="transformer blocks (24 = Qwen2.5-0.5B)")
    ap.add_argument("--vocab", type=int, default=QWEN25_05B["vocab_size"], help="vocabulary (tests shrink it)")
    ap.add_argument("--rows", type=int, default=1, help="completions in the micro-batch (x3 passes)")
    ap.add_argument("--prompt", type=int, default=512)
    ap.add_argument("--completion", type=int, default=256)
    ap.add_argument("--no-gradient-checkpointing", dest="gradient_checkpointing", action="store_false",
                    help="keep every block's activations (more memory; default: checkpoint blocks, as a 7B run does)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1, help="before/after pairs, alternated")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args(argv)
    if min(args.layers, args.rows, args.prompt, args.completion, args.threads, args.repeats) < 1 or args.vocab < 2:
        raise SystemExit("--layers, --rows, --prompt, --completion, --threads and --repeats must be >= 1, "
                         "--vocab >= 2")
    if args.variant:
        print(json.dumps(run_variant(args)))
        return 0
    from tqdm.auto import tqdm

    common = [f"--layers={args.layers}", f"--vocab={args.vocab}", f"--rows={args.rows}", f"--prompt={args.prompt}",
              f"--completion={args.completion}", f"--threads={args.threads}"]
    if not args.gradient_checkpointing:
        common.append("--no-gradient-checkpointing")
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    results: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
    order = [v for _ in range(args.repeats) for v in ("before", "after")]
    for variant in tqdm(order, desc="variants", file=sys.stderr):
        r = subprocess.run([sys.executable, __file__, f"--variant={variant}", *common], capture_output=True,
                           text=True, env=env)
        if r.returncode != 0:
            raise SystemExit(f"variant {variant} failed (exit {r.returncode}):\n{r.stderr[-3000:]}")
        results[variant].append(json.loads(r.stdout.strip().splitlines()[-1]))
    b, a = results["before"], results["after"]
    print(f"model: random Dream, Qwen2.5-0.5B shape with {args.layers} layers, vocab {args.vocab} "
          f"({b[0]['params_m']:.0f}M parameters), "
          f"fp32, CPU, {args.threads} threads, gradient checkpointing {'on' if args.gradient_checkpointing else 'off'}")
    print(f"micro-batch: {args.rows} completion(s) x 3 passes (coupled + full mask), prompt {args.prompt} + "
          f"completion {args.completion} = {int(b[0]['tokens'])} tokens per pass set")
    if not b[0]["peak_reset"]:
        print("note: /proc/self/clear_refs not writable: peaks are whole-process peaks")

    def med(rs: list[dict[str, float]], k: str) -> float:
        vs = sorted(r[k] for r in rs)
        return vs[len(vs) // 2]

    rows = [("score (no grad): time s", "score_s"), ("score: peak RSS GiB", "score_peak_gib"),
            ("score: extra over model GiB", "score_extra_gib"), ("train (fwd+bwd+grads): time s", "train_s"),
            ("train: peak RSS GiB", "train_peak_gib"), ("train: extra over model GiB", "train_extra_gib")]
    print(f"{'':34} {'before':>9} {'after':>9} {'after/before':>13}")
    for label, k in rows:
        vb, va = med(b, k), med(a, k)
        print(f"{label:34} {vb:>9.2f} {va:>9.2f} {va / vb if vb else float('nan'):>13.3f}")
    dl = abs(b[0]["loss"] - a[0]["loss"])
    dg = abs(b[0]["grad_norm"] - a[0]["grad_norm"]) / max(abs(b[0]["grad_norm"]), 1e-12)
    print(f"same computation: |loss diff| {dl:.2e}, grad-norm rel. diff {dg:.2e} "
          f"(loss {a[0]['loss']:.6f}, grad norm {a[0]['grad_norm']:.6f}); {len(b)} run(s) each, medians")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
