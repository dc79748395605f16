"""Ship a demo run's SFT model as ``diffucoder/demo_checkpoint/`` (what ``diffucoder demo --quick`` starts from).

    python scripts/ship_demo_checkpoint.py RUN [--out diffucoder/demo_checkpoint]

Reads the run folder of a finished ``diffucoder demo`` (through ``eval_sft``), casts ``RUN/sft/final`` to bf16
(half the bytes; the demo upcasts it to fp32 again) and writes the weights, config, tokenizer and a
``demo_recipe.json`` (``summary``, every demo setting, and the run's figures: parameters, SFT steps, examples,
tokens, held-out masked CE, greedy pass@1 per tier in fp32) into ``--out``. The folder's hand-written
``README.md`` is kept. Files are written to a temporary folder beside ``--out`` first and moved in only when all
of them are written, so a failed call leaves the shipped checkpoint as it was.
"""

from __future__ import annotations

import argparse
import collections
import json
import shutil
import sys
import tempfile
from pathlib import Path

import torch

from diffucoder.demo import SHIPPED_CHECKPOINT
from diffucoder.model import DreamModel
from diffucoder.tokenizer import load_tokenizer


def recipe_of(run: Path, parameters: int) -> dict:
    """``demo_recipe.json`` contents for the run folder ``run``, whose SFT model has ``parameters`` weights."""
    settings = json.loads((run / "demo_settings.json").read_text())
    s, seed = settings["settings"], settings.get("seed", 0)
    sft = json.loads((run / "stages" / "sft.json").read_text())
    ev = json.loads((run / "stages" / "eval_sft.json").read_text())
    pre = "no pretraining" if not s["pretrain_steps"] else (
        f"{s['pretrain_steps']} steps of masked-diffusion pretraining ({s['pretrain_batch']} x "
        f"{s['pretrain_seq_len']} tokens, lr {s['pretrain_lr']:g})")
    mix = " : ".join(f"{n} {t}" for t, n in collections.Counter(s["sft_tiers"]).items())
    system = f"the system turn {s['system_prompt']!r}" if s["system_prompt"] else "no system turn"
    summary = (f"diffucoder's own demo pipeline (seed {seed}, {s['precision']}): a {s['vocab_size']:,}-token BPE; "
               f"a {s['preset']} Dream model; {pre}; {sft['steps']:,} SFT steps ({s['sft_batch']} rows, "
               f"{s['sft_padding']} padding, lr {s['sft_lr']:g}) on {s['sft_tasks']:,} synthetic tasks ({mix} "
               f"batches) in the {s['prompt_format']!r} prompt format with {system}; saved in bf16.")
    figures = {"parameters": parameters, "sft_steps": sft["steps"], "sft_examples": sft.get("examples"),
               "sft_tokens": sft.get("tokens"), "sft_heldout_masked_ce": round((sft.get("eval") or {}).get(
                   "masked_ce", float("nan")), 4), "sft_unigram_ce": round(sft.get("unigram_baseline") or 0.0, 4),
               "heldout_greedy_pass1_fp32": {t: r["greedy"] for t, r in ev["by_tier"].items()},
               "heldout_tasks_per_tier": s["eval_tasks_per_tier"],
               "measured_with": "the run's eval_sft stage (fp32 weights, its decoding settings)"}
    return {"summary": summary, "settings": s, "figures": figures}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path, help="a finished demo run folder (through eval_sft)")
    ap.add_argument("--out", type=Path, default=SHIPPED_CHECKPOINT,
                    help="the checkpoint folder to write (default: the package's demo_checkpoint/)")
    a = ap.parse_args(argv)
    for f in ("demo_settings.json", "stages/sft.json", "stages/eval_sft.json", "sft/final/config.json"):
        if not (a.run / f).is_file():
            print(f"error: {a.run / f}: not found (is {a.run} a demo run finished through eval_sft?)", file=sys.stderr)
            return 2
    model = DreamModel.from_pretrained(a.run / "sft" / "final", torch_dtype="float32").to(torch.bfloat16)
    recipe = recipe_of(a.run, sum(p.numel() for p in model.parameters()))
    tok = load_tokenizer(a.run / "sft" / "final")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=a.out.parent, prefix=".ship-") as tmp:
        new = Path(tmp) / "ckpt"
        model.save_pretrained(new, tokenizer=tok)
        (new / "demo_recipe.json").write_text(json.dumps(recipe, indent=2) + "\n")
        if (a.out / "README.md").is_file():
            shutil.copy2(a.out / "README.md", new / "README.md")
        old = Path(tmp) / "old"
        if a.out.exists():
            a.out.rename(old)
        new.rename(a.out)
    print(f"wrote {a.out}: {recipe['figures']['parameters']:,} parameters in bf16; {recipe['summary']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
