"""Reading YAML config files: the safe loader (nothing is executed), a mapping at the top, clear errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def read_yaml_mapping(path: str | Path, error: type[Exception] = ValueError) -> dict[str, Any]:
    """The top-level mapping of a YAML file; ``error`` (the caller's config error type) names the file."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise error(f"{path}: not valid YAML ({e})") from None
    if not isinstance(data, dict):
        raise error(f"{path}: the top level must be a mapping, got {type(data).__name__}")
    return data
