"""``diffucoder tokenizer train|encode``: train a byte-level BPE with the diffusion special tokens, or inspect one."""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    from diffucoder.cli.common import positive_int

    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    t = sub.add_parser("train", help="train a byte-level BPE on text/py/jsonl files (default: the stdlib corpus)")
    t.add_argument("--out", type=Path, required=True, help="output folder (tokenizer.json + configs)")
    t.add_argument("--vocab-size", type=positive_int, default=8192,
                   help="vocabulary size, at least 262 (256 bytes + the special tokens)")
    t.add_argument("--min-frequency", type=positive_int, default=2, help="merge pairs seen at least this often")
    t.add_argument("--files", nargs="*", type=Path, default=None,
                   help="UTF-8 text files to train on (default: the running Python's standard-library sources)")
    e = sub.add_parser("encode", help="show how a tokenizer splits a text")
    e.add_argument("tokenizer", type=Path, help="tokenizer.json or a folder holding it")
    e.add_argument("text", help="the text to encode")


def run(args: argparse.Namespace) -> int:
    import warnings

    from diffucoder.errors import InputError
    from diffucoder.rundir import check_run_dir
    from diffucoder.tokenizer import SPECIAL_TOKENS, load_tokenizer, train_tokenizer

    if args.action == "train":
        least = 256 + len(SPECIAL_TOKENS)
        if args.vocab_size < least:
            raise InputError(f"--vocab-size must be at least {least} (256 bytes + the special tokens), got "
                             f"{args.vocab_size}")
        check_run_dir(args.out, "--out folder")
        if args.files:
            for f in args.files:
                if not f.is_file():
                    raise InputError(f"{f}: {'is a folder, not a text file' if f.is_dir() else 'no such file'}")
            texts = []
            for f in args.files:
                data = f.read_bytes()
                text = data.decode("utf-8", errors="replace")
                if "\ufffd" in text and "\ufffd".encode() not in data:
                    warnings.warn(f"{f}: not UTF-8 text; its invalid bytes were replaced by U+FFFD")
                texts.append(text)
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
