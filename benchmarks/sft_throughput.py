"""SFT examples/s and tokens/s: unpacked vs packed rows vs packed + short prompts, side by side in one run.

Every variant runs the training loop's own SFT step (``training.data.step_rows``: rows, per-example noise; the
``DiffusionObjective`` forward with the LM head at masked positions; backward; gradient clipping; AdamW) on
the demo's data (easy synthetic tasks, chat-formatted, the demo's tokenizer recipe) and model shape (preset
"5m", fp32), from the same initial weights. The variants are interleaved step by step (a round is one step of every
variant at every thread count), so a busy moment on a shared machine slows all of them alike; the figures are
the median over rounds of each variant's per-step rates.

    python benchmarks/sft_throughput.py                              # threads 2 and 1, the default variants
    python benchmarks/sft_throughput.py --threads 1 --rounds 40 --json sft_throughput.json
    python benchmarks/sft_throughput.py --prompt-tokens-only         # only where the prompt tokens go

Columns: ``examples/s`` (SFT examples through a whole optimizer step per second: the rate that decides how
far a time budget gets), ``row tok/s`` (positions computed, padding and filler included) and ``example tok/s``
(prompt + answer + the example's own pad targets). It also prints where the prompt's tokens go (system turn,
chat framing, the task text, the format instruction) and the cost of the block-diagonal attention mask alone
(the same packed rows with the mask and without, where the model would attend across examples).
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffucoder.data.sft import SFTExample, encode_examples, parse_record, segment_length  # noqa: E402
from diffucoder.model import DreamConfig, DreamModel  # noqa: E402
from diffucoder.training.config import DiffusionSection  # noqa: E402
from diffucoder.training.data import BatchOrder, PackedSFTRows, SFTRows, step_rows  # noqa: E402
from diffucoder.training.loop import DiffusionObjective, param_groups  # noqa: E402

DEMO_SYSTEM = "You are a helpful assistant."


@dataclass(frozen=True)
class Variant:
    """One way of feeding the SFT step."""

    name: str
    packing: bool
    max_length: int  # row length (packed) or the cap of an unpacked row
    padding: str  # "flexible" / "fixed"
    prompt_format: str = "default"
    system_prompt: str | None = DEMO_SYSTEM
    answer_length: int | None = None  # packed: answer region padded to at least this (None: longest answer + 1)


def default_variants() -> list[Variant]:
    return [
        Variant("unpacked, flexible (demo)", False, 160, "flexible"),
        Variant("packed 256", True, 256, "flexible"),
        Variant("packed 256, one pad target", True, 256, "flexible", answer_length=0),
        Variant("unpacked, short prompt", False, 160, "flexible", "short", None),
        Variant("packed 160, short prompt", True, 160, "flexible", "short", None),
        Variant("packed 256, short prompt", True, 256, "flexible", "short", None),
    ]


def demo_tokenizer(folder: Path | None):
    """The demo's tokenizer recipe (stdlib files + 2,000 task texts, 4,096 tokens), cached in ``folder``."""
    from diffucoder.tokenizer import load_tokenizer

    if folder is not None and (folder / "tokenizer.json").is_file():
        return load_tokenizer(folder)
    from diffucoder.data.corpus import iter_stdlib_texts
    from diffucoder.tasks import build_prompt, format_answer, generate_tasks
    from diffucoder.tokenizer import train_tokenizer

    texts = list(itertools.islice(iter_stdlib_texts(), 734))
    texts += [build_prompt(t) + "\n" + format_answer(t) for t in generate_tasks(2000, "train", seed=0)]
    tok = train_tokenizer(texts, vocab_size=4096)
    if folder is not None:
        tok.save_pretrained(folder)
    return tok


# ------------------------------------------------------------------------------------------------------------
# where the prompt tokens go
# ------------------------------------------------------------------------------------------------------------
def prompt_token_breakdown(tok, tasks) -> dict[str, Any]:
    """Mean tokens of each part of the demo's chat prompt (attributed by character offsets), and the totals of
    the prompt formats."""
    from diffucoder.tasks import build_prompt, format_answer
    from diffucoder.tasks.formats import PROMPT_INSTRUCTION
    from diffucoder.tokenizer import IM_END_TOKEN, IM_START_TOKEN

    names = ["system turn", "user header", "task sentence", "example sentence", "Signature line",
             "format instruction", "user end + assistant header"]
    sums = dict.fromkeys(names, 0)
    totals: dict[str, list[int]] = {"default": [], "default, no system turn": [], "short, system turn": [],
                                    "short (no instruction, no system turn)": []}
    answers = []
    for t in tasks:
        q = t.question
        body, sig_sep, sig = q.partition("\nSignature:")
        sentence, ex_sep, example = body.partition(" For example,")
        pieces = [f"{IM_START_TOKEN}system\n{DEMO_SYSTEM}{IM_END_TOKEN}\n", f"{IM_START_TOKEN}user\n", sentence,
                  ex_sep + example, sig_sep + sig, "\n" + PROMPT_INSTRUCTION,
                  f"{IM_END_TOKEN}\n{IM_START_TOKEN}assistant\n"]
        full = tok.apply_chat_template([{"role": "user", "content": build_prompt(t)}], system_prompt=DEMO_SYSTEM)
        assert "".join(pieces) == full, "the chat template changed: update prompt_token_breakdown"
        ends = list(itertools.accumulate(len(p) for p in pieces))
        for start, _ in tok.backend.encode(full, add_special_tokens=False).offsets:
            part = next(i for i, e in enumerate(ends) if start < e)
            sums[names[part]] += 1
        for name, fmt, system in (("default", "default", DEMO_SYSTEM), ("default, no system turn", "default", None),
                                  ("short, system turn", "short", DEMO_SYSTEM),
                                  ("short (no instruction, no system turn)", "short", None)):
            text = tok.apply_chat_template([{"role": "user", "content": build_prompt(t, fmt)}], system_prompt=system)
            totals[name].append(len(tok.encode(text)))
        answers.append(len(tok.encode(format_answer(t))) + 1)
    n = len(tasks)
    return {"tasks": n, "parts": {k: v / n for k, v in sums.items()},
            "totals": {k: statistics.mean(v) for k, v in totals.items()},
            "answer_with_im_end": statistics.mean(answers), "answer_max": max(answers)}


def chat_tokenizer_totals(tok, tasks) -> dict[str, float]:
    """Prompt tokens when the tokenizer's 2,000 task texts are rendered with the chat template (system turn,
    headers) instead of bare: the template's words ("system", "assistant", the system prompt) get tokens."""
    from diffucoder.data.corpus import iter_stdlib_texts
    from diffucoder.tasks import build_prompt, format_answer, generate_tasks
    from diffucoder.tokenizer import train_tokenizer

    texts = list(itertools.islice(iter_stdlib_texts(), 734))
    texts += [tok.apply_chat_template([{"role": "user", "content": build_prompt(t)}]) + format_answer(t)
              for t in generate_tasks(2000, "train", seed=0)]
    chat = train_tokenizer(texts, vocab_size=4096)
    out = {}
    for name, fmt, system in (("default", "default", DEMO_SYSTEM),
                              ("short (no instruction, no system turn)", "short", None)):
        out[name] = statistics.mean(len(chat.encode(chat.apply_chat_template(
            [{"role": "user", "content": build_prompt(t, fmt)}], system_prompt=system))) for t in tasks)
    return out


# ------------------------------------------------------------------------------------------------------------
# throughput
# ------------------------------------------------------------------------------------------------------------
class Runner:
    """One variant: its dataset, its own copy of the model and optimizer, its step counter."""

    def __init__(self, v: Variant, tok, tasks, base_model: DreamModel, examples_per_step: int, seed: int) -> None:
        from diffucoder.tasks import to_sft_record

        self.v = v
        recs = [parse_record(to_sft_record(t, prompt_format=v.prompt_format)) for t in tasks]
        exs = encode_examples(recs, tok, system_prompt=v.system_prompt)
        ans = 0
        if v.packing:  # as the training loop resolves sft.pack_answer_length
            ans = v.answer_length if v.answer_length is not None else 1 + max(len(e.answer_ids) for e in exs)
        exs = [e for e in exs if segment_length(e, ans) <= v.max_length]
        if v.packing:
            self.data = PackedSFTRows(exs, v.max_length, tok.pad_token_id, v.padding, ans, seed)
            self.rows = max(1, round(examples_per_step / (len(exs) / len(self.data))))
        else:
            self.data = SFTRows(exs, v.max_length, tok.pad_token_id, v.padding)
            self.rows = examples_per_step
        self.lengths = [segment_length(e, ans) for e in exs]  # the example's own tokens
        self.prompt_len = statistics.mean(len(e.prompt_ids) for e in exs)
        self.order = BatchOrder(len(self.data), self.rows, seed)
        self.model = copy.deepcopy(base_model).train()
        self.obj = DiffusionObjective(self.model, "none").train()
        self.opt = torch.optim.AdamW(param_groups(self.model, 0.0), lr=1e-4)
        self.diff = DiffusionSection(t_sampling="stratified", loss_weighting="none")
        self.cfg = base_model.config
        self.step_i = 0
        self.pad_id = tok.pad_token_id

    def step(self, with_mask: bool = True) -> tuple[int, int, int]:
        """One optimizer step; returns (examples, row tokens, example tokens)."""
        gidx = self.order.indices(self.step_i)
        built = step_rows(self.data, gidx, list(range(len(gidx))), len(gidx), seed=0, step=self.step_i,
                          diff=self.diff, mask_token_id=self.cfg.mask_token_id, pad_token_id=self.pad_id,
                          shift=self.cfg.shift_logits)
        r = built.micro[0]
        wce, ce, nm, nk = self.obj(r.xt, r.x0, r.is_masked, r.t, r.maskable,
                                   r.attention_mask if with_mask else None, r.position_ids)
        (wce / nm.clamp_min(1)).backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.step_i += 1
        if isinstance(self.data, PackedSFTRows):
            ex_tokens = sum(self.lengths[j] for i in gidx for j in self.data.packs[i])
        else:
            ex_tokens = sum(self.lengths[i] for i in gidx)
        return built.examples, len(gidx) * built.length, ex_tokens


@dataclass
class Row:
    variant: str
    threads: int
    prompt_tokens: float
    rows_per_step: int
    examples_per_step: float
    row_length: float
    examples_per_s: float
    row_tokens_per_s: float
    example_tokens_per_s: float
    rounds: int


def timed_step(runner: Runner, with_mask: bool = True) -> tuple[float, float, float, float, float]:
    """One step: (examples/s, row tok/s, example tok/s, examples, row length)."""
    t0 = time.perf_counter()
    e, r, x = runner.step(with_mask)
    dt = time.perf_counter() - t0
    return e / dt, r / dt, x / dt, e, r / runner.rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[2, 1])
    ap.add_argument("--rounds", type=int, default=20,
                    help="timed rounds; a round is one optimizer step of every variant at every thread count")
    ap.add_argument("--examples-per-step", type=int, default=16,
                    help="unpacked rows per step; packed variants take as many rows as hold about this many")
    ap.add_argument("--tasks", type=int, default=4000, help="easy train-split tasks to draw the examples from")
    ap.add_argument("--preset", default="5m")
    ap.add_argument("--tokenizer", type=Path, default=None,
                    help="a tokenizer folder (trained here with the demo's recipe and saved there if absent)")
    ap.add_argument("--variants", nargs="+", default=None, help="names of the default variants to run")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--prompt-tokens-only", action="store_true")
    ap.add_argument("--chat-tokenizer", action="store_true",
                    help="also count the prompts with a tokenizer whose training texts are chat-rendered (the "
                         "template's words become tokens of their own)")
    args = ap.parse_args()

    from diffucoder.tasks import generate_tasks

    tok = demo_tokenizer(args.tokenizer)
    tasks = generate_tasks(args.tasks, "train", seed=0, tiers=("easy",))
    out: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}}
    for tier in ("easy", "medium", "hard"):
        b = prompt_token_breakdown(tok, tasks[:1000] if tier == "easy" else
                                   generate_tasks(1000, "train", seed=0, tiers=(tier,)))
        out[f"prompt_tokens_{tier}"] = b
        print(f"\nwhere the prompt tokens go ({tier} train tasks, {b['tasks']}; demo tokenizer):")
        total = b["totals"]["default"]
        for k, v in b["parts"].items():
            print(f"  {k:30s} {v:5.1f}  {v / total:4.0%}")
        print(f"  {'= chat prompt':30s} {total:5.1f}; answer + <|im_end|> {b['answer_with_im_end']:.1f} "
              f"(max {b['answer_max']})")
        for k, v in b["totals"].items():
            print(f"  format {k:40s} {v:5.1f} tokens ({v / total - 1:+.0%})")
    if args.chat_tokenizer:
        out["chat_tokenizer_prompt_tokens"] = chat_tokenizer_totals(tok, tasks[:1000])
        print("\nwith a tokenizer trained on chat-rendered task texts (same recipe otherwise), easy tasks:")
        for k, v in out["chat_tokenizer_prompt_tokens"].items():
            print(f"  {k:40s} {v:5.1f} tokens")
    if args.prompt_tokens_only:
        if args.json:
            args.json.write_text(json.dumps(out, indent=2))
        return

    variants = default_variants()
    if args.variants:
        unknown = [n for n in args.variants if n not in {v.name for v in variants}]
        if unknown:
            raise SystemExit(f"unknown variant(s) {unknown}; choose from {[v.name for v in variants]}")
        variants = [v for v in variants if v.name in args.variants]
    cfg = DreamConfig.preset(args.preset, vocab_size=tok.vocab_size, mask_token_id=tok.mask_token_id,
                             pad_token_id=tok.pad_token_id, shift_logits=True)
    base = DreamModel(cfg)
    runners = {v.name: Runner(v, tok, tasks, base, args.examples_per_step, 0) for v in variants}
    packed = next((r for r in runners.values() if r.v.packing), None)
    load = os.getloadavg()
    print(f"\ntorch {torch.__version__}; preset {args.preset} fp32; load average before {load[0]:.2f}")
    rates: dict[tuple[str, int], list[tuple[float, ...]]] = {(k, th): [] for th in args.threads for k in runners}
    mask_cost: dict[int, list[float]] = {th: [] for th in args.threads}
    from tqdm.auto import tqdm

    for th in args.threads:  # untimed warm-up
        torch.set_num_threads(th)
        for runner in runners.values():
            runner.step()
    for _ in tqdm(range(args.rounds), desc="rounds"):
        for th in args.threads:
            torch.set_num_threads(th)
            for name, runner in runners.items():
                rates[(name, th)].append(timed_step(runner))
            if packed is not None:  # the block-diagonal mask's own cost: same kind of rows, mask vs none
                r_mask = timed_step(packed, True)[1]
                r_none = timed_step(packed, False)[1]
                mask_cost[th].append(r_mask / r_none)
    results = []
    for (name, th), rs in rates.items():
        runner = runners[name]
        med = [statistics.median(x[i] for x in rs) for i in range(5)]
        results.append(Row(name, th, runner.prompt_len, runner.rows, med[3], med[4], med[0], med[1], med[2],
                           len(rs)))
    for th in args.threads:
        base_rate = next(r.examples_per_s for r in results if r.threads == th)
        print(f"\n{th} thread(s): median step over {args.rounds} interleaved rounds")
        print(f"| variant | prompt tok | rows/step | examples/step | row length | examples/s | vs first | "
              f"row tok/s | example tok/s |")
        print("|---|---|---|---|---|---|---|---|---|")
        for r in results:
            if r.threads == th:
                print(f"| {r.variant} | {r.prompt_tokens:.1f} | {r.rows_per_step} | {r.examples_per_step:.1f} | "
                      f"{r.row_length:.0f} | {r.examples_per_s:.1f} | {r.examples_per_s / base_rate:.2f}x | "
                      f"{r.row_tokens_per_s:.0f} | {r.example_tokens_per_s:.0f} |")
        if mask_cost[th]:
            print(f"block-diagonal mask ({packed.v.name}): row tok/s with the mask / without = "
                  f"{statistics.median(mask_cost[th]):.3f}")
    load = os.getloadavg()
    print(f"load average after {load[0]:.2f}")
    out.update(results=[asdict(r) for r in results],
               mask_cost={str(k): statistics.median(v) for k, v in mask_cost.items() if v})
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
