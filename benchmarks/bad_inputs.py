"""What a new user meets on bad input: every command run on missing files, wrong types, empty files, unknown
keys, negative numbers, a full disk and Ctrl-C, each outcome classified.

    .venv/bin/python benchmarks/bad_inputs.py                 # all cases, a markdown table on stdout
    .venv/bin/python benchmarks/bad_inputs.py --only train    # cases whose id starts with "train"
    .venv/bin/python benchmarks/bad_inputs.py --json out.json # also the raw outcomes

Each case runs ``python -m diffucoder.cli.main ...`` in a scratch folder holding a tiny checkpoint, configs and
data files made here (nothing is downloaded). Outcomes:

- ``clear``: a non-zero exit, no traceback, an ``error:`` line that names what the case says it must (the file,
  the argument, the key);
- ``buried``: that message is there, but under a traceback;
- ``unclear``: a failure that does not name the file / argument / problem;
- ``silently wrong``: exit 0 where the input was wrong, or a post-check found a wrong result;
- ``lost data``: a post-check found an earlier run's file changed or destroyed;
- ``ok``: a case that should succeed did.

The full-disk case mounts a small tmpfs (root only; skipped otherwise). The Ctrl-C case sends SIGINT to a
training run once it has written its first checkpoint.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data" / "evalplus"


@dataclass
class Case:
    id: str
    what: str
    """The bad-input class (missing file, wrong type, ...)."""
    argv: list[str]
    names: list[str] = field(default_factory=list)
    """Substrings (case-insensitive) a clear message must contain."""
    expect: str = "error"
    """"error" or "ok"."""
    check: Callable[[subprocess.CompletedProcess], str | None] | None = None
    """Post-check: returns "silently wrong" / "lost data" (or None when fine)."""
    shell: str | None = None
    """Run this shell line instead of argv (pipes)."""
    setup: Callable[[], None] | None = None
    timeout: float = 300


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "diffucoder.cli.main", *args]


def _gen8(*args: str) -> list[str]:
    """``generate`` on the scratch model with an 8-token canvas, plus ``args``."""
    return _cli("generate", "--model", "model", "--prompt", "x", "--max-new-tokens", "8", *args)


def classify(case: Case, r: subprocess.CompletedProcess) -> tuple[str, str]:
    out = (r.stdout or "") + (r.stderr or "")
    err = (r.stderr or "").strip()
    tail = err.splitlines()[-1] if err else (r.stdout or "").strip().splitlines()[-1:] or [""]
    tail = tail if isinstance(tail, str) else tail[0]
    if case.check is not None:
        verdict = case.check(r)
        if verdict:
            return verdict, tail
    if case.expect == "ok":
        return ("ok" if r.returncode == 0 and "Traceback" not in out else "unclear"), tail
    if r.returncode == 0:
        return "silently wrong", tail
    named = all(n.lower() in out.lower() for n in case.names)
    if "Traceback" in out:
        return ("buried" if named else "unclear"), tail
    error_lines = [ln for ln in out.splitlines() if ln.startswith("error:") or ": error:" in ln]
    if error_lines and named:
        return "clear", error_lines[-1]
    return "unclear", tail


# ------------------------------------------------------------------------------------------------------------
# fixtures
# ------------------------------------------------------------------------------------------------------------
def build_fixtures(d: Path, evalplus_dir: Path = SHARED) -> None:
    import torch

    from diffucoder.data.corpus import read_source, stdlib_files
    from diffucoder.model import DreamConfig, DreamModel
    from diffucoder.tasks import dataset, generate_tasks, to_rl_record, write_jsonl
    from diffucoder.tokenizer import train_tokenizer

    tok = train_tokenizer((read_source(f) for f in stdlib_files()[:20]), vocab_size=512)
    torch.manual_seed(0)
    model = DreamModel(DreamConfig.preset("tiny", tokenizer=tok)).eval()
    model.save_pretrained(d / "model", tokenizer=tok)
    model.save_pretrained(d / "notok")
    (d / "noweights").mkdir()
    shutil.copy(d / "model" / "config.json", d / "noweights" / "config.json")
    (d / "badjson").mkdir()
    (d / "badjson" / "config.json").write_text("{not json")
    shutil.copytree(d / "model", d / "noshape")
    cfg = json.loads((d / "noshape" / "config.json").read_text())
    del cfg["hidden_size"]
    (d / "noshape" / "config.json").write_text(json.dumps(cfg))
    shutil.copytree(d / "model", d / "llama")
    cfg["model_type"] = "llama"
    (d / "llama" / "config.json").write_text(json.dumps(cfg))
    shutil.copytree(d / "model", d / "corrupt")
    (d / "corrupt" / "model.safetensors").write_bytes(b"\x00garbage" * 100)
    (d / "emptydir").mkdir()
    (d / "latin1.txt").write_bytes("d\xe9finir une fonction".encode("latin-1"))
    (d / "empty.txt").write_text("")
    (d / "prompts.txt").write_text("def add(a, b):\n")
    (d / "corpus.txt").write_text("def f(x):\n    return x + 1\n\n" * 400)
    train = {
        "kind": "train", "task": "pretrain", "run_dir": "runs/t", "seed": 0,
        "model": {"preset": "tiny"}, "tokenizer": {"path": "model"},
        "data": {"corpus": ["corpus.txt"], "seq_len": 32, "heldout_fraction": 0.1},
        "optim": {"steps": 4, "global_batch_size": 4, "micro_batch_size": 4, "lr": 1e-3, "warmup_steps": 1},
        "eval": {"every": 0, "num_sequences": 4, "batch_size": 4}, "checkpoint": {"every": 2, "keep_last": 2},
        "logging": {"every": 1, "progress": False}, "runtime": {"device": "cpu", "threads": 1},
    }
    import yaml

    (d / "train.yaml").write_text(yaml.safe_dump(train))
    (d / "train_sft_missing.yaml").write_text(yaml.safe_dump({**train, "task": "sft", "run_dir": "runs/t",
                                                              "sft": {"files": ["nope.jsonl"]}}))
    (d / "bad_syntax.yaml").write_text("optim:\n  lr: [1, 2\n")
    (d / "list.yaml").write_text("- a\n- b\n")
    (d / "unknown_key.yaml").write_text(yaml.safe_dump({**train, "optimizer": {"lr": 1}}))
    (d / "empty.yaml").write_text("")
    rows = [to_rl_record(t) for t in generate_tasks(4, "train", seed=0, tiers=("easy",))]
    write_jsonl(rows, d / "rl.jsonl")
    (d / "rl_bad.jsonl").write_text('{"prompt": "x", "test_cases": ["assert 1"]}\n{oops\n')
    rl = {"model_name_or_path": "model", "dataset_path": "rl.jsonl", "output_dir": "runs/rl", "device": "cpu",
          "num_generations": 2, "per_device_train_batch_size": 2, "max_steps": 2, "num_iterations": 1, "beta": 0.0,
          "max_completion_length": 8, "diffusion_steps": 4, "reward_workers": 1, "save_steps": 1,
          "disable_tqdm": True, "learning_rate": 1e-4}
    (d / "rl.yaml").write_text(yaml.safe_dump(rl))
    ev = dataset("test", n=3, seed=0)
    write_jsonl(ev, d / "rows.jsonl")
    write_jsonl([{"task_id": r["task_id"], "solution": r["solution"]} for r in ev], d / "samples.jsonl")
    (d / "samples_bad.jsonl").write_text('{"task_id": "x"\n{"task_id": "y"}\n')
    write_jsonl([{"task_id": "nope", "solution": "pass"}], d / "samples_unknown.jsonl")
    write_jsonl([{"task_id": ev[0]["task_id"], "solution": ev[0]["solution"]}], d / "samples_one.jsonl")
    (d / "rows_bad.jsonl").write_text(json.dumps({"task_id": "a", "question": "q"}) + "\n")
    (d / "garbage.jsonl.gz").write_bytes(b"this is not gzip")
    if (evalplus_dir / "HumanEvalPlus-v0.1.10.jsonl.gz").is_file():
        shutil.copy(evalplus_dir / "HumanEvalPlus-v0.1.10.jsonl.gz", d / "HumanEvalPlus.jsonl.gz")
    else:
        try:
            from importlib.resources import files

            src = files("diffucoder.evaluation") / "data" / "HumanEvalPlus-v0.1.10.jsonl.gz"
            shutil.copy(str(src), d / "HumanEvalPlus.jsonl.gz")
        except (ImportError, FileNotFoundError, ModuleNotFoundError):
            pass
    if (d / "HumanEvalPlus.jsonl.gz").is_file():
        with gzip.open(d / "HumanEvalPlus.jsonl.gz", "rt") as f:
            he = [json.loads(x) for x in f]
        write_jsonl([{"task_id": r["task_id"], "solution": r["prompt"] + r["canonical_solution"]} for r in he],
                    d / "he_samples.jsonl")


# ------------------------------------------------------------------------------------------------------------
# cases
# ------------------------------------------------------------------------------------------------------------
def cases(d: Path) -> list[Case]:
    def unchanged(path: str, label: str = "lost data") -> Callable[[subprocess.CompletedProcess], str | None]:
        before = (d / path).read_bytes() if (d / path).is_file() else None

        def check(r: subprocess.CompletedProcess) -> str | None:
            now = (d / path).read_bytes() if (d / path).is_file() else None
            return label if now != before else None
        return check

    def run_train(run_dir: str, *extra: str) -> None:
        subprocess.run(_cli("train", "train.yaml", f"run_dir={run_dir}", *extra), cwd=d, capture_output=True,
                       timeout=600)

    state: dict = {}

    def warned(name: str) -> Callable[[subprocess.CompletedProcess], str | None]:
        def check(r: subprocess.CompletedProcess) -> str | None:
            return None if name in r.stderr and "warning" in r.stderr.lower() else "silently wrong"
        return check

    def seed_changed_run() -> None:
        run_train("runs/changed", "optim.steps=2")
        state["changed_before"] = (d / "runs/changed/config.yaml").read_bytes()

    def changed_check(r: subprocess.CompletedProcess) -> str | None:
        if r.returncode == 0:
            return "silently wrong"  # resumed under another lr without a word
        return None

    def seed_failed_run() -> None:
        run_train("runs/keep", "optim.steps=2")
        state["keep"] = (d / "runs/keep/config.yaml").read_bytes()

    def keep_check(r: subprocess.CompletedProcess) -> str | None:
        return "lost data" if (d / "runs/keep/config.yaml").read_bytes() != state["keep"] else None

    def seed_subset() -> None:
        subprocess.run(_cli("eval", "--samples", "samples.jsonl", "--dataset", "synthetic", "--dataset-path",
                            "rows.jsonl", "--out", "ev_full", "--workers", "1"), cwd=d, capture_output=True,
                       timeout=300)
        state["full"] = json.loads((d / "ev_full" / "results.json").read_text())["n_tasks"]

    def subset_check(r: subprocess.CompletedProcess) -> str | None:
        n = json.loads((d / "ev_full" / "results.json").read_text())["n_tasks"]
        return "lost data" if n != state["full"] else None

    def k_check(r: subprocess.CompletedProcess) -> str | None:
        out = r.stdout + r.stderr
        if r.returncode == 0 and "pass@5" not in out and "warning" not in out.lower():
            return "silently wrong"
        return None

    def noshape_check(r: subprocess.CompletedProcess) -> str | None:
        return "silently wrong" if r.returncode == 0 else None

    def seed_rl_changed() -> None:
        subprocess.run(_cli("rl", "rl.yaml", "output_dir=runs/rl_changed"), cwd=d, capture_output=True, timeout=600)

    def seed_demo() -> None:
        subprocess.run(_cli("demo", "--quick", "--run-dir", "runs/demo", "--stop-after", "tokenizer", "--no-progress",
                            "--set", "vocab_size=300", "--set", "tokenizer_stdlib_files=5"), cwd=d,
                       capture_output=True, timeout=600)

    c = [
        Case("cli-unknown-command", "unknown command", _cli("nonsense"), ["nonsense"]),
        Case("info-missing", "missing folder", _cli("info", "nope"), ["nope"]),
        Case("info-file", "file given for a folder", _cli("info", "prompts.txt"), ["prompts.txt"]),
        Case("info-emptydir", "folder without config", _cli("info", "emptydir"), ["config.json"]),
        Case("info-badjson", "corrupt config", _cli("info", "badjson"), ["config.json", "json"]),
        Case("info-noshape", "config lacks a shape key", _cli("info", "noshape"), ["hidden_size"],
             check=noshape_check),
        Case("info-llama", "unsupported model type", _cli("info", "llama"), ["llama"]),
        Case("info-noweights", "no weights", _cli("info", "noweights"), ["model.safetensors"]),
        Case("info-corrupt", "corrupt weights", _cli("info", "corrupt"), ["model.safetensors"]),
        Case("tok-train-missing", "missing file", _cli("tokenizer", "train", "--out", "tk", "--files", "nope.txt"),
             ["nope.txt"]),
        Case("tok-train-vocab-small", "number out of range",
             _cli("tokenizer", "train", "--out", "tk", "--vocab-size", "10", "--files", "corpus.txt"), ["vocab"]),
        Case("tok-train-vocab-neg", "negative number",
             _cli("tokenizer", "train", "--out", "tk", "--vocab-size", "-5", "--files", "corpus.txt"), ["vocab"]),
        Case("tok-train-out-file", "file given for a folder",
             _cli("tokenizer", "train", "--out", "prompts.txt", "--vocab-size", "300", "--files", "corpus.txt"),
             ["prompts.txt"]),
        Case("tok-train-latin1", "non-UTF-8 file (kept, with a warning)",
             _cli("tokenizer", "train", "--out", "tk2", "--vocab-size", "300", "--files", "latin1.txt"),
             expect="ok", check=warned("latin1.txt")),
        Case("tok-encode-missing", "missing file", _cli("tokenizer", "encode", "nope", "x"), ["nope"]),
        Case("tok-encode-notjson", "wrong file type", _cli("tokenizer", "encode", "prompts.txt", "x"),
             ["prompts.txt"]),
        Case("gen-missing-model", "missing folder", _cli("generate", "--model", "nope", "--prompt", "x"),
             ["nope", "folder"]),
        Case("gen-model-file", "file given for a folder", _cli("generate", "--model", "prompts.txt", "--prompt", "x"),
             ["prompts.txt"]),
        Case("gen-notok", "checkpoint without tokenizer", _cli("generate", "--model", "notok", "--prompt", "x"),
             ["tokenizer.json"]),
        Case("gen-max-new-0", "zero", _cli("generate", "--model", "model", "--prompt", "x", "--max-new-tokens", "0"),
             ["--max-new-tokens"]),
        Case("gen-steps-neg", "negative number",
             _gen8("--steps", "-3"),
             ["--steps"]),
        Case("gen-temp-neg", "negative number",
             _gen8("--temperature", "-1"),
             ["temperature"]),
        Case("gen-top-p", "number out of range",
             _gen8("--top-p", "1.5"),
             ["top-p"]),
        Case("gen-num-samples-0", "zero",
             _gen8("--num-samples", "0"),
             ["num-samples"]),
        Case("gen-threshold", "number out of range",
             _gen8("--threshold", "2"),
             ["threshold"]),
        Case("gen-block", "inconsistent numbers",
             _gen8("--block-length", "3"),
             ["block"]),
        Case("gen-prompt-latin1", "non-UTF-8 file",
             _cli("generate", "--model", "model", "--prompt-file", "latin1.txt", "--max-new-tokens", "4"),
             ["latin1.txt", "utf-8"]),
        Case("gen-prompt-dir", "folder given for a file",
             _cli("generate", "--model", "model", "--prompt-file", "emptydir", "--max-new-tokens", "4"),
             ["emptydir"]),
        Case("gen-prompt-missing", "missing file",
             _cli("generate", "--model", "model", "--prompt-file", "nope.txt", "--max-new-tokens", "4"),
             ["nope.txt"]),
        Case("gen-prompt-empty", "empty file",
             _cli("generate", "--model", "model", "--prompt-file", "empty.txt", "--max-new-tokens", "4"),
             ["empty"]),
        Case("gen-threads-0", "zero",
             _cli("generate", "--model", "model", "--prompt", "x", "--max-new-tokens", "4", "--threads", "-1"),
             ["threads"]),
        Case("gen-ok", "valid", _cli("generate", "--model", "model", "--prompt", "x", "--max-new-tokens", "4"),
             expect="ok"),
        Case("analyze-missing-model", "missing folder", _cli("analyze", "--model", "nope", "--prompts", "synthetic"),
             ["nope", "folder"]),
        Case("analyze-prompts-missing", "missing file",
             _cli("analyze", "--model", "model", "--prompts", "nope.jsonl", "--out", "an"), ["nope.jsonl"]),
        Case("analyze-prompts-empty", "empty file",
             _cli("analyze", "--model", "model", "--prompts", "empty.txt", "--out", "an"), ["empty.txt"]),
        Case("analyze-temps", "wrong type",
             _cli("analyze", "--model", "model", "--prompts", "synthetic", "--temperatures", "a,b"), ["temperatures"]),
        Case("analyze-max-k-0", "zero",
             _cli("analyze", "--model", "model", "--prompts", "prompts.txt", "--max-k", "0", "--out", "an",
                  "--max-new-tokens", "4"), ["max-k"]),
        Case("analyze-samples-0", "zero",
             _cli("analyze", "--model", "model", "--prompts", "prompts.txt", "--samples", "0", "--out", "an",
                  "--max-new-tokens", "4"), ["samples"]),
        Case("analyze-limit-neg", "negative number",
             _cli("analyze", "--model", "model", "--prompts", "prompts.txt", "--limit", "-1", "--out", "an",
                  "--max-new-tokens", "4"), ["limit"]),
        Case("eval-humaneval+-fresh", "data a fresh clone lacks",
             _cli("eval", "--samples", "he_samples.jsonl", "--dataset", "humaneval+", "--tasks", "HumanEval/0",
                  "--out", "ev_he", "--workers", "1"), expect="ok"),
        Case("eval-mbpp+-given-he", "wrong file for the dataset",
             _cli("eval", "--samples", "he_samples.jsonl", "--dataset", "mbpp+", "--dataset-path",
                  "HumanEvalPlus.jsonl.gz", "--out", "ev_x"), ["HumanEvalPlus.jsonl.gz"]),
        Case("eval-samples-missing", "missing file",
             _cli("eval", "--samples", "nope.jsonl", "--dataset", "synthetic", "--dataset-path", "rows.jsonl"),
             ["nope.jsonl"]),
        Case("eval-samples-bad", "corrupt file",
             _cli("eval", "--samples", "samples_bad.jsonl", "--dataset", "synthetic", "--dataset-path", "rows.jsonl",
                  "--out", "ev_b"), ["samples_bad.jsonl"]),
        Case("eval-samples-unknown", "unknown task id",
             _cli("eval", "--samples", "samples_unknown.jsonl", "--dataset", "synthetic", "--dataset-path",
                  "rows.jsonl", "--out", "ev_u"), ["nope"]),
        Case("eval-k-type", "wrong type",
             _cli("eval", "--samples", "samples.jsonl", "--dataset", "synthetic", "--dataset-path", "rows.jsonl",
                  "--k", "1,a"), ["--k"]),
        Case("eval-k-0", "zero",
             _cli("eval", "--samples", "samples.jsonl", "--dataset", "synthetic", "--dataset-path", "rows.jsonl",
                  "--k", "0", "--out", "ev_k0"), ["k"]),
        Case("eval-k-too-big", "k above the sample count",
             _cli("eval", "--samples", "samples.jsonl", "--dataset", "synthetic", "--dataset-path", "rows.jsonl",
                  "--k", "1,5", "--out", "ev_k5", "--workers", "1"), ["pass@5"], check=k_check, expect="ok"),
        Case("eval-tasks-unknown", "unknown task id",
             _cli("eval", "--samples", "samples.jsonl", "--dataset", "synthetic", "--dataset-path", "rows.jsonl",
                  "--tasks", "nope", "--out", "ev_t"), ["nope"]),
        Case("eval-tasks-subset", "subset run over a full run",
             _cli("eval", "--samples", "samples_one.jsonl", "--dataset", "synthetic", "--dataset-path", "rows.jsonl",
                  "--tasks", "{first}", "--out", "ev_full", "--workers", "1"), check=subset_check, setup=seed_subset,
             expect="ok"),
        Case("eval-n-samples-0", "zero",
             _cli("eval", "--model", "model", "--dataset", "synthetic", "--dataset-path", "rows.jsonl",
                  "--n-samples", "0", "--out", "ev_n0"), ["n-samples"]),
        Case("eval-timeout-scale-0", "zero",
             _cli("eval", "--samples", "samples.jsonl", "--dataset", "synthetic", "--dataset-path", "rows.jsonl",
                  "--timeout-scale", "0", "--out", "ev_ts"), ["timeout"]),
        Case("eval-workers-neg", "negative number",
             _cli("eval", "--samples", "samples.jsonl", "--dataset", "synthetic", "--dataset-path", "rows.jsonl",
                  "--workers", "-1", "--out", "ev_w"), ["workers"]),
        Case("eval-dataset-dir", "folder given for a file",
             _cli("eval", "--samples", "samples.jsonl", "--dataset", "synthetic", "--dataset-path", "emptydir"),
             ["emptydir"]),
        Case("eval-dataset-garbage", "corrupt file",
             _cli("eval", "--samples", "he_samples.jsonl", "--dataset", "humaneval+", "--dataset-path",
                  "garbage.jsonl.gz"), ["garbage.jsonl.gz"]),
        Case("eval-rows-bad", "rows lacking a column",
             _cli("eval", "--samples", "samples.jsonl", "--dataset", "synthetic", "--dataset-path", "rows_bad.jsonl"),
             ["rows_bad.jsonl", "test_cases"]),
        Case("eval-model-missing", "missing folder",
             _cli("eval", "--model", "nope", "--dataset", "synthetic", "--dataset-path", "rows.jsonl"), ["nope"]),
        Case("train-missing", "missing file", _cli("train", "nope.yaml"), ["nope.yaml"]),
        Case("train-dir", "folder given for a file", _cli("train", "emptydir"), ["emptydir"]),
        Case("train-syntax", "corrupt file", _cli("train", "bad_syntax.yaml"), ["bad_syntax.yaml"]),
        Case("train-list", "wrong top-level type", _cli("train", "list.yaml"), ["list.yaml"]),
        Case("train-unknown-key", "unknown key", _cli("train", "unknown_key.yaml"), ["optimizer"]),
        Case("train-override-type", "wrong type in an override",
             _cli("train", "train.yaml", "optim.lr=abc", "run_dir=runs/o"), ["optim.lr", "override"]),
        Case("train-override-zero", "zero in an override",
             _cli("train", "train.yaml", "optim.steps=0", "run_dir=runs/o"), ["optim.steps"]),
        Case("train-override-unknown", "unknown key in an override",
             _cli("train", "train.yaml", "optim.lrr=1", "run_dir=runs/o"), ["lrr"]),
        Case("train-override-noeq", "override without '='", _cli("train", "train.yaml", "optim.lr"), ["optim.lr"]),
        Case("train-sft-missing", "missing file",
             _cli("train", "train_sft_missing.yaml", "run_dir=runs/s"), ["nope.jsonl"]),
        Case("train-init-missing", "missing folder",
             _cli("train", "train.yaml", "model.init_from=nope", "run_dir=runs/i"), ["nope"]),
        Case("train-resume-missing", "missing folder",
             _cli("train", "train.yaml", "resume=nope", "run_dir=runs/r"), ["nope"]),
        Case("train-changed-config", "resume under a changed config",
             _cli("train", "train.yaml", "run_dir=runs/changed", "optim.lr=0.01", "optim.steps=3"),
             ["optim.lr"], setup=seed_changed_run, check=changed_check),
        Case("train-failed-overwrites", "failed command into an old run",
             _cli("train", "train_sft_missing.yaml", "run_dir=runs/keep"), ["nope.jsonl"], setup=seed_failed_run,
             check=keep_check),
        Case("train-list-keys-head", "closed pipe", [], shell="{py} -m diffucoder.cli.main train --list-keys | head -2",
             expect="ok", check=lambda r: "unclear" if "Traceback" in r.stderr else None),
        Case("rl-missing", "missing file", _cli("rl", "nope.yaml"), ["nope.yaml"]),
        Case("rl-max-steps-type", "wrong type in an override", _cli("rl", "rl.yaml", "max_steps=two"),
             ["max_steps"]),
        Case("rl-unknown-key", "unknown key in an override", _cli("rl", "rl.yaml", "max_stepz=2"), ["max_stepz"]),
        Case("rl-override-noeq", "override without '='", _cli("rl", "rl.yaml", "beta"), ["beta"]),
        Case("rl-model-missing", "missing folder", _cli("rl", "rl.yaml", "model_name_or_path=nope"), ["nope"]),
        Case("rl-data-missing", "missing file", _cli("rl", "rl.yaml", "dataset_path=nope.jsonl"), ["nope.jsonl"]),
        Case("rl-data-bad", "corrupt line (skipped, with a warning)", _cli("rl", "rl.yaml", "dataset_path=rl_bad.jsonl"),
             expect="ok", check=warned("rl_bad.jsonl")),
        Case("rl-beta-neg", "negative number", _cli("rl", "rl.yaml", "beta=-1"), ["beta"]),
        Case("rl-list-keys", "missing convenience", _cli("rl", "--list-keys"), expect="ok"),
        Case("rl-changed-config", "resume under a changed config",
             _cli("rl", "rl.yaml", "output_dir=runs/rl_changed", "max_steps=3", "learning_rate=0.01",
                  "resume_from_checkpoint=latest"), ["learning_rate"], setup=seed_rl_changed, check=changed_check),
        Case("demo-unknown-set", "unknown key", _cli("demo", "--quick", "--set", "nonsense=1"), ["nonsense"]),
        Case("demo-set-type", "wrong type", _cli("demo", "--quick", "--set", "sft_steps=abc"), ["sft_steps"]),
        Case("demo-set-neg", "negative number",
             _cli("demo", "--quick", "--run-dir", "runs/dneg", "--set", "sft_steps=-5", "--stop-after", "tokenizer"),
             ["sft_steps"]),
        Case("demo-stop-after", "unknown choice", _cli("demo", "--quick", "--stop-after", "bogus"), ["bogus"]),
        Case("demo-run-dir-file", "file given for a folder", _cli("demo", "--quick", "--run-dir", "prompts.txt"),
             ["prompts.txt"]),
        Case("demo-changed", "resume under changed settings",
             _cli("demo", "--quick", "--run-dir", "runs/demo", "--stop-after", "tokenizer", "--no-progress",
                  "--set", "vocab_size=320", "--set", "tokenizer_stdlib_files=5"), ["vocab_size"], setup=seed_demo),
    ]
    return c


def run_case(case: Case, d: Path) -> dict:
    if case.setup is not None:
        case.setup()
    t0 = time.time()
    if case.shell is not None:
        r = subprocess.run(case.shell.format(py=sys.executable), shell=True, cwd=d, capture_output=True, text=True,
                           timeout=case.timeout, executable="/bin/bash")
    else:
        argv = [a.replace("{first}", _first_row(d)) for a in case.argv]
        r = subprocess.run(argv, cwd=d, capture_output=True, text=True, timeout=case.timeout)
    verdict, line = classify(case, r)
    return {"id": case.id, "what": case.what, "verdict": verdict, "rc": r.returncode, "message": line.strip()[:160],
            "seconds": round(time.time() - t0, 1), "stderr_tail": r.stderr[-600:]}


def _first_row(d: Path) -> str:
    return json.loads((d / "rows.jsonl").read_text().splitlines()[0])["task_id"]


def full_disk_case(d: Path) -> dict:
    """Resume a tiny run on a tmpfs too small for the next checkpoint: a one-line error, the old checkpoint
    intact."""
    case = {"id": "train-disk-full", "what": "no space left on device"}
    if os.geteuid() != 0:
        return {**case, "verdict": "skipped (not root)", "rc": None, "message": ""}
    src = d / "runs" / "disk_src"
    subprocess.run(_cli("train", "train.yaml", f"run_dir={src}", "optim.steps=2", "checkpoint.keep_last=1"), cwd=d,
                   capture_output=True, timeout=600)
    size = sum(p.stat().st_size for p in src.rglob("*") if p.is_file())
    ckpt = next((src / "checkpoints").iterdir())
    ck_size = sum(p.stat().st_size for p in ckpt.rglob("*") if p.is_file())
    mnt = d / "small"
    mnt.mkdir(exist_ok=True)
    budget = size + ck_size // 2 + 64 * 1024
    m = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={budget}", "tmpfs", str(mnt)], capture_output=True)
    if m.returncode != 0:
        return {**case, "verdict": "skipped (cannot mount tmpfs)", "rc": None, "message": m.stderr.decode()[:100]}
    try:
        shutil.copytree(src, mnt / "run")
        r = subprocess.run(_cli("train", "train.yaml", f"run_dir={mnt / 'run'}", "optim.steps=4",
                                "checkpoint.keep_last=2", "--allow-config-change"), cwd=d, capture_output=True,
                           text=True, timeout=600)
        if "unrecognized arguments: --allow-config-change" in r.stderr:  # before that flag existed
            r = subprocess.run(_cli("train", "train.yaml", f"run_dir={mnt / 'run'}", "optim.steps=4",
                                    "checkpoint.keep_last=2"), cwd=d, capture_output=True, text=True, timeout=600)
        kept = (mnt / "run" / "checkpoints" / ckpt.name / "trainer_state.pt").is_file()
        c = Case("train-disk-full", "", [], ["no space left"])
        verdict, line = classify(c, r)
        if not kept:
            verdict = "lost data"
        return {**case, "verdict": verdict, "rc": r.returncode, "message": line.strip()[:160],
                "stderr_tail": r.stderr[-600:], "checkpoint_kept": kept}
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


def ctrl_c_case(d: Path) -> dict:
    """SIGINT to a training run after its first checkpoint: a short message, exit 130, the checkpoint intact."""
    run = d / "runs" / "ctrlc"
    p = subprocess.Popen(_cli("train", "train.yaml", f"run_dir={run}", "optim.steps=100000", "checkpoint.every=5"),
                         cwd=d, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and not list((run / "checkpoints").glob("step_*")) and p.poll() is None:
        time.sleep(0.5)
    time.sleep(1.0)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=120)
    from diffucoder.training.checkpoint import latest_checkpoint, load_checkpoint

    ok = True
    try:
        load_checkpoint(latest_checkpoint(run))
    except Exception:
        ok = False
    tb = "Traceback" in err
    verdict = "clear" if (p.returncode == 130 and not tb and ok) else ("lost data" if not ok else "buried")
    return {"id": "train-ctrl-c", "what": "Ctrl-C", "verdict": verdict, "rc": p.returncode,
            "message": (err.strip().splitlines() or [""])[-1][:160], "stderr_tail": err[-600:]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=None, help="run only cases whose id starts with this")
    ap.add_argument("--json", type=Path, default=None, help="also write the raw outcomes here")
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder (printed)")
    ap.add_argument("--evalplus-dir", type=Path, default=SHARED,
                    help="where to copy HumanEvalPlus-v0.1.10.jsonl.gz from (default ../shared/data/evalplus, else "
                         "the copy shipped in the package)")
    args = ap.parse_args()
    d = Path(tempfile.mkdtemp(prefix="bad_inputs_"))
    results = []
    try:
        build_fixtures(d, args.evalplus_dir)
        for case in cases(d):
            if args.only and not case.id.startswith(args.only):
                continue
            res = run_case(case, d)
            print(f"{res['verdict']:15s} {res['id']:28s} {res['message'][:110]}", file=sys.stderr, flush=True)
            results.append(res)
        for extra in (full_disk_case, ctrl_c_case):
            name = "train-disk-full" if extra is full_disk_case else "train-ctrl-c"
            if args.only and not name.startswith(args.only):
                continue
            res = extra(d)
            print(f"{res['verdict']:15s} {res['id']:28s} {res['message'][:110]}", file=sys.stderr, flush=True)
            results.append(res)
    finally:
        if args.keep:
            print(f"scratch folder: {d}", file=sys.stderr)
        else:
            shutil.rmtree(d, ignore_errors=True)
    print("| case | input class | outcome | message (last line) |")
    print("|---|---|---|---|")
    for r in results:
        msg = r["message"].replace("|", "\\|")
        print(f"| {r['id']} | {r['what']} | {r['verdict']} | `{msg}` |")
    counts: dict[str, int] = {}
    for r in results:
        counts[r["verdict"]] = counts.get(r["verdict"], 0) + 1
    print("\n" + ", ".join(f"{v}: {n}" for v, n in sorted(counts.items())))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
