"""Checkpoint folders in the Hugging Face layout, read and written without a second copy of the weights.

Layout (the same as Dream / DiffuCoder on the Hub)::

    config.json                      model_type "Dream", architectures ["DreamModel"], mask_token_id, ...
    generation_config.json           token ids and decoding defaults
    model.safetensors                or model-0000k-of-0000n.safetensors + model.safetensors.index.json
    tokenizer.json, tokenizer_config.json, special_tokens_map.json   (when a tokenizer is given)

Loading builds the model on the ``meta`` device and assigns each tensor as it is read from its shard, so peak
memory stays close to the size of the weights (no randomly initialised copy, no state-dict copy). Every problem
(missing config or weights, unsupported ``model_type``, shape mismatch, missing or unexpected tensors) raises
:class:`CheckpointError` naming the file; nothing is ever half-loaded silently.

Saving writes into a hidden sibling folder and swaps it into place only when complete (``renameat2`` with
``RENAME_EXCHANGE`` where the kernel offers it, else two renames), so a kill mid-save never leaves a
half-written folder where a good one was. Use :func:`atomic_directory` to write other files (optimizer state)
into the same atomic unit.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from diffucoder.errors import DiffucoderError, disk_full_error, is_disk_full
from diffucoder.model.config import INIT_MODEL_TYPES, SUPPORTED_MODEL_TYPES, ConfigError, DreamConfig

if TYPE_CHECKING:  # pragma: no cover
    from diffucoder.model.modeling import DreamModel
    from diffucoder.tokenizer import DiffuTokenizer

WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"
CONFIG_NAME = "config.json"
GENERATION_CONFIG_NAME = "generation_config.json"
# tensors some exporters include that carry no learned state
IGNORABLE = re.compile(r".*rotary_emb\.inv_freq$")


class CheckpointError(DiffucoderError, RuntimeError):
    """A checkpoint folder that cannot be read or written as asked."""


_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
           "fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16, "float64": torch.float64}


def resolve_dtype(dtype: torch.dtype | str | None, stored: str | None) -> torch.dtype:
    """``"auto"``/None -> the stored dtype (fp32 when unknown); strings like "bfloat16" -> torch dtypes."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None or dtype == "auto":
        dtype = stored or "float32"
    name = str(dtype).replace("torch.", "")
    if name not in _DTYPES:
        raise CheckpointError(f"unknown dtype {dtype!r}; use one of {sorted(_DTYPES)}")
    return _DTYPES[name]


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def parse_size(size: int | str) -> int:
    """'5GB' -> 5e9 bytes (decimal units, as Hugging Face), '500MiB' -> binary units; ints pass through."""
    if isinstance(size, int):
        return size
    m = re.fullmatch(r"\s*([\d.]+)\s*([KMGT]?i?B)?\s*", str(size), flags=re.I)
    if not m:
        raise ValueError(f"cannot parse size {size!r} (examples: 5GB, 200MB, 1048576)")
    num, unit = float(m.group(1)), (m.group(2) or "B").upper()
    mult = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
            "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}[unit]
    return int(num * mult)


# ------------------------------------------------------------------------------------------------------------
# reading
# ------------------------------------------------------------------------------------------------------------
def read_config(path: str | Path, mask_token_id: int | None = None) -> DreamConfig:
    """The DreamConfig of a Dream folder, or the Dream config of a Qwen2 causal-LM folder."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise CheckpointError(f"{path}: is a file, expected a checkpoint folder (config.json + safetensors)")
    if not path.is_dir():
        raise CheckpointError(f"{path}: no such checkpoint folder")
    cfg_file = path / CONFIG_NAME
    if not cfg_file.is_file():
        raise CheckpointError(f"{cfg_file}: missing (a checkpoint folder needs config.json)")
    try:
        raw = json.loads(cfg_file.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{cfg_file}: not valid JSON ({e})") from None
    mt = raw.get("model_type")
    try:
        if mt in INIT_MODEL_TYPES:
            if mask_token_id is None:
                mask_token_id = _mask_id_from_tokenizer(path)
            if mask_token_id is None:
                raise CheckpointError(
                    f"{cfg_file}: a {mt} causal-LM folder has no [MASK] token; pass mask_token_id=... (Dream uses "
                    f"151666, '<|mask|>') or add '<|mask|>' to its tokenizer first")
            return DreamConfig.from_qwen2_dict(raw, mask_token_id, source=str(cfg_file))
        if mt not in SUPPORTED_MODEL_TYPES:
            raise CheckpointError(f"{cfg_file}: model_type {mt!r} is not supported (supported: "
                                  f"{list(SUPPORTED_MODEL_TYPES)}; initialisation from {list(INIT_MODEL_TYPES)})")
        cfg = DreamConfig.from_dict(raw, source=str(cfg_file))
        if mask_token_id is not None:
            cfg.mask_token_id = mask_token_id
        return cfg
    except ConfigError as e:
        raise CheckpointError(str(e)) from None


def _mask_id_from_tokenizer(path: Path) -> int | None:
    tok = path / "tokenizer.json"
    if not tok.is_file():
        return None
    try:
        added = json.loads(tok.read_text()).get("added_tokens", [])
    except (json.JSONDecodeError, OSError):
        return None
    for t in added:
        if t.get("content") == "<|mask|>":
            return int(t["id"])
    return None


def weight_files(path: Path) -> dict[str, list[str]]:
    """Map shard file -> tensor names, from the index or the single weights file."""
    index = path / INDEX_NAME
    single = path / WEIGHTS_NAME
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise CheckpointError(f"{index}: not a valid safetensors index ({e!r})") from None
        files: dict[str, list[str]] = {}
        for name, shard in weight_map.items():
            files.setdefault(shard, []).append(name)
        for shard in files:
            if not (path / shard).is_file():
                raise CheckpointError(f"{index}: names shard {shard!r}, which is missing from {path}")
        return files
    if single.is_file():
        from safetensors import safe_open

        try:
            with safe_open(str(single), framework="pt") as f:
                return {WEIGHTS_NAME: list(f.keys())}
        except Exception as e:  # safetensors raises its own error types
            raise CheckpointError(f"{single}: cannot read safetensors header ({e})") from None
    others = sorted(p.name for p in path.iterdir())
    hint = " (PyTorch .bin weights are not supported: convert them to safetensors)" if any(
        n.endswith(".bin") for n in others) else ""
    raise CheckpointError(f"{path}: no weights found: expected {WEIGHTS_NAME} or {INDEX_NAME}{hint}; "
                          f"folder holds {others}")


def load_pretrained(cls: type["DreamModel"], path: str | Path, torch_dtype: torch.dtype | str | None = "auto",
                    device: str | torch.device = "cpu", mask_token_id: int | None = None) -> "DreamModel":
    from safetensors import safe_open

    path = Path(path)
    config = read_config(path, mask_token_id=mask_token_id)
    dtype = resolve_dtype(torch_dtype, config.torch_dtype)
    files = weight_files(path)

    with torch.device("meta"):
        model = cls(config, init_weights=False)
    expected = {name: p for name, p in model.named_parameters()}  # tied lm_head appears once (as embed)
    expected_names = set(expected)
    device = torch.device(device)
    loaded: dict[str, torch.Tensor] = {}
    unexpected: list[str] = []
    for shard, names in files.items():
        file = path / shard
        try:
            handle = safe_open(str(file), framework="pt", device="cpu")
        except Exception as e:
            raise CheckpointError(f"{file}: cannot open safetensors file ({e})") from None
        with handle as f:
            in_file = set(f.keys())
            for name in names:
                if name not in in_file:
                    raise CheckpointError(f"{file}: index says it holds {name!r}, but it does not")
                if name not in expected_names:
                    if name == "lm_head.weight" and config.tie_word_embeddings:
                        continue  # tied head stored anyway: the embedding is the source of truth
                    if not IGNORABLE.match(name):
                        unexpected.append(name)
                    continue
                want = tuple(expected[name].shape)
                got = tuple(f.get_slice(name).get_shape())
                if got != want:
                    raise CheckpointError(f"{file}: tensor {name!r} has shape {got}, the config "
                                          f"({path / CONFIG_NAME}) implies {want}")
                t = f.get_tensor(name)
                if t.dtype != dtype:
                    t = t.to(dtype)
                if device.type != "cpu":
                    t = t.to(device)
                loaded[name] = t
    if unexpected:
        raise CheckpointError(f"{path}: unexpected tensors not in a Dream model with this config: "
                              f"{sorted(unexpected)[:10]}{' ...' if len(unexpected) > 10 else ''}")
    missing = sorted(expected_names - set(loaded))
    if missing:
        raise CheckpointError(f"{path}: missing tensors: {missing[:10]}{' ...' if len(missing) > 10 else ''}")
    model.load_state_dict(loaded, strict=False, assign=True)
    model.tie_weights()
    del loaded
    config.torch_dtype = dtype_name(dtype)
    gen_file = path / GENERATION_CONFIG_NAME
    model.generation_config = json.loads(gen_file.read_text()) if gen_file.is_file() else {}
    model.name_or_path = str(path)
    return model.eval()


# ------------------------------------------------------------------------------------------------------------
# writing
# ------------------------------------------------------------------------------------------------------------
_RENAME_EXCHANGE = 2


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2). False when unsupported."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    AT_FDCWD = -100
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    rc = fn(AT_FDCWD, os.fsencode(str(a)), AT_FDCWD, os.fsencode(str(b)), _RENAME_EXCHANGE)
    return rc == 0


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(str(path), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_directory(path: str | Path, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success it replaces ``path`` in one step, on error it is removed.

    An existing ``path`` is replaced only if ``overwrite``; the old contents are deleted after the swap.
    """
    path = Path(path).absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and not path.is_dir():
        raise CheckpointError(f"{path}: exists and is not a directory")
    if path.exists() and not overwrite:
        raise CheckpointError(f"{path}: already exists (pass overwrite=True to replace it)")
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
        for f in tmp.rglob("*"):
            if f.is_file():
                with open(f, "rb+") as fh:
                    os.fsync(fh.fileno())
        _fsync_dir(tmp)
        if path.exists():
            if _exchange(tmp, path):
                shutil.rmtree(tmp)  # tmp now holds the old folder
            else:
                old = path.parent / f".{path.name}.old-{uuid.uuid4().hex[:8]}"
                os.rename(path, old)
                os.rename(tmp, path)
                shutil.rmtree(old)
        else:
            os.rename(tmp, path)
        _fsync_dir(path.parent)
    except BaseException as e:
        full = isinstance(e, Exception) and not isinstance(e, DiffucoderError) and is_disk_full(e, path.parent)
        shutil.rmtree(tmp, ignore_errors=True)
        if full:
            kept = f"the previous {path.name} is kept unchanged" if path.exists() else f"no {path.name} was written"
            raise disk_full_error(path, kept) from e
        raise


def default_generation_config(config: DreamConfig) -> dict[str, Any]:
    return {
        "bos_token_id": config.bos_token_id,
        "eos_token_id": config.eos_token_id,
        "pad_token_id": config.pad_token_id,
        "mask_token_id": config.mask_token_id,
        "alg": "origin",
        "alg_temp": None,
        "eps": 1e-3,
        "steps": 512,
        "temperature": 0.0,
        "top_p": None,
        "top_k": None,
    }


def write_pretrained(model: "DreamModel", folder: str | Path, tokenizer: "DiffuTokenizer | None" = None,
                     max_shard_size: int | str = "5GB", generation_config: dict | None = None) -> None:
    """Write the checkpoint files into an existing folder (not atomic on its own; see save_pretrained)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = model.config
    limit = parse_size(max_shard_size)
    state: dict[str, torch.Tensor] = {}
    seen: dict[int, str] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        if name == "lm_head.weight" and cfg.tie_word_embeddings:
            continue
        if id(p) in seen:  # any other sharing would be a bug in the model definition
            raise CheckpointError(f"tensor {name!r} shares storage with {seen[id(p)]!r}")
        seen[id(p)] = name
        state[name] = p.detach().to("cpu").contiguous()
    dtypes = {t.dtype for t in state.values()}
    # shard in parameter order, closing a shard before it would pass the limit
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, t in state.items():
        nbytes = t.numel() * t.element_size()
        if shards[-1] and size + nbytes > limit:
            shards.append({})
            size = 0
        shards[-1][name] = t
        size += nbytes
    meta = {"format": "pt"}
    if len(shards) == 1:
        save_file(shards[0], str(folder / WEIGHTS_NAME), metadata=meta)
    else:
        n = len(shards)
        weight_map = {}
        for k, shard in enumerate(shards, 1):
            fname = f"model-{k:05d}-of-{n:05d}.safetensors"
            save_file(shard, str(folder / fname), metadata=meta)
            weight_map.update({name: fname for name in shard})
        total = sum(t.numel() * t.element_size() for t in state.values())
        (folder / INDEX_NAME).write_text(json.dumps(
            {"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2, sort_keys=True) + "\n")
    out_cfg = DreamConfig.from_dict(cfg.to_dict())
    if len(dtypes) == 1:
        out_cfg.torch_dtype = dtype_name(next(iter(dtypes)))
    (folder / CONFIG_NAME).write_text(out_cfg.to_json_string())
    gen = dict(default_generation_config(cfg))
    gen.update(getattr(model, "generation_config", None) or {})
    gen.update(generation_config or {})
    for key in ("bos_token_id", "eos_token_id", "pad_token_id", "mask_token_id"):
        gen[key] = getattr(cfg, key)
    (folder / GENERATION_CONFIG_NAME).write_text(json.dumps(gen, indent=2, sort_keys=True) + "\n")
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)


def save_pretrained(model: "DreamModel", path: str | Path, tokenizer: "DiffuTokenizer | None" = None,
                    max_shard_size: int | str = "5GB", generation_config: dict | None = None) -> Path:
    path = Path(path)
    if path.is_dir() and any(path.iterdir()) and not (path / CONFIG_NAME).is_file():
        raise CheckpointError(f"{path}: exists, is not empty and is not a checkpoint folder; refusing to replace it")
    with atomic_directory(path) as tmp:
        write_pretrained(model, tmp, tokenizer=tokenizer, max_shard_size=max_shard_size,
                         generation_config=generation_config)
    return path
