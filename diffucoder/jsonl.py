"""One reader for the jsonl files every part of the package takes (corpora, SFT data, tasks, eval datasets)."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def iter_jsonl(path: str | Path, what: str = "jsonl file") -> Iterator[tuple[str, Any]]:
    """Yield ``("PATH:LINE", row)`` for every non-blank line of ``path`` (gzip when it ends in ``.gz``).

    A missing file is a ``MissingFileError`` (a ``FileNotFoundError``) naming ``what``; a folder, a line that is
    not JSON or not UTF-8, or a ``.gz`` that is not gzip an ``InputError`` (a ``ValueError``) naming the file and
    line. The ``"PATH:LINE"`` string is there for the caller's own errors about a row."""
    from diffucoder.errors import InputError, MissingFileError

    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a folder, expected a {what}")
    if not path.is_file():
        raise MissingFileError(f"{path}: {what} not found")
    opener = gzip.open if path.suffix == ".gz" else open
    lineno = 0
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise InputError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
                yield f"{path}:{lineno}", row
    except UnicodeDecodeError:
        raise InputError(f"{path}:{lineno + 1}: not UTF-8 text") from None
    except (gzip.BadGzipFile, EOFError) as e:
        raise InputError(f"{path}: not a readable gzip file ({e}); a name ending in .gz must be gzip") from None
