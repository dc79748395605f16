"""``diffucoder info PATH``: parameters, config and special tokens of a checkpoint folder.

Reads only headers (config.json, the safetensors index or header, tokenizer.json): no weights are loaded, so it
is instant even for a 7B folder.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", type=Path, help="checkpoint folder (config.json + safetensors)")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")


def checkpoint_info(path: Path) -> dict:
    from safetensors import safe_open

    from diffucoder.model.checkpoint import read_config, weight_files

    cfg = read_config(path)
    files = weight_files(path)
    n_params = 0
    dtypes: set[str] = set()
    size = 0
    for shard, names in files.items():
        size += (path / shard).stat().st_size
        with safe_open(str(path / shard), framework="pt") as f:
            for name in names:
                sl = f.get_slice(name)
                numel = 1
                for d in sl.get_shape():
                    numel *= d
                n_params += numel
                dtypes.add(sl.get_dtype())
    info: dict = {
        "path": str(path),
        "parameters": n_params,
        "parameters_expected_from_config": cfg.num_parameters(),
        "weight_files": len(files),
        "bytes_on_disk": size,
        "stored_dtypes": sorted(dtypes),
        "config": cfg.to_dict(),
    }
    if (path / "tokenizer.json").is_file():
        from diffucoder.tokenizer import load_tokenizer

        try:
            tok = load_tokenizer(path)
            info["tokenizer"] = {"vocab_size": tok.vocab_size, "special_tokens": tok.special_tokens()}
        except ValueError as e:
            info["tokenizer"] = {"error": str(e)}
    return info


def run(args: argparse.Namespace) -> int:
    info = checkpoint_info(args.path)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    c = Console()
    cfg = info["config"]
    c.print(f"[bold]{info['path']}[/bold]")
    c.print(f"parameters: {info['parameters']:,} ({info['parameters'] / 1e6:.2f}M) in {info['weight_files']} "
            f"file(s), {info['bytes_on_disk'] / 1e6:.1f} MB on disk, dtype {', '.join(info['stored_dtypes'])}")
    t = Table("config key", "value", show_header=True)
    for k in sorted(cfg):
        t.add_row(k, json.dumps(cfg[k]))
    c.print(t)
    tok = info.get("tokenizer")
    if tok is None:
        c.print("tokenizer: none in folder")
    elif "error" in tok:
        c.print(f"tokenizer: [red]{tok['error']}[/red]")
    else:
        c.print(f"tokenizer: {tok['vocab_size']} ids")
        for name, i in tok["special_tokens"].items():
            c.print(f"  {name:18s} {i}")
    return 0
