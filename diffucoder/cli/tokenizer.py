"""``diffucoder tokenizer train|encode``: train a byte-level BPE with the diffusion special tokens, or inspect one."""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True)
    t = sub.add_parser("train", help="train a byte-level BPE on text/py/jsonl files (default: the stdlib corpus)")
    t.add_argument("--out", type=Path, required=True, help="output folder (tokenizer.json + configs)")
    t.add_argument("--vocab-size", type=int, default=8192)
    t.add_argument("--min-frequency", type=int, default=2)
    t.add_argument("--files", nargs="*", type=Path, default=None,
                   help="text files to train on (default: the running Python's standard-library sources)")
    e = sub.add_parser("encode", help="show how a tokenizer splits a text")
    e.add_argument("tokenizer", type=Path, help="tokenizer.json or a folder holding it")
    e.add_argument("text")


def run(args: argparse.Namespace) -> int:
    from diffucoder.tokenizer import load_tokenizer, train_tokenizer

    if args.action == "train":
        if args.files:
            missing = [f for f in args.files if not f.is_file()]
            if missing:
                raise SystemExit(f"error: files not found: {missing}")
            texts = (f.read_text(errors="replace") for f in args.files)
            what = f"{len(args.files)} files"
        else:
            from diffucoder.data.corpus import iter_stdlib_texts, stdlib_files

            texts = iter_stdlib_texts()
            what = f"standard library ({len(stdlib_files())} files)"
        t0 = time.time()
        tok = train_tokenizer(texts, vocab_size=args.vocab_size, min_frequency=args.min_frequency,
                              show_progress=True)
        tok.save_pretrained(args.out)
        print(f"trained a {tok.vocab_size}-id BPE on {what} in {time.time() - t0:.1f}s -> {args.out}")
        print("special tokens:", tok.special_tokens())
        return 0
    tok = load_tokenizer(args.tokenizer)
    ids = tok.encode(args.text)
    print(f"{len(ids)} tokens: {ids}")
    print(" | ".join(repr(tok.decode([i])) for i in ids))
    return 0
