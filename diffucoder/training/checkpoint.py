"""Training checkpoints: one atomic folder per save, the newest N kept, resumed exactly.

``RUN/checkpoints/step_00000100/`` holds the model in the Hugging Face layout (``config.json``,
``model.safetensors``: loadable by ``DreamModel.from_pretrained`` and ``diffucoder generate``) and
``trainer_state.pt`` (optimizer, LR scheduler, step, tokens seen, the config it was written under). The folder is
written through :func:`diffucoder.model.atomic_directory`, so a SIGKILL mid-save leaves either the previous
checkpoint or the new one, never a torn one. The data order and the noise are functions of ``(seed, step)``
(see ``training/data.py``), so the step is all the RNG state a resume needs.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from diffucoder.model import DreamModel, atomic_directory
from diffucoder.model.checkpoint import write_pretrained

CHECKPOINTS = "checkpoints"
TRAINER_STATE = "trainer_state.pt"
_STEP_DIR = re.compile(r"^step_(\d{8})$")


@dataclass
class LoadedCheckpoint:
    path: Path
    step: int
    model_state: dict[str, torch.Tensor]
    trainer_state: dict[str, Any]


def checkpoint_path(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / CHECKPOINTS / f"step_{step:08d}"


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints of a run, oldest first (temporary folders of interrupted saves are ignored)."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    out = []
    for p in root.iterdir():
        m = _STEP_DIR.match(p.name)
        if m and p.is_dir() and (p / TRAINER_STATE).is_file():
            out.append((int(m.group(1)), p))
    return sorted(out)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    ckpts = list_checkpoints(run_dir)
    return ckpts[-1][1] if ckpts else None


def save_checkpoint(run_dir: str | Path, step: int, model: DreamModel, trainer_state: dict[str, Any],
                    keep_last: int) -> Path:
    """Write model + trainer state atomically, then delete all but the newest ``keep_last`` checkpoints."""
    from diffucoder.errors import DiskFullError, disk_full_error

    path = checkpoint_path(run_dir, step)
    try:
        with atomic_directory(path) as tmp:
            write_pretrained(model, tmp)
            torch.save({**trainer_state, "step": step}, tmp / TRAINER_STATE)
            (tmp / "trainer_state.json").write_text(json.dumps(
                {k: v for k, v in trainer_state.items() if isinstance(v, (int, float, str, bool))} | {"step": step},
                indent=2, sort_keys=True) + "\n")
    except DiskFullError:
        last = latest_checkpoint(run_dir)
        kept = (f"the checkpoint of step {step} was not written; the last complete one, {last}, is intact and "
                f"the same command resumes from it once there is room" if last is not None else
                f"the checkpoint of step {step} was not written")
        raise disk_full_error(path.parent, kept) from None
    for _, old in list_checkpoints(run_dir)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    # leftovers of saves killed mid-way
    for tmp_dir in (Path(run_dir) / CHECKPOINTS).glob(".step_*.tmp-*"):
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return path


def load_checkpoint(path: str | Path) -> LoadedCheckpoint:
    """Read a checkpoint folder written by :func:`save_checkpoint` (weights in fp32)."""
    path = Path(path)
    state_file = path / TRAINER_STATE
    if not state_file.is_file():
        raise FileNotFoundError(f"{path}: not a training checkpoint ({TRAINER_STATE} missing)")
    trainer_state = torch.load(state_file, map_location="cpu", weights_only=False)
    model = DreamModel.from_pretrained(path, torch_dtype=torch.float32)
    return LoadedCheckpoint(path, int(trainer_state["step"]), model.state_dict(), trainer_state)
