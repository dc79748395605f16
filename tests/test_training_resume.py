"""Exact resume: a run killed with SIGKILL and resumed ends with the same parameters as an uninterrupted run.

Both runs are real ``diffucoder train`` subprocesses (CPU, one thread each, same seed); the first is killed
with SIGKILL as soon as its second checkpoint appears, then the same command is run again and resumes.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from diffucoder.model import DreamModel

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["data.max_documents=12", "data.seq_len=32", "optim.global_batch_size=8", "optim.micro_batch_size=4",
        "optim.steps=24", "optim.warmup_steps=3", "checkpoint.every=4", "checkpoint.keep_last=2", "eval.every=10",
        "eval.num_sequences=4", "logging.every=1", "logging.progress=false", "runtime.threads=1",
        "diffusion.t_sampling=stratified", "diffusion.clean_prefix_prob=0.3"]


def command(run_dir: Path, tok: Path) -> list[str]:
    return [sys.executable, "-m", "diffucoder.cli.main", "train", *ARGS, f"run_dir={run_dir}",
            f"tokenizer.path={tok}"]


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    from diffucoder.data.packing import load_texts
    from diffucoder.tokenizer import train_tokenizer

    d = tmp_path_factory.mktemp("tok")
    train_tokenizer(load_texts(["stdlib"], max_documents=12), vocab_size=600).save_pretrained(d)
    return d


@pytest.mark.timeout(240)
def test_sigkill_then_resume_matches_uninterrupted(tmp_path, tok):
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    full = subprocess.Popen(command(ref, tok), env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    proc = subprocess.Popen(command(killed, tok), env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 180
    while not (killed / "checkpoints" / "step_00000008").is_dir():
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (killed / "final").exists(), "the run finished before it could be killed"
    steps_before = [json.loads(x)["step"] for x in (killed / "metrics.jsonl").read_text().splitlines()]

    resumed = subprocess.run(command(killed, tok), env=env(), capture_output=True, text=True, timeout=180)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert full.wait(timeout=180) == 0, full.stderr.read().decode()[-2000:]

    rows = [json.loads(x) for x in (killed / "metrics.jsonl").read_text().splitlines()]
    resume_rows = [r for r in rows if r.get("event") == "resume"]
    assert len(resume_rows) == 1 and resume_rows[0]["step"] >= 8
    assert max(steps_before) >= resume_rows[0]["step"]
    # the metrics log has each training step exactly once, as the uninterrupted run's
    ref_rows = [json.loads(x) for x in (ref / "metrics.jsonl").read_text().splitlines()]
    losses = {r["step"]: r["loss"] for r in rows if "loss" in r}
    ref_losses = {r["step"]: r["loss"] for r in ref_rows if "loss" in r}
    assert sorted(losses) == list(range(1, 25))
    assert losses == ref_losses

    a = DreamModel.from_pretrained(ref / "final").state_dict()
    b = DreamModel.from_pretrained(killed / "final").state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after resume"
    # at most keep_last complete checkpoints, no temporary leftovers
    names = sorted(p.name for p in (killed / "checkpoints").iterdir())
    assert len(names) == 2 and all(n.startswith("step_") for n in names)
