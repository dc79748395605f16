"""Does a model copy from the prompt? Single-mask predictions of the answer tokens a synthetic task copies.

For held-out tasks of one tier, each answer (the ideal reply, as in SFT) is placed after its chat prompt and one
token at a time is masked; the model sees everything else. The tokens are grouped by what they copy:

- ``digit``: a digit of a constant in the function body (``return n % 7 == 0``: the ``7``);
- ``arg``: an argument name used in the body (``return n ...``: the ``n``), which must match the def line;
- ``name``: a token of the function name after the first (the name is in the prompt's Signature line).

Nearly all of these tokens also appear elsewhere in the row (the prompt, the def line; the exceptions are
digits the solution's shape fixes, like the ``0`` of ``== 0``). So a model that copies gets them right, and one
that does not falls back to its prior (the most frequent constant or argument name). Prints the mean
cross-entropy and the argmax accuracy per group for each model folder.

    .venv/bin/python benchmarks/copy_probe.py runs/demo/sft/final [other/model ...] --tier easy
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffucoder.data.sft import encode_examples, parse_record  # noqa: E402
from diffucoder.model import DreamModel  # noqa: E402
from diffucoder.tasks import TIERS, generate_tasks, to_sft_record  # noqa: E402
from diffucoder.tokenizer import load_tokenizer  # noqa: E402

GROUPS = ("digit", "arg", "name")


def token_groups(answer_tokens: list[str], args: list[str]) -> dict[int, str]:
    """Answer-token index -> group, for the tokens the answer copies (see the module docstring)."""
    def_start = next((j for j, s in enumerate(answer_tokens) if s == "def"), None)
    def_end = next((j for j, s in enumerate(answer_tokens) if s.endswith(":\n")), None)
    if def_start is None or def_end is None:
        return {}
    out = {}
    for j, s in enumerate(answer_tokens):
        word = s.strip("( ")  # "(values" in "sorted(values)" is the argument too
        if def_start + 1 < j < def_end and "(" not in s:  # the name after its first token, up to the arguments
            out[j] = "name"
        elif j > def_end and word.isdigit():
            out[j] = "digit"
        elif j > def_end and word in args:
            out[j] = "arg"
    return out


@torch.no_grad()
def probe(model_dir: str, tasks: list) -> dict[str, tuple[float, float, int]]:
    model = DreamModel.from_pretrained(model_dir).eval()
    tok = load_tokenizer(model_dir)
    scores: dict[str, list[tuple[float, bool]]] = {g: [] for g in GROUPS}
    for task in tasks:
        ex = encode_examples([parse_record(to_sft_record(task))], tok)[0]
        p, a = ex.prompt_ids, ex.answer_ids
        sig = re.match(r"def \w+\(([^)]*)\)", task.solution)
        args = [x.strip() for x in sig.group(1).split(",")] if sig else []
        groups = token_groups([tok.decode([i]) for i in a], args)
        if not groups:
            continue
        x = torch.tensor([p + a])
        idx = sorted(groups)
        rows = x.repeat(len(idx), 1)  # one row per probed token, that token masked
        for r, j in enumerate(idx):
            rows[r, len(p) + j] = tok.mask_token_id
        logits = model.token_logits(rows)
        for r, j in enumerate(idx):
            lp = logits[r, len(p) + j].float().log_softmax(-1)
            scores[groups[j]].append((-float(lp[a[j]]), int(lp.argmax()) == a[j]))
    return {g: (sum(c for c, _ in v) / len(v), sum(ok for _, ok in v) / len(v), len(v))
            for g, v in scores.items() if v}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", help="model folders (Dream/DiffuCoder format with a tokenizer)")
    ap.add_argument("--tier", default="easy", choices=TIERS)
    ap.add_argument("--tasks", type=int, default=60)
    ap.add_argument("--seed", type=int, default=5)
    args = ap.parse_args()
    tasks = generate_tasks(args.tasks, "test", seed=args.seed, tiers=(args.tier,))
    print(f"{args.tasks} held-out {args.tier} tasks; single-mask CE (nats) / argmax accuracy (tokens)")
    print(f"{'model':<40} " + "  ".join(f"{g:>22}" for g in GROUPS))
    for m in args.models:
        res = probe(m, tasks)
        cells = [f"{res[g][0]:6.2f} / {res[g][1]:5.1%} ({res[g][2]:>3})" if g in res else f"{'-':>22}"
                 for g in GROUPS]
        print(f"{m[-40:]:<40} " + "  ".join(f"{c:>22}" for c in cells))


if __name__ == "__main__":
    main()
