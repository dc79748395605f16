"""The trainer's CLI and its torchrun path (2 CPU processes, gloo): both ranks end with identical weights."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

REWARD_MODULE = '''
def length_reward(completions, **kw):
    return [min(len(c), 40) / 40 for c in completions]
'''


@pytest.fixture(scope="module")
def tiny_run_inputs(tmp_path_factory):
    from diffucoder.model import DreamConfig, DreamModel
    from diffucoder.tasks import format_answer, generate_tasks, to_rl_record
    from diffucoder.tokenizer import train_tokenizer

    d = tmp_path_factory.mktemp("rl_inputs")
    tasks = generate_tasks(8, "train", seed=1)
    tok = train_tokenizer([format_answer(t) + t.question for t in tasks] * 4, vocab_size=1000)
    cfg = DreamConfig.preset("tiny", vocab_size=tok.vocab_size, mask_token_id=tok.mask_token_id)
    model = DreamModel(cfg, init_weights=False)
    model.init_weights(generator=torch.Generator().manual_seed(0))
    model.save_pretrained(d / "model", tokenizer=tok)
    with (d / "train.jsonl").open("w") as fh:
        for t in tasks:
            fh.write(json.dumps(to_rl_record(t)) + "\n")
        fh.write(json.dumps({"question": "a row without tests"}) + "\n")
    (d / "rewardmod.py").write_text(REWARD_MODULE)
    (d / "rl.yaml").write_text(textwrap.dedent(f"""\
        # diffucoder rl rl.yaml
        model_name_or_path: {d / 'model'}
        dataset_path: {d / 'train.jsonl'}
        num_generations: 2
        per_device_train_batch_size: 4
        max_steps: 2
        num_iterations: 1
        max_completion_length: 8
        diffusion_steps: 4
        reward_funcs: ["rewardmod:length_reward"]
        reward_weights: [1.0]
        learning_rate: 1.0e-3
        beta: 0.01
        save_steps: 0
        disable_tqdm: true
        device: cpu
        chat_template: false
        """))
    return d


def _env(d: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(d), str(ROOT), env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = "1"
    return env


def test_cli_runs_and_reports(tiny_run_inputs, tmp_path):
    d = tiny_run_inputs
    out = tmp_path / "cli"
    r = subprocess.run([sys.executable, "-m", "diffucoder.cli.main", "rl", str(d / "rl.yaml"), f"output_dir={out}"],
                       capture_output=True, text=True, env=_env(d), timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads(r.stdout[r.stdout.index("{"):])
    assert summary["steps"] == 2 and summary["counters"]["rows_skipped_no_tests"] == 1
    assert (out / "final" / "config.json").is_file() and len((out / "log.jsonl").read_text().splitlines()) == 2
    bad = subprocess.run([sys.executable, "-m", "diffucoder.cli.main", "rl", str(d / "rl.yaml"), "beta=-1"],
                         capture_output=True, text=True, env=_env(d), timeout=120)
    assert bad.returncode == 2 and "beta must be >= 0" in bad.stderr


SCRIPT = '''
import hashlib, os, sys, torch
from diffucoder.rl import GRPOConfig, train_grpo
cfg = GRPOConfig.from_yaml(sys.argv[1], [f"output_dir={sys.argv[2]}"] + sys.argv[3:])
res = train_grpo(cfg)
if not cfg.fsdp:
    h = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in res.model.parameters())).hexdigest()
    open(os.path.join(sys.argv[2], f"hash{os.environ['RANK']}"), "w").write(h)
'''


def _torchrun(d: Path, script: Path, out: Path, *overrides: str) -> None:
    torchrun = Path(sys.executable).parent / "torchrun"
    cmd = [str(torchrun) if torchrun.exists() else "torchrun", "--standalone", "--nproc_per_node=2",
           str(script), str(d / "rl.yaml"), str(out), *overrides]
    r = subprocess.run(cmd, capture_output=True, text=True, env=_env(d), timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]


@pytest.mark.skipif(shutil.which("torchrun") is None and not (Path(sys.executable).parent / "torchrun").exists(),
                    reason="torchrun not installed")
def test_torchrun_two_ranks_replicated_and_fsdp(tiny_run_inputs, tmp_path):
    from safetensors.torch import load_file

    d = tiny_run_inputs
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    rep, sh = tmp_path / "replicated", tmp_path / "fsdp"
    _torchrun(d, script, rep, "max_steps=1")
    h0, h1 = (rep / "hash0").read_text(), (rep / "hash1").read_text()
    assert h0 == h1, "all-reduced gradients keep the ranks' weights identical"
    log = [json.loads(x) for x in (rep / "log.jsonl").read_text().splitlines()]
    assert len(log) == 1 and log[0]["counters"]["completions"] == 4  # rank 0's own rollouts
    # FSDP2 (sharded weights, reduce-scattered gradients, gathered checkpoints) takes the same first step
    _torchrun(d, script, sh, "max_steps=1", "fsdp=true")
    a = load_file(str(rep / "final" / "model.safetensors"))
    b = load_file(str(sh / "final" / "model.safetensors"))
    start = load_file(str(d / "model" / "model.safetensors"))
    assert a.keys() == b.keys()
    moved = max(float((a[k] - start[k]).abs().max()) for k in a)
    diff = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert moved > 1e-4 and diff < 0.05 * moved, (moved, diff)
    sl = [json.loads(x) for x in (sh / "log.jsonl").read_text().splitlines()]
    assert sl[0]["reward_mean"] == pytest.approx(log[0]["reward_mean"])
    assert sl[0]["grad_norm"] == pytest.approx(log[0]["grad_norm"], rel=1e-4)
    assert (sh / "checkpoint-1" / "trainer_state.pt").is_file()
