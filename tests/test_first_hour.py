"""What a new user meets: one-line errors from the command line, honest resumes, safe writes, the flags.

Most cases run the console script in-process (``main([...])``) on a tiny checkpoint; each asserts the exit
status, that there is no traceback, and that the message names the file / argument / key and the problem.
``benchmarks/bad_inputs.py`` runs the same kind of cases (and more) as subprocesses and tabulates them.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from diffucoder.cli.main import build_parser, main

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, tiny_tokenizer):
    import torch

    from diffucoder.model import DreamConfig, DreamModel

    d = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(0)  # test-only: model init
    DreamModel(DreamConfig.preset("tiny", tokenizer=tiny_tokenizer)).save_pretrained(d / "model",
                                                                                      tokenizer=tiny_tokenizer)
    return d / "model"


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main([*map(str, argv)])
    out, err = capsys.readouterr()
    return rc, out, err


def one_line_error(rc: int, err: str, *names: str) -> str:
    """The ``error:`` line of a clean failure (exit 2, no traceback) that names every one of ``names``."""
    assert rc == 2, err
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:") or ": error:" in ln]
    assert lines, err
    for n in names:
        assert n.lower() in lines[-1].lower(), (n, lines[-1])
    return lines[-1]


# -- the error boundary ----------------------------------------------------------------------------------------
def test_project_errors_are_one_line_and_debug_shows_the_traceback(capsys, tmp_path):
    rc, _, err = cli(capsys, "info", tmp_path / "nope")
    one_line_error(rc, err, "nope", "no such checkpoint folder")
    rc, _, err = cli(capsys, "info", tmp_path / "nope", "--debug")
    assert rc == 2 and "Traceback" in err and "error: " in err
    rc, _, err = cli(capsys, "--debug", "info", tmp_path / "nope")
    assert rc == 2 and "Traceback" in err


def test_a_bug_keeps_its_traceback(monkeypatch):
    import diffucoder.cli.info as info

    def boom(args):
        raise KeyError("a bug")
    monkeypatch.setattr(info, "run", boom)
    with pytest.raises(KeyError):
        main(["info", "x"])


def test_ctrl_c_is_exit_130_with_what_is_kept(monkeypatch, capsys):
    import diffucoder.cli.train as train_cli

    def interrupted(args):
        raise KeyboardInterrupt
    monkeypatch.setattr(train_cli, "run", interrupted)
    rc, _, err = cli(capsys, "train")
    assert rc == 130 and err.strip().startswith("interrupted (the last complete checkpoint is kept")


def test_list_keys_into_a_closed_pipe_is_quiet():
    r = subprocess.run(f"{sys.executable} -m diffucoder.cli.main train --list-keys | head -2", shell=True,
                       capture_output=True, text=True, timeout=120, executable="/bin/bash")
    assert len(r.stdout.splitlines()) == 2 and "Traceback" not in r.stderr and "BrokenPipe" not in r.stderr


def test_every_flag_of_every_command_has_help():
    from diffucoder.cli.main import COMMANDS

    missing = []
    for name in COMMANDS:
        parser = build_parser([name])
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[name]
        parsers = [(name, sub)]
        for a in sub._actions:  # nested sub-commands (tokenizer train / encode)
            if isinstance(a, argparse._SubParsersAction):
                parsers += [(f"{name} {n}", p) for n, p in a.choices.items()]
        for label, p in parsers:
            for a in p._actions:
                if isinstance(a, (argparse._HelpAction, argparse._SubParsersAction)):
                    continue
                if not (a.help and a.help.strip()):
                    missing.append(f"{label} {a.option_strings or a.dest}")
    assert not missing, missing


def test_device_and_threads_flags_exist_where_a_model_runs():
    for name in ("generate", "analyze", "eval"):
        p = build_parser([name])
        sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction)).choices[name]
        flags = {s for a in sub._actions for s in a.option_strings}
        assert {"--device", "--threads"} <= flags, name


# -- generate ------------------------------------------------------------------------------------------------
def test_generate_bad_inputs_name_the_flag_or_file(capsys, tmp_path, ckpt):
    rc, _, err = cli(capsys, "generate", "--model", tmp_path / "nowhere", "--prompt", "x")
    line = one_line_error(rc, err, "nowhere", "no such checkpoint folder")
    assert "tokenizer" not in line  # the folder is checked before its tokenizer
    rc = main(["generate", "--model", str(ckpt), "--prompt", "x", "--max-new-tokens", "0"])
    assert rc == 2 and "argument --max-new-tokens: must be >= 1, got 0" in capsys.readouterr().err
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("d\xe9finir".encode("latin-1"))
    rc, _, err = cli(capsys, "generate", "--model", ckpt, "--prompt-file", bad)
    one_line_error(rc, err, "latin1.txt", "not UTF-8", "offset 1")
    rc, _, err = cli(capsys, "generate", "--model", ckpt, "--prompt-file", tmp_path)
    one_line_error(rc, err, str(tmp_path), "is a folder")
    (tmp_path / "empty.txt").write_text("  \n")
    rc, _, err = cli(capsys, "generate", "--model", ckpt, "--prompt-file", tmp_path / "empty.txt")
    one_line_error(rc, err, "empty.txt", "empty")
    rc, _, err = cli(capsys, "generate", "--model", ckpt, "--prompt", "x", "--max-new-tokens", "8",
                     "--block-length", "3")
    one_line_error(rc, err, "--block-length", "multiple")
    rc, _, err = cli(capsys, "generate", "--model", ckpt, "--prompt", "x", "--device", "cuda:7")
    if not __import__("torch").cuda.is_available():
        one_line_error(rc, err, "--device cuda:7", "not available")
    (tmp_path / "notok").mkdir()
    for f in ("config.json", "model.safetensors"):
        (tmp_path / "notok" / f).write_bytes((ckpt / f).read_bytes())
    rc, _, err = cli(capsys, "generate", "--model", tmp_path / "notok", "--prompt", "x")
    one_line_error(rc, err, "notok", "no tokenizer.json")


def test_generate_defaults_to_one_thread_for_a_small_model(capsys, ckpt):
    import torch

    torch.set_num_threads(2)
    try:
        rc, out, err = cli(capsys, "generate", "--model", ckpt, "--prompt", "def f", "--max-new-tokens", "4")
        assert rc == 0, err
        assert torch.get_num_threads() == 1
        rc, _, err = cli(capsys, "generate", "--model", ckpt, "--prompt", "def f", "--max-new-tokens", "4",
                         "--threads", "2", "--device", "cpu")
        assert rc == 0 and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(2)


def test_default_threads_rule():
    from diffucoder.runtime import SMALL_MODEL_PARAMS, default_threads

    assert default_threads(5_000_000) == 1 and default_threads(SMALL_MODEL_PARAMS) is None


# -- info and config.json -------------------------------------------------------------------------------------
def test_a_config_without_a_shape_key_is_an_error_naming_it(capsys, tmp_path, ckpt):
    import shutil

    from diffucoder.model import CheckpointError, DreamModel
    from diffucoder.model.checkpoint import read_config

    for key in ("hidden_size", "num_key_value_heads", "vocab_size"):
        d = tmp_path / key
        shutil.copytree(ckpt, d)
        cfg = json.loads((d / "config.json").read_text())
        del cfg[key]
        (d / "config.json").write_text(json.dumps(cfg))
        rc, _, err = cli(capsys, "info", d)
        one_line_error(rc, err, f"{d / 'config.json'}", f"lacks {key}")
        with pytest.raises(CheckpointError, match=f"lacks {key}"):
            DreamModel.from_pretrained(d)
    # a missing rope_theta means what it means in the reference code (10000), not the 7B's 1e6
    d = tmp_path / "rope"
    shutil.copytree(ckpt, d)
    cfg = json.loads((d / "config.json").read_text())
    del cfg["rope_theta"]
    (d / "config.json").write_text(json.dumps(cfg))
    assert read_config(d).rope_theta == 10000.0
    rc, _, err = cli(capsys, "info", ckpt / "config.json")
    one_line_error(rc, err, "is a file, expected a checkpoint folder")


# -- train: resume rules -------------------------------------------------------------------------------------
@pytest.fixture
def train_yaml(tmp_path, tiny_tokenizer):
    tiny_tokenizer.save_pretrained(tmp_path / "tok")
    (tmp_path / "corpus.txt").write_text("def f(x):\n    return x + 1\n\n" * 300)
    cfg = {
        "kind": "train", "task": "pretrain", "run_dir": str(tmp_path / "run"), "seed": 0,
        "model": {"preset": "tiny"}, "tokenizer": {"path": str(tmp_path / "tok")},
        "data": {"corpus": [str(tmp_path / "corpus.txt")], "seq_len": 32, "heldout_fraction": 0.1},
        "optim": {"steps": 2, "global_batch_size": 4, "micro_batch_size": 4, "lr": 1e-3, "warmup_steps": 1},
        "eval": {"every": 0, "num_sequences": 4, "batch_size": 4}, "checkpoint": {"every": 1, "keep_last": 2},
        "logging": {"every": 1, "progress": False}, "runtime": {"device": "cpu", "threads": 1},
    }
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_train_refuses_a_changed_config_naming_the_keys_then_allows_it_explicitly(capsys, tmp_path, train_yaml):
    run = tmp_path / "run"
    rc, out, err = cli(capsys, "train", train_yaml)
    assert rc == 0, err
    saved = (run / "config.yaml").read_bytes()
    metrics = (run / "metrics.jsonl").read_bytes()
    rc, _, err = cli(capsys, "train", train_yaml, "optim.lr=0.01", "optim.steps=3")
    line = one_line_error(rc, err, str(run), "optim.lr: 0.001 -> 0.01", "optim.steps: 2 -> 3",
                          "--allow-config-change")
    assert "other settings" in line
    assert (run / "config.yaml").read_bytes() == saved and (run / "metrics.jsonl").read_bytes() == metrics
    # keys that cannot change the result (logging, threads, how often to save) are not a change
    rc, _, err = cli(capsys, "train", train_yaml, "logging.every=5", "runtime.threads=2", "checkpoint.keep_last=3")
    assert rc == 0 and "already at step 2 of 2" in err, err
    rc, _, err = cli(capsys, "train", train_yaml, "optim.lr=0.01", "optim.steps=3", "--allow-config-change")
    assert rc == 0, err
    assert "resuming from step 2 of 3" in err and "optim.lr: 0.001 -> 0.01" in err
    log = [json.loads(x) for x in (run / "config_changes.jsonl").read_text().splitlines()]
    assert log[-1]["changes"]["optim.lr"] == {"old": 0.001, "new": 0.01}
    assert yaml.safe_load((run / "config.yaml").read_text())["optim"]["lr"] == 0.01
    # things the resumed weights were made with cannot change even when allowed
    rc, _, err = cli(capsys, "train", train_yaml, "optim.lr=0.01", "optim.steps=4", "model.preset=5m",
                     "--allow-config-change")
    one_line_error(rc, err, "model.preset", "cannot continue")


def test_a_failed_command_leaves_the_old_run_untouched(capsys, tmp_path, train_yaml):
    run = tmp_path / "run"
    assert cli(capsys, "train", train_yaml)[0] == 0
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    for bad in (["task=sft", "sft.files=[nope.jsonl]"], ["model.init_from=nowhere"], ["resume=nowhere"],
                ["tokenizer.path=nowhere"], ["data.corpus=[nowhere.txt]"]):
        rc, _, err = cli(capsys, "train", train_yaml, *bad, "--allow-config-change")
        one_line_error(rc, err, "nowhere" if "nope.jsonl" not in bad[-1] else "nope.jsonl")
    after = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert after == before


def test_after_an_attempt_that_trained_nothing_a_new_config_starts_over(capsys, tmp_path, train_yaml,
                                                                              monkeypatch):
    import diffucoder.training.loop as loop

    run = tmp_path / "run"

    def fail(*a, **k):
        raise loop.ConfigError("simulated failure after the tokenizer was saved")
    monkeypatch.setattr(loop, "build_model", fail)
    rc, _, err = cli(capsys, "train", train_yaml, "tokenizer.path=null", "tokenizer.vocab_size=300")
    one_line_error(rc, err, "simulated")
    assert (run / "tokenizer" / "tokenizer.json").is_file() and not (run / "checkpoints").exists()
    monkeypatch.undo()
    # the failed attempt trained nothing: the fixed command starts over without a flag, on its own tokenizer
    rc, _, err = cli(capsys, "train", train_yaml)
    assert rc == 0, err
    assert "fresh start" in err and "tokenizer.vocab_size: 300 -> 8192" in err
    from diffucoder.tokenizer import load_tokenizer

    assert load_tokenizer(run / "tokenizer").vocab_size == load_tokenizer(tmp_path / "tok").vocab_size


def test_a_full_disk_is_one_line_and_keeps_the_last_checkpoint(capsys, tmp_path, train_yaml, monkeypatch):
    """ENOSPC injected the way torch reports it (a RuntimeError that does not say why) on a device with no
    room: one line naming the folder, the last checkpoint intact and resumable."""
    import torch

    import diffucoder.errors as errors
    import diffucoder.training.checkpoint as ckpt_mod
    from diffucoder.training.checkpoint import latest_checkpoint, load_checkpoint

    run = tmp_path / "run"
    assert cli(capsys, "train", train_yaml)[0] == 0
    real_save = torch.save

    def full_disk_save(obj, f, *a, **k):
        if str(f).endswith("trainer_state.pt"):
            monkeypatch.setattr(errors, "free_bytes", lambda path: 0)
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 137920 vs 137808")
        return real_save(obj, f, *a, **k)
    monkeypatch.setattr(ckpt_mod.torch, "save", full_disk_save)
    rc, _, err = cli(capsys, "train", train_yaml, "optim.steps=4", "--allow-config-change")
    line = one_line_error(rc, err, "no space left on device", "step_00000002", "intact")
    assert "inline_container" not in line
    monkeypatch.undo()
    last = latest_checkpoint(run)
    assert last.name == "step_00000002" and load_checkpoint(last).step == 2
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".")], "no partial folder left"
    rc, _, err = cli(capsys, "train", train_yaml, "optim.steps=4", "--allow-config-change")
    assert rc == 0 and "resuming from step 2 of 4" in err


def test_a_real_full_tmpfs(tmp_path, train_yaml):
    """The same on a real 2.6 MB tmpfs (root only; skipped where mount is not allowed)."""
    import shutil

    src = tmp_path / "run"
    subprocess.run([sys.executable, "-m", "diffucoder.cli.main", "train", str(train_yaml), "checkpoint.keep_last=1"],
                   check=True, capture_output=True, timeout=300)
    size = sum(p.stat().st_size for p in src.rglob("*") if p.is_file())
    ck = sum(p.stat().st_size for p in (src / "checkpoints").rglob("*") if p.is_file())
    mnt = tmp_path / "small"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size + ck // 2 + 65536}", "tmpfs",
                                            str(mnt)], capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        shutil.copytree(src, mnt / "run")
        r = subprocess.run([sys.executable, "-m", "diffucoder.cli.main", "train", str(train_yaml),
                            f"run_dir={mnt / 'run'}", "optim.steps=5", "checkpoint.keep_last=2",
                            "--allow-config-change"], capture_output=True, text=True, timeout=300)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert "no space left on device" in r.stderr.splitlines()[-1]
        from diffucoder.training.checkpoint import latest_checkpoint, load_checkpoint

        assert load_checkpoint(latest_checkpoint(mnt / "run")).step == 2
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


def test_sigint_during_training_keeps_a_resumable_checkpoint(tmp_path, train_yaml):
    import time

    from diffucoder.training.checkpoint import latest_checkpoint, load_checkpoint

    run = tmp_path / "run"
    # the child gets SIGINT's default disposition even if this process inherited it ignored (a background job of
    # a non-interactive shell); Python turns an ignored SIGINT into no KeyboardInterrupt at all
    p = subprocess.Popen([sys.executable, "-m", "diffucoder.cli.main", "train", str(train_yaml), "optim.steps=100000"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 240
    while time.time() < deadline and p.poll() is None and not list((run / "checkpoints").glob("step_*")):
        time.sleep(0.2)
    p.send_signal(signal.SIGINT)
    try:
        _, err = p.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        status = Path(f"/proc/{p.pid}/status")
        ignored = [line for line in status.read_text().splitlines() if line.startswith("SigIgn")] if status.exists() else []
        p.kill()
        _, err = p.communicate()
        pytest.fail(f"train did not stop within 120 s of SIGINT ({ignored}); stderr: {err[-2000:]}")
    assert p.returncode == 130 and "Traceback" not in err and "interrupted" in err, err
    assert load_checkpoint(latest_checkpoint(run)).step >= 1


# -- rl ---------------------------------------------------------------------------------------------------------
def test_rl_type_errors_and_list_keys(capsys, tmp_path):
    rc, _, err = cli(capsys, "rl", REPO / "configs" / "rl_synthetic_cpu.yaml", "max_steps=two")
    one_line_error(rc, err, "max_steps", "expected an integer", "override max_steps=two")
    rc, out, _ = cli(capsys, "rl", "--list-keys")
    assert rc == 0 and "estimator = 'coupled'" in out and "num_generations = 10" in out
    rc, _, err = cli(capsys, "rl")
    one_line_error(rc, err, "config file")


# -- eval -----------------------------------------------------------------------------------------------------
def test_shipped_evalplus_files_match_their_release_digests():
    import hashlib

    from diffucoder.evaluation.datasets import DATA_DIR, RELEASES

    for rel in RELEASES.values():
        data = (DATA_DIR / rel.filename).read_bytes()
        assert hashlib.sha256(data).hexdigest() == rel.sha256, rel.filename
    assert "Apache License" in (DATA_DIR / "LICENSE-Apache-2.0.txt").read_text()
    readme = (DATA_DIR / "README.md").read_text()
    assert all(rel.sha256 in readme for rel in RELEASES.values())
    # package data: pip install carries them
    import tomllib

    pkg = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    patterns = pkg["diffucoder.evaluation"]
    for name in [r.filename for r in RELEASES.values()] + ["LICENSE-Apache-2.0.txt", "README.md"]:
        assert any(Path("data", name).match(p) for p in patterns), name


def test_eval_humaneval_plus_from_a_clean_checkout(capsys, tmp_path):
    """No ../shared: the shipped HumanEval+ release is the default, checked by hash; canonical solutions pass."""
    import gzip

    from diffucoder.evaluation.datasets import DATA_DIR

    with gzip.open(DATA_DIR / "HumanEvalPlus-v0.1.10.jsonl.gz", "rt") as f:
        rows = [json.loads(x) for x in f][:2]
    samples = tmp_path / "s.jsonl"
    samples.write_text("".join(json.dumps({"task_id": r["task_id"], "solution": r["prompt"] + r["canonical_solution"]})
                               + "\n" for r in rows))
    rc, out, err = cli(capsys, "eval", "--samples", samples, "--dataset", "humaneval+", "--tasks",
                       ",".join(r["task_id"] for r in rows), "--out", tmp_path / "ev", "--workers", "1")
    assert rc == 0, err
    assert "humaneval+ v0.1.10" in out and "humaneval+ plus: pass@1 100.0" in out
    res = json.loads(next((tmp_path / "ev").glob("results.tasks-*.json")).read_text())
    assert res["dataset_release"] == "humaneval+ v0.1.10" and res["subset"] is True
    assert not (tmp_path / "ev" / "results.json").exists()


def test_a_damaged_shipped_file_or_the_wrong_family_is_refused(tmp_path):
    import shutil
    import warnings

    from diffucoder.errors import DatasetError
    from diffucoder.evaluation.datasets import DATA_DIR, RELEASES, load_evalplus

    he = tmp_path / "he.jsonl.gz"
    shutil.copy(DATA_DIR / RELEASES["humaneval+"].filename, he)
    with pytest.raises(DatasetError, match=r"he.jsonl.gz: this is the humaneval\+ v0.1.10 release, not an MBPP\+"):
        load_evalplus(he, "mbpp", task_ids=["Mbpp/2"], progress=False)
    import gzip

    with gzip.open(he, "rt") as f:
        rows = [json.loads(x) for x in f][:3]
    edited = tmp_path / "edited.jsonl"
    edited.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DatasetError, match="does not match the EvalPlus humaneval\\+ v0.1.10 release"):
        load_evalplus(edited, "humaneval", expect=RELEASES["humaneval+"], progress=False)
    with pytest.raises(DatasetError, match=r"edited.jsonl: task ids like 'HumanEval/0' are not Mbpp/"):
        load_evalplus(edited, "mbpp", progress=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = load_evalplus(edited, "humaneval", task_ids=["HumanEval/0"], progress=False)
    assert ds.release == "unknown release" and any("not a known EvalPlus release" in str(w.message) for w in caught)
    (tmp_path / "garbage.jsonl.gz").write_bytes(b"not gzip")
    with pytest.raises(DatasetError, match="garbage.jsonl.gz: not a readable gzip file"):
        load_evalplus(tmp_path / "garbage.jsonl.gz", "humaneval", progress=False)


@pytest.fixture
def synthetic_rows(tmp_path):
    from diffucoder.tasks import dataset, write_jsonl

    rows = dataset("test", n=3, seed=0)
    write_jsonl(rows, tmp_path / "rows.jsonl")
    write_jsonl([{"task_id": r["task_id"], "solution": r["solution"]} for r in rows], tmp_path / "samples.jsonl")
    return rows


def test_eval_subset_never_replaces_the_full_results_and_large_k_warns(capsys, tmp_path, synthetic_rows):
    common = ["--dataset", "synthetic", "--dataset-path", tmp_path / "rows.jsonl", "--out", tmp_path / "ev",
              "--workers", "1"]
    rc, _, err = cli(capsys, "eval", "--samples", tmp_path / "samples.jsonl", *common)
    assert rc == 0, err
    full = (tmp_path / "ev" / "results.json").read_bytes()
    rc, out, err = cli(capsys, "eval", "--samples", tmp_path / "samples.jsonl", *common, "--tasks",
                       synthetic_rows[0]["task_id"], "--k", "1,5")
    assert rc == 0, err
    assert (tmp_path / "ev" / "results.json").read_bytes() == full
    sub = json.loads(next((tmp_path / "ev").glob("results.tasks-*.json")).read_text())
    assert sub["n_tasks"] == 1 and sub["dropped_ks"] == [5]
    assert "warning: pass@k needs at least k samples per task and the fewest here is 1: dropped k=5 (kept: k=1)" \
        in err


def test_eval_bad_inputs(capsys, tmp_path, synthetic_rows):
    common = ["--dataset", "synthetic", "--dataset-path", tmp_path / "rows.jsonl", "--out", tmp_path / "ev"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"task_id": "a", "solution": "x"}\n{"task_id": ')  # a torn last line: the user's, not ours
    rc, _, err = cli(capsys, "eval", "--samples", bad, *common)
    one_line_error(rc, err, "bad.jsonl:2", "not valid JSON")
    assert bad.read_text().endswith('{"task_id": '), "the user's samples file is never truncated"
    rc, _, err = cli(capsys, "eval", "--samples", tmp_path / "samples.jsonl", *common, "--k", "1,a")
    one_line_error(rc, err, "--k", "'1,a'")
    rc, _, err = cli(capsys, "eval", "--samples", tmp_path / "samples.jsonl", *common, "--tasks", "nope")
    one_line_error(rc, err, "unknown task ids", "nope")
    rc, _, err = cli(capsys, "eval", "--samples", tmp_path / "samples.jsonl", "--dataset", "synthetic",
                     "--dataset-path", tmp_path)
    one_line_error(rc, err, str(tmp_path), "is a folder")
    rc, _, err = cli(capsys, "eval", "--model", tmp_path / "nowhere", *common)
    one_line_error(rc, err, "nowhere", "no such checkpoint folder")


# -- analyze, tokenizer, demo -----------------------------------------------------------------------------------
def test_analyze_and_tokenizer_bad_inputs(capsys, tmp_path, ckpt):
    (tmp_path / "empty.txt").write_text("")
    rc, _, err = cli(capsys, "analyze", "--model", ckpt, "--prompts", tmp_path / "empty.txt", "--out", tmp_path / "a")
    one_line_error(rc, err, "empty.txt", "no prompt")
    rc, _, err = cli(capsys, "analyze", "--model", tmp_path / "nowhere", "--prompts", "synthetic")
    one_line_error(rc, err, "nowhere", "no such checkpoint folder")
    rc = main(["analyze", "--model", str(ckpt), "--prompts", "synthetic", "--max-k", "0"])
    assert rc == 2 and "argument --max-k: must be >= 1, got 0" in capsys.readouterr().err
    rc, _, err = cli(capsys, "tokenizer", "train", "--out", tmp_path / "t", "--vocab-size", "10", "--files",
                     tmp_path / "empty.txt")
    one_line_error(rc, err, "--vocab-size", "at least")
    rc, _, err = cli(capsys, "tokenizer", "train", "--out", tmp_path / "empty.txt", "--files", tmp_path / "empty.txt")
    one_line_error(rc, err, "empty.txt", "not a folder")
    rc, _, err = cli(capsys, "tokenizer", "encode", tmp_path / "nowhere", "x")
    one_line_error(rc, err, "nowhere", "no such tokenizer")


def test_demo_bad_inputs(capsys, tmp_path):
    rc, _, err = cli(capsys, "demo", "--quick", "--set", "sft_steps=-5", "--run-dir", tmp_path / "d")
    one_line_error(rc, err, "sft_steps", ">= 1")
    assert not (tmp_path / "d").exists(), "nothing written for a refused command"
    (tmp_path / "f").write_text("")
    rc, _, err = cli(capsys, "demo", "--quick", "--run-dir", tmp_path / "f")
    one_line_error(rc, err, str(tmp_path / "f"), "not a folder")


# -- shipped configs, the import graph ------------------------------------------------------------------------
def test_cpu_training_configs_use_fp32():
    for path in sorted((REPO / "configs").glob("*.yaml")):
        cfg = yaml.safe_load(path.read_text())
        if cfg.get("kind") == "train" and cfg.get("runtime", {}).get("device") == "cpu":
            assert cfg["runtime"].get("precision", "fp32") == "fp32", path.name


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


def test_demo_report_does_not_import_the_demo_and_nothing_imports_cli():
    pkg = REPO / "diffucoder"
    assert not {m for m in _imports(pkg / "demo_report.py") if m == "diffucoder.demo"}
    for path in pkg.rglob("*.py"):
        if "cli" in path.relative_to(pkg).parts:
            continue
        bad = {m for m in _imports(path) if m == "diffucoder.cli" or m.startswith("diffucoder.cli.")}
        assert not bad, (path, bad)


def test_config_changes_flatten_ignore_and_defaults():
    from diffucoder.rundir import Change, config_changes

    old = {"optim": {"lr": 1e-3, "steps": 2}, "logging": {"every": 1}, "tiers": ("easy",)}
    new = {"optim": {"lr": 1e-2, "steps": 2}, "logging": {"every": 5}, "tiers": ["easy"], "added": 0}
    assert config_changes(old, new, ignore=("logging.*",)) == [Change("added", "<unset>", 0),
                                                              Change("optim.lr", 1e-3, 1e-2)]
    # a key an older version did not write counts only when the new value is not its default
    assert config_changes(old, new, ignore=("logging.*",), defaults={"added": 0}) == [Change("optim.lr", 1e-3, 1e-2)]
