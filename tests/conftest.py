"""Shared fixtures: a small trained tokenizer, tiny random models, the location of ../shared data, and a loader
for the scripts under benchmarks/."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def load_benchmark(name: str) -> ModuleType:
    """benchmarks/NAME.py imported as module NAME (registered in sys.modules: dataclasses look their module up)."""
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def shared_path(*parts: str) -> Path:
    """A file under ../shared, or skip the test when it is absent (a user's fresh clone has no ../shared)."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"{p} not available")
    return p


@pytest.fixture(scope="session")
def tiny_tokenizer():
    """A 1k-id byte-level BPE trained on a slice of the standard library (about a second)."""
    from diffucoder.data.corpus import read_source, stdlib_files
    from diffucoder.tokenizer import train_tokenizer

    files = stdlib_files()[:60]
    return train_tokenizer((read_source(f) for f in files), vocab_size=1024)


@pytest.fixture
def tiny_config(tiny_tokenizer):
    from diffucoder.model import DreamConfig

    return DreamConfig.preset("tiny", tokenizer=tiny_tokenizer)


@pytest.fixture
def tiny_model(tiny_config):
    from diffucoder.model import DreamModel

    torch.manual_seed(0)
    return DreamModel(tiny_config).eval()
