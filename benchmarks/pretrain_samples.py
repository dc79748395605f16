"""How much do a pretrained model's samples look like Python? A number, against floors and a ceiling.

Takes held-out rows of a pretraining run (``RUN/data.pt``, documents the run never trained on), keeps the first
``--prefix`` tokens of each as the prompt and lets the model write the next ``--new`` tokens by diffusion
decoding. Every *complete* generated line (not the one continuing the prompt's last line, not the one cut by the
canvas end) is scored:

- ``parses``: the stripped line is a Python statement on its own (``ast.parse``; a line ending in ``:`` gets a
  ``pass`` body, ``elif``/``else``/``except``/``finally`` get their opening clause). Lines of multi-line
  brackets fail this even in real code, so the real text's rate is the ceiling to compare against.
- ``tokenizes``: Python's own tokenizer reads the line without an error token.
- ``indent4``: the line's indentation is a multiple of 4 spaces.
- ``distinct``: distinct whitespace-separated words over words, per text (low for degenerate repetition, which
  can make short lines "parse").

Scored the same way, in the same run:

- ``real``: the held-out rows' true next ``--new`` tokens (the ceiling);
- ``unigram``: tokens drawn from the training rows' unigram distribution (what a model that learned only token
  frequencies writes; the floor);
- ``shuffled``: the true continuation's tokens in a random order (Python's vocabulary without its syntax).

    python benchmarks/pretrain_samples.py runs/pretrain_5m/final --data runs/pretrain_5m/data.pt
    python benchmarks/pretrain_samples.py M --data D --n 32 --temperature 0.2 --block-length 16 --show 2
"""

from __future__ import annotations

import argparse
import ast
import io
import json
import sys
import time
import tokenize
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffucoder.data.packing import unigram_log_probs  # noqa: E402
from diffucoder.model import DreamModel  # noqa: E402
from diffucoder.sampling import diffusion_generate  # noqa: E402
from diffucoder.tokenizer import load_tokenizer  # noqa: E402

_OPENERS = {"elif": "if 1:\n pass\n", "else": "if 1:\n pass\n", "except": "try:\n pass\n",
            "finally": "try:\n pass\n"}


def line_parses(line: str) -> bool:
    """``line`` (stripped) is a Python statement on its own."""
    s = line.strip()
    if s.endswith(":"):
        s += " pass"
    head = s.split(None, 1)[0].rstrip(":") if s else ""
    s = _OPENERS.get(head, "") + s
    try:
        ast.parse(s)
        return True
    except (SyntaxError, ValueError):
        return False


def line_tokenizes(line: str) -> bool:
    try:
        toks = list(tokenize.generate_tokens(io.StringIO(line.strip() + "\n").readline))
    except (tokenize.TokenError, SyntaxError, IndentationError):
        return False
    return not any(t.type == tokenize.ERRORTOKEN for t in toks)


def complete_lines(text: str) -> list[str]:
    """The generated text's whole lines: drop the first (it continues the prompt's line) and the last (cut by
    the canvas end), and blank ones."""
    lines = text.split("\n")[1:-1]
    return [x for x in lines if x.strip()]


def score(texts: list[str]) -> dict[str, float]:
    lines = [x for t in texts for x in complete_lines(t)]
    n = max(1, len(lines))
    indent = [len(x) - len(x.lstrip(" ")) for x in lines]
    words = [t.split() for t in texts]
    distinct = sum(len(set(w)) / len(w) for w in words if w) / max(1, sum(1 for w in words if w))
    return {"lines": len(lines), "parses": sum(map(line_parses, lines)) / n,
            "tokenizes": sum(map(line_tokenizes, lines)) / n, "indent4": sum(i % 4 == 0 for i in indent) / n,
            "distinct": distinct}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path, help="checkpoint folder (config, weights, tokenizer)")
    ap.add_argument("--data", type=Path, required=True, help="the pretraining run's data.pt (its held-out rows)")
    ap.add_argument("--n", type=int, default=32, help="held-out rows (prompts)")
    ap.add_argument("--prefix", type=int, default=64, help="prompt tokens taken from each row")
    ap.add_argument("--new", type=int, default=64, help="tokens to generate")
    ap.add_argument("--steps", type=int, default=None, help="decoding steps (default: --new)")
    ap.add_argument("--alg", default="entropy", choices=["origin", "maskgit_plus", "topk_margin", "entropy"])
    ap.add_argument("--temperature", type=float, default=0.2)
    ap.add_argument("--top-p", type=float, default=0.95)
    ap.add_argument("--block-length", type=int, default=None, help="semi-autoregressive blocks")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--show", type=int, default=1, help="print this many prompt + sample pairs")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    payload = torch.load(args.data, weights_only=False)
    held, train = payload.get("heldout"), payload["train"]
    if held is None or len(held) == 0:
        sys.exit(f"{args.data} has no held-out rows (train with data.heldout_fraction > 0)")
    if args.prefix + args.new > held.shape[1]:
        sys.exit(f"--prefix + --new = {args.prefix + args.new} exceeds the rows' length {held.shape[1]}")
    rows = held[: args.n]
    model = DreamModel.from_pretrained(args.model).eval()
    tok = load_tokenizer(args.model)
    g = torch.Generator().manual_seed(args.seed)

    prompts = rows[:, : args.prefix]
    t0 = time.time()
    with torch.no_grad():
        seqs = diffusion_generate(model, prompts, attention_mask=torch.ones_like(prompts),
                                  max_new_tokens=args.new, steps=args.steps or args.new, alg=args.alg,
                                  temperature=args.temperature, top_p=args.top_p if args.temperature else None,
                                  block_length=args.block_length, generator=g, vocab_limit=tok.vocab_size)
    gen_s = time.time() - t0
    real = rows[:, args.prefix: args.prefix + args.new]
    unigram = unigram_log_probs(train, tok.vocab_size, smoothing=0.0).exp()  # the training rows' frequencies
    uni = torch.multinomial(unigram, real.numel(), replacement=True, generator=g).view_as(real)
    shuf = torch.stack([r[torch.randperm(r.numel(), generator=g)] for r in real])
    continuations = {"model": seqs[:, args.prefix:], "real": real, "unigram": uni, "shuffled": shuf}
    texts = {name: [tok.decode(r.tolist()) for r in ids] for name, ids in continuations.items()}
    # scored with the prompt's last line in front, so the first generated line is the one continuing it
    last_line = [tok.decode(p.tolist()).rsplit("\n", 1)[-1] for p in prompts]
    results = {name: score([ll + t for ll, t in zip(last_line, ts)]) for name, ts in texts.items()}
    print(f"{args.n} held-out prompts of {args.prefix} tokens, {args.new} new tokens, {args.steps or args.new} "
          f"steps, {args.alg}, T={args.temperature}, blocks={args.block_length}; generation {gen_s:.0f} s")
    print(f"{'text':>9} {'lines':>6} {'parses':>7} {'tokenizes':>9} {'indent4':>8} {'distinct':>8}")
    for name, r in results.items():
        print(f"{name:>9} {r['lines']:>6} {r['parses']:>7.1%} {r['tokenizes']:>9.1%} {r['indent4']:>8.1%} "
              f"{r['distinct']:>8.1%}")
    for i in range(min(args.show, len(prompts))):
        print(f"\n--- prompt {i} (last 200 chars) ---\n{tok.decode(prompts[i].tolist())[-200:]}")
        print(f"--- model ---\n{texts['model'][i]}\n--- real ---\n{texts['real'][i]}")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "results": results,
                                         "generation_s": gen_s}, indent=2))


if __name__ == "__main__":
    main()
