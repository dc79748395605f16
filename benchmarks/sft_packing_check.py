"""Does packing hurt learning per example? The demo's SFT from one pretrained model, unpacked vs packed.

Each variant is the demo's SFT stage (``diffucoder.demo.Demo.stage_sft``'s settings: easy synthetic tasks,
flexible padding, plain masked CE, lr 2e-3, stratified t, progressive conditioning over the first tenth) for
the same number of optimizer steps from the same pretrained model, with about the same number of examples per
step (packed variants take as many rows as hold ``--examples-per-step`` examples on average), so they see
about the same examples. Two held-out measures of each final model:

- the training loop's held-out evaluation (``eval/masked_ce``: unpacked rows of held-out train-split examples,
  evenly spread t; the same rows for every variant of one prompt format), along the run;
- the generation canvas: held-out *test-split* easy tasks (combinations never trained on), each laid out as
  the decoder sees it (prompt, then 64 answer slots: the answer, ``<|im_end|>``, pad), the answer region
  masked at t = 0.1, 0.2, ..., 1.0 (fixed masks); plain CE of the answer tokens and of the pad slots, and the
  arg-max accuracy with every slot masked (t = 1, the decoder's first step). The pad slots measure whether the
  model has learned to end its answer.

    python benchmarks/sft_packing_check.py --init RUN/pretrain/final --steps 300 --out runs/packing-check
    python benchmarks/sft_packing_check.py --init M --variants unpacked packed-256 --steps 300 --out DIR

A variant whose folder already holds a finished run is not retrained (rerun with another ``--out`` to start
over); ``DIR/summary.json`` collects the table.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SHORT = {"sft.synthetic_prompt_format": "short", "sft.system_prompt": "null"}
VARIANTS: dict[str, dict[str, Any]] = {
    "unpacked": {},
    "packed-256": {"sft.packing": "true", "sft.max_length": "256"},  # answer region: longest answer + 1
    "packed-256-one-pad": {"sft.packing": "true", "sft.max_length": "256", "sft.pack_answer_length": "0"},
    "packed-256-answer-32": {"sft.packing": "true", "sft.max_length": "256", "sft.pack_answer_length": "32"},
    "unpacked-short": dict(SHORT),
    "packed-160-short": {"sft.packing": "true", "sft.max_length": "160", **SHORT},
    "packed-192-short-one-pad": {"sft.packing": "true", "sft.max_length": "192", "sft.pack_answer_length": "0",
                                 **SHORT},
}
CANVAS = 64  # the demo's max_new_tokens


def sft_overrides(init: str, run_dir: Path, steps: int, tasks: int, rows: int, threads: int,
                  variant: dict[str, Any]) -> list[str]:
    """The demo's SFT stage settings (FULL), with ``rows`` rows a step and the variant's changes."""
    base = {
        "task": "sft", "model.init_from": init, "run_dir": str(run_dir), "seed": "0", "runtime.device": "cpu",
        "runtime.threads": str(threads), "runtime.precision": "fp32", "logging.progress": "true",
        "sft.synthetic_tasks": str(tasks), "sft.max_length": "160", "sft.padding": "flexible",
        "sft.synthetic_tiers": "[easy]", "sft.progressive_condition_steps": str(steps // 10),
        "sft.heldout_fraction": "0.02", "optim.steps": str(steps), "optim.global_batch_size": str(rows),
        "optim.micro_batch_size": str(rows), "optim.lr": "2e-3", "optim.warmup_steps": str(max(1, steps // 20)),
        "optim.weight_decay": "0.0", "diffusion.t_sampling": "stratified", "diffusion.loss_weighting": "none",
        "eval.every": str(max(1, steps // 4)), "eval.num_sequences": "32", "checkpoint.every": "0",
    }
    base.update(variant)
    return [f"{k}={v}" for k, v in base.items()]


def rows_per_step(tok, variant: dict[str, Any], examples_per_step: int) -> int:
    """Rows that hold about ``examples_per_step`` examples (unpacked: that many)."""
    if variant.get("sft.packing") != "true":
        return examples_per_step
    from diffucoder.data.sft import encode_examples, parse_record, segment_length
    from diffucoder.tasks import generate_tasks, to_sft_record
    from diffucoder.training.data import PackedSFTRows

    fmt = variant.get("sft.synthetic_prompt_format", "default")
    system = None if variant.get("sft.system_prompt") == "null" else "You are a helpful assistant."
    recs = [parse_record(to_sft_record(t, prompt_format=fmt)) for t in generate_tasks(2000, "train", 0, ("easy",))]
    exs = encode_examples(recs, tok, system_prompt=system)
    R = int(variant["sft.max_length"])
    A = int(variant.get("sft.pack_answer_length", 1 + max(len(e.answer_ids) for e in exs)))
    exs = [e for e in exs if segment_length(e, A) <= R]
    data = PackedSFTRows(exs, R, tok.pad_token_id, "flexible", A, 0)
    return max(1, round(examples_per_step * len(data) / len(exs)))


@torch.no_grad()
def canvas_metrics(model_dir: Path, variant: dict[str, Any], n_tasks: int, seed: int = 1) -> dict[str, float]:
    """Answer / pad CE on the generation canvas of held-out test-split easy tasks (see the module docstring)."""
    from diffucoder.data.sft import encode_examples, parse_record
    from diffucoder.model import DreamModel
    from diffucoder.tasks import generate_tasks, to_sft_record
    from diffucoder.tokenizer import load_tokenizer

    model = DreamModel.from_pretrained(model_dir, torch_dtype=torch.float32).eval()
    tok = load_tokenizer(model_dir)
    fmt = variant.get("sft.synthetic_prompt_format", "default")
    system = None if variant.get("sft.system_prompt") == "null" else "You are a helpful assistant."
    recs = [parse_record(to_sft_record(t, prompt_format=fmt)) for t in generate_tasks(n_tasks, "test", seed,
                                                                                         ("easy",))]
    exs = [e for e in encode_examples(recs, tok, system_prompt=system) if len(e.answer_ids) < CANVAS]
    sums = {"answer_ce": 0.0, "answer_n": 0, "pad_ce": 0.0, "pad_n": 0, "answer_hit1": 0, "answer_n1": 0,
            "pad_hit1": 0, "pad_n1": 0}
    levels = [i / 10 for i in range(1, 11)]
    for i, e in enumerate(exs):
        P = len(e.prompt_ids)
        x0 = torch.tensor(e.prompt_ids + e.answer_ids + [tok.pad_token_id] * (CANVAS - len(e.answer_ids)))
        is_answer = torch.zeros(len(x0), dtype=torch.bool)
        is_answer[P:P + len(e.answer_ids)] = True
        is_pad = torch.zeros(len(x0), dtype=torch.bool)
        is_pad[P + len(e.answer_ids):] = True
        u = torch.rand(CANVAS, generator=torch.Generator().manual_seed(1000 + i))
        xs, masks = [], []
        for t in levels:
            m = torch.zeros(len(x0), dtype=torch.bool)
            m[P:] = u < t if t < 1 else torch.ones(CANVAS, dtype=torch.bool)
            xs.append(torch.where(m, torch.full_like(x0, model.config.mask_token_id), x0))
            masks.append(m)
        logits = model.token_logits(torch.stack(xs))  # (T, L, V)
        logp = torch.log_softmax(logits.float(), -1)
        ce = -logp.gather(-1, x0.expand(len(levels), -1)[..., None])[..., 0]  # (T, L)
        hit = logits.argmax(-1) == x0  # (T, L)
        for j, m in enumerate(masks):
            sums["answer_ce"] += float(ce[j][m & is_answer].sum())
            sums["answer_n"] += int((m & is_answer).sum())
            sums["pad_ce"] += float(ce[j][m & is_pad].sum())
            sums["pad_n"] += int((m & is_pad).sum())
        sums["answer_hit1"] += int(hit[-1][is_answer].sum())
        sums["answer_n1"] += int(is_answer.sum())
        sums["pad_hit1"] += int(hit[-1][is_pad].sum())
        sums["pad_n1"] += int(is_pad.sum())
    return {"tasks": len(exs), "answer_ce": sums["answer_ce"] / max(1, sums["answer_n"]),
            "pad_ce": sums["pad_ce"] / max(1, sums["pad_n"]),
            "answer_acc_t1": sums["answer_hit1"] / max(1, sums["answer_n1"]),
            "pad_acc_t1": sums["pad_hit1"] / max(1, sums["pad_n1"])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--init", required=True, help="pretrained model folder (with its tokenizer)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--examples-per-step", type=int, default=16)
    ap.add_argument("--tasks", type=int, default=25000, help="synthetic SFT tasks (the demo's 25,000)")
    ap.add_argument("--canvas-tasks", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    if not (Path(args.init) / "config.json").is_file():
        raise SystemExit(f"error: --init {args.init}: not a model folder (no config.json)")

    from diffucoder.tokenizer import load_tokenizer
    from diffucoder.training import load_config, train

    torch.set_num_threads(args.threads)
    tok = load_tokenizer(args.init)
    args.out.mkdir(parents=True, exist_ok=True)
    summary_path = args.out / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    for name in args.variants:
        variant = VARIANTS[name]
        rows = rows_per_step(tok, variant, args.examples_per_step)
        run = args.out / name
        cfg = load_config(None, sft_overrides(args.init, run, args.steps, args.tasks, rows, args.threads, variant))
        res = train(cfg)
        metrics = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        losses = [m for m in metrics if "loss" in m]
        evals = [{"step": m["step"], "masked_ce": m["eval/masked_ce"]} for m in metrics if "eval/masked_ce" in m]
        end = [m for m in metrics if m.get("event") == "end"]
        summary[name] = {
            "overrides": variant, "rows_per_step": rows, "steps": res.steps,
            "examples_seen": res.examples_seen, "train_seconds": end[-1]["train_s"] if end else math.nan,
            "heldout_masked_ce": res.eval.get("masked_ce"), "heldout_history": evals,
            "examples_per_s": res.examples_seen / end[-1]["train_s"] if end else math.nan,
            "last_train_loss": losses[-1]["loss"] if losses else math.nan,
            "canvas": canvas_metrics(res.final_path, variant, args.canvas_tasks),
        }
        tmp = summary_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(summary, indent=2))
        tmp.replace(summary_path)
        print(json.dumps({name: summary[name]}, indent=2), flush=True)
    print("\n| variant | rows/step | examples seen | train s | examples/s | held-out masked CE | canvas answer CE | "
          "canvas pad CE | answer acc t=1 | pad acc t=1 |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, s in summary.items():
        c = s["canvas"]
        print(f"| {name} | {s['rows_per_step']} | {s['examples_seen']} | {s['train_seconds']:.0f} | "
              f"{s['examples_per_s']:.1f} | {s['heldout_masked_ce']:.3f} | {c['answer_ce']:.3f} | "
              f"{c['pad_ce']:.3f} | {c['answer_acc_t1']:.1%} | {c['pad_acc_t1']:.1%} |")


if __name__ == "__main__":
    main()
