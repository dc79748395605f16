"""Text corpora for pretraining: read documents, split off a held-out set, tokenise, pack fixed-length rows.

Documents are concatenated with an end-of-text token between them and cut into rows of ``seq_len`` tokens (the
usual LM packing; the trailing partial row is dropped). The held-out split is decided per document by a hash
of its content, so it does not depend on the order or on the other documents.

    texts = load_texts(["stdlib"], extra_texts=solutions)
    train_docs, heldout_docs = split_heldout(texts, 0.01)
    rows = pack_documents(tok.encode_batch(train_docs), seq_len=256, separator_id=tok.eos_token_id)  # (N, L)
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch

from diffucoder.errors import InputError, MissingFileError
from diffucoder.jsonl import iter_jsonl


def load_texts(sources: Sequence[str], extra_texts: Sequence[str] = (), max_documents: int | None = None,
               stdlib_exclude: Sequence[str] = ()) -> list[str]:
    """Read documents from the configured sources, in order.

    A source is "stdlib" (the embedded standard library, :mod:`diffucoder.data.corpus`), a folder (its ``*.py``
    files, sorted), a ``.jsonl`` file (one document per line in a ``"text"`` field) or any other text file
    (one document). ``extra_texts`` are appended as they are. ``stdlib_exclude``: glob patterns of
    standard-library paths to skip (relative, e.g. ``"encodings/*"``: codec tables, ``"pydoc_data/*"``: prose).
    """
    import fnmatch

    texts: list[str] = []
    for src in sources:
        if max_documents is not None and len(texts) >= max_documents:
            break
        if src == "stdlib":
            from diffucoder.data.corpus import read_source, stdlib_files, stdlib_root

            root = stdlib_root()
            for path in stdlib_files(root):
                if max_documents is not None and len(texts) >= max_documents:
                    break
                rel = path.relative_to(root).as_posix()
                if any(fnmatch.fnmatch(rel, pat) for pat in stdlib_exclude):
                    continue
                texts.append(read_source(path))
            continue
        p = Path(src)
        if p.is_dir():
            files = sorted(p.rglob("*.py"))
            if not files:
                raise InputError(f"{p}: corpus folder holds no .py files")
            texts.extend(f.read_bytes().decode("utf-8", errors="replace") for f in files)
        elif p.is_file() and p.suffix == ".jsonl":
            for where, row in iter_jsonl(p, "text corpus"):
                if not isinstance(row, dict) or not isinstance(row.get("text"), str):
                    raise InputError(f"{where}: a text corpus line needs a string field 'text'")
                texts.append(row["text"])
        elif p.is_file():
            texts.append(p.read_bytes().decode("utf-8", errors="replace"))
        else:
            raise MissingFileError(f"corpus source {src!r}: not 'stdlib', a folder, a .jsonl or a text file")
    texts.extend(extra_texts)
    texts = [t for t in texts if t.strip()]
    if max_documents is not None:
        texts = texts[:max_documents]
    if not texts:
        raise InputError(f"the corpus {list(sources)} (+{len(extra_texts)} extra texts) holds no documents")
    return texts


def is_heldout(text: str, fraction: float) -> bool:
    """Deterministic per-document choice: the first 8 bytes of sha256(text) as a number in [0, 1)."""
    if fraction <= 0:
        return False
    h = int.from_bytes(hashlib.sha256(text.encode("utf-8", errors="replace")).digest()[:8], "big")
    return h / 2**64 < fraction


def split_heldout(texts: Sequence[str], fraction: float) -> tuple[list[str], list[str]]:
    """(train, heldout) documents; with a positive fraction at least one document is held out."""
    train, held = [], []
    for t in texts:
        (held if is_heldout(t, fraction) else train).append(t)
    if fraction > 0 and not held and len(train) > 1:
        held.append(train.pop())
    if not train:
        raise InputError("no training documents left after the held-out split (lower data.heldout_fraction)")
    return train, held


def pack_documents(token_lists: Iterable[Sequence[int]], seq_len: int, separator_id: int | None) -> torch.Tensor:
    """Concatenate documents (each followed by ``separator_id`` when given) and cut rows of ``seq_len`` (N, L).

    The trailing partial row is dropped; an error names the problem when not one row fits.
    """
    flat: list[int] = []
    for ids in token_lists:
        flat.extend(ids)
        if separator_id is not None:
            flat.append(separator_id)
    n = len(flat) // seq_len
    if n == 0:
        raise InputError(f"the corpus has {len(flat)} tokens, fewer than one row of seq_len={seq_len}")
    return torch.tensor(flat[: n * seq_len], dtype=torch.long).view(n, seq_len)  # (N, L)


def unigram_log_probs(rows: torch.Tensor, vocab_size: int, smoothing: float = 1.0) -> torch.Tensor:
    """Log-probabilities of the add-``smoothing`` unigram model estimated from token rows (V,).

    The masked-token loss of this model (``-logp[x0]`` averaged over masked positions) is the baseline a
    trained model must beat: it knows the token frequencies and nothing of the context.
    """
    counts = torch.bincount(rows.reshape(-1), minlength=vocab_size).double() + smoothing  # (V,)
    return (counts / counts.sum()).log().float()
