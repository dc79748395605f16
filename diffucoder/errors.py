"""The project's own error types, and small readers/writers that raise them with the file named.

Every error a user can cause by what they give us (a file, a folder, a config value, an argument) or meet on
their machine (a full disk) derives from :class:`DiffucoderError`. The command line reports those as one
``error: ...`` line and exit status 2 (a traceback only with ``--debug``); any other exception is a bug and keeps
its traceback. Each subclass also derives from the built-in type callers used to catch before
(``ValueError``, ``OSError``, ``ImportError``), so ``except ValueError`` keeps working.

    from diffucoder.errors import InputError, read_text
    text = read_text(path, "prompt file")    # InputError naming the file: missing, a folder, not UTF-8, ...
"""

from __future__ import annotations

import errno
import os
from pathlib import Path


class DiffucoderError(Exception):
    """Base of the errors reported to the user as one line (not a bug in diffucoder)."""


class InputError(DiffucoderError, ValueError):
    """A file, folder or value that cannot be used as given; the message names it and says why."""


class MissingFileError(InputError, FileNotFoundError):
    """A file or folder the command needs does not exist (the message names it)."""


class DatasetError(InputError):
    """A benchmark or task file that is not what the command expects (wrong family, missing columns, bad hash)."""


class MissingDependencyError(DiffucoderError, ImportError):
    """An optional package a feature needs is not installed; the message says what to install."""


class DiskFullError(DiffucoderError, OSError):
    """No space left on the device while writing; what was complete before (a checkpoint, a file) is kept."""

    def __str__(self) -> str:
        return str(self.strerror or super().__str__())


_DISK_FULL_MARKERS = ("no space left on device", "storagefull", "disk quota exceeded", "os error 28", "code: 28,")


def is_disk_full(exc: BaseException, where: str | Path | None = None) -> bool:
    """Whether ``exc`` is an out-of-space failure: ``ENOSPC``/``EDQUOT``, safetensors' ``StorageFull``, or
    (given ``where``, a folder on the device being written) any write error raised while that device has less
    than 1 MiB free: torch's writer reports a full disk as ``PytorchStreamWriter failed writing file``,
    ``basic_ios::clear: iostream error`` or ``unexpected pos``, without the reason. Call it before cleaning up
    the partial write (which frees the space again)."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if any(m in str(e).lower() for m in _DISK_FULL_MARKERS):
            return True
        e = e.__cause__ or e.__context__
    return where is not None and isinstance(exc, (OSError, RuntimeError)) and free_bytes(where) < (1 << 20)


def free_bytes(path: str | Path) -> int:
    """Free bytes on the file system holding ``path`` (its nearest existing ancestor)."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        st = os.statvfs(p)
    except OSError:
        return 1 << 62
    return st.f_bavail * st.f_frsize


def disk_full_error(where: str | Path, kept: str = "") -> DiskFullError:
    """The :class:`DiskFullError` for a failed write under ``where`` (``kept``: what is still intact)."""
    msg = f"{where}: no space left on device"
    if kept:
        msg += f"; {kept}"
    return DiskFullError(errno.ENOSPC, msg)


def read_text(path: str | Path, what: str = "file") -> str:
    """The UTF-8 text of ``path``; an :class:`InputError` that names the file when it is missing, a folder,
    unreadable or not UTF-8."""
    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"{path}: {what} not found")
    if path.is_dir():
        raise InputError(f"{path}: is a folder, expected a {what}")
    try:
        data = path.read_bytes()
    except PermissionError:
        raise InputError(f"{path}: {what} is not readable (permission denied)") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read {what} ({e.strerror or e})") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise InputError(f"{path}: {what} is not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start}, "
                         f"line {line}); convert it, e.g. iconv -f latin1 -t utf-8") from None


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary sibling and a rename, so a crash or a full disk leaves the
    old file (or none), never a torn one; a full disk is a :class:`DiskFullError`."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        if is_disk_full(e):
            raise disk_full_error(path, "the previous version of the file is kept") from None
        raise
    return path


__all__ = ["DatasetError", "DiffucoderError", "DiskFullError", "InputError", "MissingDependencyError",
           "MissingFileError",
           "disk_full_error", "free_bytes", "is_disk_full", "read_text", "write_text_atomic"]
