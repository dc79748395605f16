"""``diffucoder generate``: diffusion decoding from a prompt, optionally watching the canvas unmask live.

    diffucoder generate --model runs/sft --prompt "Write a function add(a, b)." --chat --show

``--show`` redraws the canvas after every step in the terminal (rich): prompt dim, [MASK]s as shaded blocks,
the tokens revealed by the latest step highlighted. The final completion (cut at end-of-text / pad) is printed
at the end, with timing on stderr.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

MASK_SYMBOL = "\u2591"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from diffucoder.cli.common import (add_fast_decoding_args, add_runtime_args, nonneg_float, nonneg_int,
                                       positive_int, unit_float)

    p.add_argument("--model", required=True, type=Path, help="checkpoint folder (config, weights, tokenizer)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", help="prompt text")
    src.add_argument("--prompt-file", type=Path, help="read the prompt from a UTF-8 file ('-' for stdin)")
    p.add_argument("--chat", action="store_true", help="wrap the prompt as a user turn of the chat template")
    p.add_argument("--max-new-tokens", type=positive_int, default=128, help="tokens to generate (the canvas)")
    p.add_argument("--steps", type=positive_int, default=None, help="decoding steps (default: max-new-tokens)")
    p.add_argument("--alg", default="entropy", choices=["origin", "maskgit_plus", "topk_margin", "entropy"],
                   help="unmasking order (DiffuCoder: entropy)")
    p.add_argument("--temperature", type=nonneg_float, default=0.2, help="sampling temperature (0: greedy)")
    p.add_argument("--top-p", type=unit_float, default=0.95, help="nucleus sampling mass, in (0, 1]")
    p.add_argument("--alg-temp", type=nonneg_float, default=None,
                   help="sample positions from softmax(conf/alg_temp)")
    add_fast_decoding_args(p)
    p.add_argument("--eos-penalty", type=nonneg_float, default=0.0,
                   help="subtract from the confidence of end-of-text / pad tokens (against EOS flooding)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampling generator")
    p.add_argument("--num-samples", type=positive_int, default=1, help="completions to draw for the prompt")
    p.add_argument("--show", action="store_true", help="render the canvas being unmasked live")
    p.add_argument("--delay", type=nonneg_float, default=0.0, help="with --show: pause this many seconds per step")
    p.add_argument("--trace", action="store_true", help="print the per-position decode trace (step, confidence)")
    p.add_argument("--raw", action="store_true", help="print the whole canvas, not cut at end-of-text / pad")
    add_runtime_args(p)


def _canvas_text(tok, ids: list[int], prev: list[int] | None, prompt_len: int, mask_id: int):
    """A rich Text of the canvas: prompt dim, masks shaded, tokens new since ``prev`` highlighted."""
    from rich.text import Text

    text = Text()
    text.append(tok.decode(ids[:prompt_len]), style="dim")

    def state(j: int) -> str:
        if ids[j] == mask_id:
            return "mask"
        if prev is not None and prev[j] == mask_id:
            return "new"
        return "old"

    j = prompt_len
    while j < len(ids):
        s = state(j)
        k = j
        while k < len(ids) and state(k) == s:
            k += 1
        if s == "mask":
            text.append(MASK_SYMBOL * (k - j), style="grey50")
        else:
            text.append(tok.decode(ids[j:k]), style="bold black on yellow" if s == "new" else "")
        j = k
    return text


def run(args: argparse.Namespace) -> int:
    import torch

    from diffucoder.cli.common import fast_decoding_kwargs, load_model
    from diffucoder.errors import InputError, read_text
    from diffucoder.sampling import decode_completions, diffusion_generate

    if args.prompt is not None:
        prompt = args.prompt
    elif str(args.prompt_file) == "-":
        prompt = sys.stdin.read()
    else:
        prompt = read_text(args.prompt_file, "prompt file")
        if not prompt.strip():
            raise InputError(f"{args.prompt_file}: the prompt file is empty")
    if args.block_length is not None and args.max_new_tokens % args.block_length:
        raise InputError(f"--max-new-tokens ({args.max_new_tokens}) must be a multiple of --block-length "
                         f"({args.block_length})")
    model, tok, device = load_model(args.model, args.dtype, args.device, args.threads)
    text = tok.apply_chat_template([{"role": "user", "content": prompt}]) if args.chat else prompt
    ids = torch.tensor([tok.encode(text)], dtype=torch.long, device=device)
    P = ids.shape[1]
    mask_id = tok.mask_token_id

    live = None
    hook = None
    if args.show:
        from rich.console import Console
        from rich.live import Live
        from rich.panel import Panel

        console = Console(stderr=False)
        state: dict = {"prev": None}

        def show_step(step, x, logits):  # the tokens hook of diffusion_generate: redraw, change nothing
            row = x[0].tolist()
            title = "canvas" if step is None else f"step {step + 1}"
            masked = sum(1 for t in row[P:] if t == mask_id)
            live.update(Panel(_canvas_text(tok, row, state["prev"], P, mask_id),
                              title=f"{title}: {masked} masked of {len(row) - P}"))
            state["prev"] = row
            if args.delay:
                time.sleep(args.delay)
            return x

        hook = show_step
        live = Live(console=console, refresh_per_second=20, transient=False)
        live.start()
    t0 = time.perf_counter()
    try:
        out = diffusion_generate(
            model, ids, max_new_tokens=args.max_new_tokens,
            steps=args.steps if args.steps is not None else args.max_new_tokens, alg=args.alg,
            temperature=args.temperature, top_p=args.top_p, alg_temp=args.alg_temp, **fast_decoding_kwargs(args),
            stop_token_ids=tok.stop_token_ids(),
            stop_token_penalty=args.eos_penalty, num_return_sequences=args.num_samples,
            generator=torch.Generator(device=device).manual_seed(args.seed), mask_token_id=mask_id,
            vocab_limit=tok.vocab_size, generation_tokens_hook_func=hook, return_dict_in_generate=True,
            progress=not args.show and sys.stderr.isatty())
    finally:
        if live is not None:
            live.stop()
    seconds = time.perf_counter() - t0
    if args.raw:
        texts = [tok.decode(row[P:]) for row in out.sequences.tolist()]
    else:
        texts = decode_completions(tok, out.sequences, P)
    for i, t in enumerate(texts):
        if len(texts) > 1:
            print(f"--- sample {i}")
        print(t)
    if args.trace:
        print(f"{'pos':>4} {'step':>5} {'conf':>9}  token")
        for r in out.trace.positions(0):
            print(f"{r.position:>4} {r.step:>5} {r.confidence:>9.4f}  {tok.decode([r.token])!r}")
    n = out.sequences.shape[0] * args.max_new_tokens
    print(f"[{out.trace.num_forward_passes} forward passes, {n} tokens, {seconds:.2f} s, "
          f"{n / max(seconds, 1e-9):.1f} tok/s]", file=sys.stderr)
    return 0
