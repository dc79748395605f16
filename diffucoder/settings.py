"""Typed settings from YAML and ``key=value`` overrides, for every config family (training, GRPO, demo budgets).

A settings class is a dataclass with a docstring under each field. :func:`load_settings` reads a YAML mapping
(the safe loader: nothing is executed), applies dotted overrides (``optim.lr=1e-3``; values read as YAML),
checks every value against its annotation (``int``, ``float``, ``Literal[...]``, unions, lists, nested
dataclasses) and rejects unknown keys with the valid ones (and the closest match). Errors say where the bad
value came from: ``configs/x.yaml: optim.lr: expected a number, got 'abc'`` for the file, ``... (from the
override optim.lr=abc)`` for the command line.

    cfg = load_settings(TrainConfig, "configs/pretrain_tiny_cpu.yaml", ["optim.steps=10"], error=ConfigError)
    for key, default, doc in describe_keys(TrainConfig): ...     # what --list-keys prints

A class's own ``validate()`` reports a bad combination through :func:`need` with the keys involved, so those
errors are attributed the same way.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import types
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

from diffucoder.errors import InputError

T = TypeVar("T")


class SettingsError(InputError):
    """A settings value (or combination) that is not valid; ``keys`` are the dotted keys involved."""

    def __init__(self, message: str, keys: Iterable[str] = ()) -> None:
        super().__init__(message)
        self.keys = tuple(k for k in keys if k)


def need(cond: bool, message: str, *keys: str, error: type[SettingsError] = SettingsError) -> None:
    """Raise ``error(message, keys)`` unless ``cond`` (for ``validate()`` methods)."""
    if not cond:
        raise error(message, keys)


def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each field of a dataclass (read from its source), for help and errors."""
    import inspect
    import textwrap

    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError):
        return {}
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs = {}
    for a, b in zip(body, body[1:]):
        if isinstance(a, ast.AnnAssign) and isinstance(a.target, ast.Name) and isinstance(b, ast.Expr) \
                and isinstance(b.value, ast.Constant) and isinstance(b.value.value, str):
            docs[a.target.id] = " ".join(b.value.value.split())
    return docs


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return None


def describe_keys(cls: type, prefix: str = "") -> list[tuple[str, Any, str]]:
    """``(dotted key, default, documentation)`` for every leaf field of a (nested) settings dataclass."""
    out: list[tuple[str, Any, str]] = []
    docs = field_docs(cls)
    for f in dataclasses.fields(cls):
        default = _default(f)
        if dataclasses.is_dataclass(default):
            out.extend(describe_keys(type(default), f"{prefix}{f.name}."))
        else:
            out.append((f"{prefix}{f.name}", default, docs.get(f.name, "")))
    return out


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def check_value(value: Any, tp: Any, where: str, error: type[SettingsError] = SettingsError) -> Any:
    """``value`` checked against (and, for numbers and tuples, converted to) the annotation ``tp``; an ``error``
    naming the dotted key ``where`` otherwise."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        errors = []
        for arg in get_args(tp):
            if arg is type(None):
                if value is None:
                    return None
                continue
            try:
                return check_value(value, arg, where, error)
            except SettingsError as e:
                errors.append(str(e))
        if value is None or len(errors) == 1:
            raise error(errors[0] if errors else f"{where}: None is not allowed", [where])
        names = " or ".join(_type_name(a) for a in get_args(tp))
        raise error(f"{where}: expected {names}, got {value!r}", [where])
    if origin is Literal:
        if value not in get_args(tp):
            raise error(f"{where}: {value!r} is not one of {list(get_args(tp))}", [where])
        return value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise error(f"{where}: expected a list, got {value!r}", [where])
        (arg,) = get_args(tp) or (Any,)
        return [check_value(v, arg, f"{where}[{i}]", error) for i, v in enumerate(value)]
    if origin is tuple:  # tuple[X, ...]: a list, a tuple, "a,b,c" or a single value from a command line
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        elif isinstance(value, (int, float)):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise error(f"{where}: expected a list, got {value!r}", [where])
        (arg, *_) = get_args(tp) or (Any,)
        return tuple(check_value(v, arg, f"{where}[{i}]", error) for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise error(f"{where}: expected a mapping, got {value!r}", [where])
        return dict(value)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where, error)
    if tp is bool:
        if not isinstance(value, bool):
            raise error(f"{where}: expected true/false, got {value!r}", [where])
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise error(f"{where}: expected an integer, got {value!r}", [where])
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise error(f"{where}: expected a number, got {value!r}", [where])
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise error(f"{where}: expected a string, got {value!r}", [where])
        return value
    return value


def _type_name(tp: Any) -> str:
    return {int: "an integer", float: "a number", str: "a string", bool: "true/false",
            type(None): "null"}.get(tp, str(tp))


def from_dict(cls: type[T], data: Any, where: str = "", error: type[SettingsError] = SettingsError) -> T:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys (naming the closest valid one)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise error(f"{where or 'config'}: expected a mapping, got {data!r}", [where])
    hints = get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        close = difflib.get_close_matches(str(unknown[0]), names, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        section = f" in {where}" if where else ""
        raise error(f"unknown key(s) {[_join(where, str(k)) for k in unknown]}{section}{hint}; valid keys: {names}",
                    [_join(where, str(k)) for k in unknown])
    kwargs = {k: check_value(v, hints[k], _join(where, k), error) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except SettingsError as e:
        if isinstance(e, error):
            raise
        raise error(str(e), e.keys) from None
    except TypeError as e:
        raise error(f"{where or 'config'}: {e}", [where]) from None


def parse_value(text: str) -> Any:
    """A command-line value read as YAML (``3`` -> 3, ``false`` -> False, empty -> None), or the text itself
    when it is not valid YAML."""
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(data: dict[str, Any], overrides: Iterable[str], error: type[SettingsError] = SettingsError,
                    record: dict[str, str] | None = None) -> dict[str, Any]:
    """Apply ``a.b=value`` overrides (YAML-parsed values) to a nested mapping, in place; returns it. ``record``
    collects ``{dotted key: the override as typed}`` (for error messages)."""
    for item in overrides:
        if "=" not in item:
            raise error(f"override {item!r} must look like key=value (e.g. {item.strip() or 'key'}=VALUE)", [])
        key, value = item.split("=", 1)
        key = key.strip()
        if not key:
            raise error(f"override {item!r} has no key before '='", [])
        parts = key.split(".")
        node = data
        for i, p in enumerate(parts[:-1]):
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise error(f"override {item!r}: {'.'.join(parts[:i + 1])} is not a section", [key])
        node[parts[-1]] = parse_value(value)
        if record is not None:
            record[key] = item
    return data


def attribute(e: SettingsError, source: str | Path | None, overrides: dict[str, str]) -> str:
    """The message of ``e`` saying where the bad value came from: an override (named as typed) or the file."""

    def related(a: str, b: str) -> bool:
        a, b = a.split("[")[0], b.split("[")[0]
        return a == b or a.startswith(b + ".") or b.startswith(a + ".")

    hits = [item for k, item in overrides.items() if any(related(k, key) for key in e.keys)]
    if hits:
        return f"{e} (from the override{'s' if len(hits) > 1 else ''} {', '.join(hits)})"
    if source is not None:
        return f"{source}: {e}"
    return str(e)


def load_settings(cls: type[T], path: str | Path | None = None, overrides: Iterable[str] = (),
                  error: type[SettingsError] = SettingsError) -> T:
    """``cls`` from a YAML file (or its defaults when ``path`` is None) and ``key=value`` overrides; an
    ``error`` that says whether the file or an override holds the bad value."""
    from diffucoder.yaml_io import read_yaml_mapping

    data: dict[str, Any] = read_yaml_mapping(path, error) if path is not None else {}
    record: dict[str, str] = {}
    apply_overrides(data, overrides, error, record)
    try:
        return from_dict(cls, data, "", error)
    except SettingsError as e:
        raise error(attribute(e, path, record), e.keys) from None


def to_plain(obj: Any) -> Any:
    """A dataclass (or nested values) as plain YAML/JSON-able data (tuples become lists)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    return obj


__all__ = ["SettingsError", "apply_overrides", "attribute", "check_value", "describe_keys", "field_docs",
           "from_dict", "load_settings", "need", "parse_value", "to_plain"]
