"""Reading YAML config files: the safe loader (nothing is executed), a mapping at the top, clear errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def read_yaml_mapping(path: str | Path, error: type[Exception] = ValueError) -> dict[str, Any]:
    """The top-level mapping of a YAML file; ``error`` (the caller's config error type) names the file.

    A missing file, a folder, a file that is not UTF-8 or not YAML, or a top level that is not a mapping are all
    an ``error`` whose message starts with the path."""
    import yaml

    from diffucoder.errors import InputError, read_text

    path = Path(path)
    try:
        text = read_text(path, "config file")
    except InputError as e:
        raise error(str(e)) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise error(f"{path}: not valid YAML ({' '.join(str(e).split())})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise error(f"{path}: the top level must be a mapping of keys to values, got a {type(data).__name__}")
    return data
