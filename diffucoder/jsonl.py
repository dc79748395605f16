"""One reader for the jsonl files every part of the package takes (corpora, SFT data, tasks, eval datasets)."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def iter_jsonl(path: str | Path, what: str = "jsonl file") -> Iterator[tuple[str, Any]]:
    """Yield ``("PATH:LINE", row)`` for every non-blank line of ``path`` (gzip when it ends in ``.gz``).

    A missing file is a ``FileNotFoundError`` naming ``what``; a line that is not JSON a ``ValueError`` naming
    the file and line. The ``"PATH:LINE"`` string is there for the caller's own errors about a row."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {what} not found")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
            yield f"{path}:{lineno}", row
