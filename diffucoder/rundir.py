"""The rules for running a command into a folder that already holds a run (``train``, ``rl``, ``demo``).

1. Nothing is written into the folder before the command is known to be valid (config, inputs, resume target):
   a command that fails leaves the old run exactly as it was.
2. A run folder remembers the settings it was made with. Running into it again with other settings is refused
   with the changed keys named (old -> new), unless the caller allows it explicitly (``--allow-config-change``);
   an allowed change is logged in ``config_changes.jsonl`` beside the run. Settings that cannot change the result
   (logging, thread counts, how often to save...) are listed per command as ``operational`` and never count.
3. A resume says so: ``resuming from step N (checkpoint)``.

    changes = config_changes(saved, new, ignore=TRAIN_OPERATIONAL)
    check_changes(changes, run_dir, saved_file, allow=args.allow_config_change)   # ConfigChangedError, or logs
"""

from __future__ import annotations

import fnmatch
import json
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diffucoder.errors import InputError

ALLOW_FLAG = "--allow-config-change"
CHANGES_LOG = "config_changes.jsonl"


class ConfigChangedError(InputError):
    """A run folder holds a run made with other settings; ``changes`` lists them."""

    def __init__(self, message: str, changes: list["Change"]) -> None:
        super().__init__(message)
        self.changes = changes


@dataclass(frozen=True)
class Change:
    """One setting that differs between the saved run and the new command."""

    key: str
    old: Any
    new: Any

    def __str__(self) -> str:
        return f"{self.key}: {_short(self.old)} -> {_short(self.new)}"


_MISSING = "<unset>"


def _short(v: Any) -> str:
    text = json.dumps(v, default=str) if not isinstance(v, str) or v == _MISSING else repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"optim": {"lr": 1}}`` -> ``{"optim.lr": 1}`` (lists and tuples are values; tuples compare as lists)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v and all(isinstance(x, str) for x in v):
            out.update(flatten(v, key + "."))
        else:
            out[key] = json.loads(json.dumps(v, default=str))  # tuples -> lists, paths -> strings
    return out


def config_changes(old: Mapping[str, Any], new: Mapping[str, Any], ignore: Iterable[str] = (),
                   defaults: Mapping[str, Any] | None = None) -> list[Change]:
    """The keys whose values differ (dotted, sorted), leaving out those matching a glob in ``ignore``. With
    ``defaults`` (the settings class's defaults), a key the saved settings lack (written by an older version)
    counts only when the new value is not its default."""
    a, b = flatten(old), flatten(new)
    d = flatten(defaults) if defaults is not None else {}
    patterns = list(ignore)
    out = []
    for key in sorted(set(a) | set(b)):
        if any(fnmatch.fnmatchcase(key, p) for p in patterns):
            continue
        va, vb = a.get(key, _MISSING), b.get(key, _MISSING)
        if va == _MISSING and key in d and d[key] == vb:
            continue
        if va != vb:
            out.append(Change(key, va, vb))
    return out


def check_changes(changes: list[Change], run_dir: str | Path, saved_file: str | Path, *, allow: bool,
                  what: str = "run", allow_hint: str = ALLOW_FLAG, fixed: Iterable[str] = (),
                  error: type[Exception] | None = None) -> None:
    """Refuse ``changes`` with a :class:`ConfigChangedError` naming them, unless ``allow``. Keys matching
    ``fixed`` (globs) are refused even then: they cannot take effect on a resume (the message says why).
    ``error``: the caller's config error class, mixed in so ``except ConfigError`` catches the refusal too."""
    if not changes:
        return
    cls: type[ConfigChangedError] = ConfigChangedError
    if error is not None and not issubclass(ConfigChangedError, error):
        cls = type(f"{error.__name__}Changed", (ConfigChangedError, error), {"__init__": ConfigChangedError.__init__,
                                                                            "__module__": __name__})
    listed = "; ".join(str(c) for c in changes[:12]) + (f"; and {len(changes) - 12} more" if len(changes) > 12 else "")
    stuck = [c for c in changes if any(fnmatch.fnmatchcase(c.key, p) for p in fixed)]
    if stuck:
        raise cls(
            f"{run_dir}: cannot continue this {what} with {', '.join(c.key for c in stuck)} changed "
            f"({'; '.join(str(c) for c in stuck)}): the saved {what} was built with the old value(s) "
            f"({saved_file}); use another folder", changes)
    if not allow:
        raise cls(
            f"{run_dir} holds a {what} made with other settings ({saved_file}): {listed}. Continuing would mix "
            f"two configs; use another folder, or pass {allow_hint} to continue under the new settings (the "
            f"change is logged in {Path(run_dir) / CHANGES_LOG})", changes)


def log_changes(run_dir: str | Path, changes: list[Change], at: str) -> None:
    """Append an accepted change to ``run_dir/config_changes.jsonl`` and say it on stderr."""
    if not changes:
        return
    row = {"time": time.time(), "at": at, "changes": {c.key: {"old": c.old, "new": c.new} for c in changes}}
    with open(Path(run_dir) / CHANGES_LOG, "a", encoding="utf-8") as f:
        f.write(json.dumps(row, default=str) + "\n")
    note(f"continuing {run_dir} under changed settings ({at}): " + "; ".join(str(c) for c in changes))


def check_run_dir(path: str | Path, what: str = "run folder") -> Path:
    """``path`` as a folder we may write into: an :class:`InputError` when it exists as a file."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise InputError(f"{p}: exists and is not a folder (the {what} must be a folder)")
    return p


def read_saved(path: str | Path) -> dict[str, Any] | None:
    """The settings saved as YAML or JSON at ``path`` (None when absent); unreadable is an InputError."""
    p = Path(path)
    if not p.is_file():
        return None
    try:
        if p.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(p.read_text())
        else:
            data = json.loads(p.read_text())
    except Exception as e:  # a torn or hand-edited file
        raise InputError(f"{p}: cannot read the saved settings of this run ({e}); fix or remove it") from None
    if not isinstance(data, dict):
        raise InputError(f"{p}: the saved settings of this run are not a mapping; fix or remove it")
    return data


def note(message: str) -> None:
    """A progress note for the user (stderr, so stdout stays machine-readable)."""
    print(message, file=sys.stderr, flush=True)


__all__ = ["ALLOW_FLAG", "CHANGES_LOG", "Change", "ConfigChangedError", "check_changes", "check_run_dir",
           "config_changes", "flatten", "log_changes", "note", "read_saved"]
