"""The embedded default corpus: the Python standard-library sources of the running interpreter.

Every Python installation carries ~12 MB of real, well-written Python, so training works on a fresh machine with
no data download. Test suites (``test/``, ``tests/``, ``idle_test/``, ``test_*.py``) and third-party packages
(``site-packages``) are excluded; files come in sorted order, so the corpus is deterministic for a given
interpreter version.
"""

from __future__ import annotations

import hashlib
import sysconfig
from collections.abc import Iterator
from pathlib import Path

EXCLUDED_DIRS = frozenset({"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__",
                           "test_support"})


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_files(root: str | Path | None = None) -> list[Path]:
    """Sorted ``.py`` files of the standard library, tests and site-packages excluded."""
    root = Path(root) if root is not None else stdlib_root()
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: standard-library folder not found")
    out = []
    for p in root.rglob("*.py"):
        rel = p.relative_to(root)
        if any(part in EXCLUDED_DIRS for part in rel.parts[:-1]):
            continue
        if rel.name.startswith("test_") or rel.name == "conftest.py":
            continue
        out.append(p)
    return sorted(out, key=lambda p: p.relative_to(root).as_posix())


def read_source(path: Path) -> str:
    return path.read_bytes().decode("utf-8", errors="replace")


def iter_stdlib_texts(root: str | Path | None = None) -> Iterator[str]:
    """The text of each standard-library file, in sorted order."""
    for p in stdlib_files(root):
        yield read_source(p)


def corpus_fingerprint(files: list[Path]) -> str:
    """A short hash of the file list and sizes, to record which corpus a run used."""
    h = hashlib.sha256()
    for p in files:
        h.update(p.name.encode())
        h.update(str(p.stat().st_size).encode())
    return h.hexdigest()[:16]
