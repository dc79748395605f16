"""Load time and peak memory of a sharded checkpoint against its size on disk.

Writes a synthetic Dream checkpoint of a few hundred MB (bf16, sharded), then loads it in fresh processes:
``DreamModel.from_pretrained`` (meta-device construction, tensors assigned shard by shard) and, for contrast, the
naive way (randomly initialised model + ``load_state_dict`` of the full state dict). Peak memory is the
process's peak RSS above its RSS just before loading.

    python benchmarks/checkpoint_load.py [--hidden 1024 --layers 16 --vocab 32000 --shard 100MB]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, sys, time
import torch
from pathlib import Path
from diffucoder.model import DreamModel
path, how = Path(sys.argv[1]), sys.argv[2]
def status_mb(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
def rss_mb():
    return status_mb("VmRSS")
base = rss_mb()
t0 = time.perf_counter()
if how == "ours":
    m = DreamModel.from_pretrained(path, torch_dtype=torch.bfloat16)
else:
    from safetensors.torch import load_file
    from diffucoder.model import read_config
    cfg = read_config(path)
    m = DreamModel(cfg).to(torch.bfloat16)
    sd = {}
    index = json.loads((path / "model.safetensors.index.json").read_text())
    for shard in sorted(set(index["weight_map"].values())):
        sd.update(load_file(str(path / shard)))
    m.load_state_dict(sd, strict=False)
    m.tie_weights()
elapsed = time.perf_counter() - t0
# make every weight resident (safetensors maps shards lazily), then run a forward as a sanity check
with torch.no_grad():
    for p in m.parameters():
        p.add_(0)  # in place: pages each weight in without temporaries
    out = m(torch.zeros(1, 8, dtype=torch.long)).logits
assert torch.isfinite(out.float()).all()
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the forking parent
peak = status_mb("VmHWM")
print(json.dumps({"load_s": elapsed, "peak_above_base_mb": peak - base, "rss_after_mb": rss_mb() - base}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--layers", type=int, default=16)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--shard", default="100MB")
    args = ap.parse_args()

    import torch

    from diffucoder.model import DreamConfig, DreamModel

    cfg = DreamConfig(vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=int(args.hidden * 2.75),
                      num_hidden_layers=args.layers, num_attention_heads=args.hidden // 64,
                      num_key_value_heads=max(1, args.hidden // 256), mask_token_id=args.vocab - 1,
                      tie_word_embeddings=False, torch_dtype="bfloat16")
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "ckpt"
        with torch.device("cpu"):
            m = DreamModel(cfg, init_weights=False).to(torch.bfloat16)
            for p in m.parameters():
                p.data.normal_(0, 0.02)
        t0 = time.perf_counter()
        m.save_pretrained(path, max_shard_size=args.shard)
        save_s = time.perf_counter() - t0
        del m
        disk_mb = sum(f.stat().st_size for f in path.glob("*.safetensors")) / 2**20
        n_shards = len(list(path.glob("*.safetensors")))
        print(f"checkpoint: {cfg.num_parameters() / 1e6:.1f}M params, bf16, {n_shards} shards, "
              f"{disk_mb:.0f} MiB on disk; save {save_s:.2f}s")
        print(f"{'loader':<34}{'load s':>8}{'peak MiB':>10}{'peak/disk':>11}{'resident MiB':>14}")
        for how, label in (("ours", "DreamModel.from_pretrained"), ("naive", "init + load_state_dict (naive)")):
            out = subprocess.run([sys.executable, "-c", CHILD, str(path), how], capture_output=True, text=True,
                                 check=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            peak, after = r["peak_above_base_mb"], r["rss_after_mb"]
            print(f"{label:<34}{r['load_s']:>8.2f}{peak:>10.0f}{peak / disk_mb:>11.2f}{after:>14.0f}")


if __name__ == "__main__":
    main()
