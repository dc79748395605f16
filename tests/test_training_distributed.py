"""``torchrun --nproc_per_node=2`` (DDP, gloo on CPU) matches one process for the same global batch."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from diffucoder.model import DreamModel

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["data.max_documents=12", "data.seq_len=32", "optim.global_batch_size=8", "optim.micro_batch_size=2",
        "optim.steps=4", "optim.warmup_steps=1", "checkpoint.every=0", "eval.every=2", "eval.num_sequences=5",
        "eval.batch_size=2", "logging.every=1", "logging.progress=false", "runtime.threads=1",
        "diffusion.t_sampling=antithetic", "diffusion.normalization=masked_tokens"]


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    from diffucoder.data.packing import load_texts
    from diffucoder.tokenizer import train_tokenizer

    d = tmp_path_factory.mktemp("tok")
    train_tokenizer(load_texts(["stdlib"], max_documents=12), vocab_size=600).save_pretrained(d)
    return d


def torchrun() -> list[str]:
    exe = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    return [exe] if exe else [sys.executable, "-m", "torch.distributed.run"]


PACKED_SFT = ["task=sft", "sft.synthetic_tasks=40", "sft.synthetic_tiers=[easy]", "sft.packing=true",
              "sft.max_length=300", "sft.padding=flexible", "sft.heldout_fraction=0.2", "sft.system_prompt=null",
              "sft.synthetic_prompt_format=short"]


@pytest.mark.timeout(240)
@pytest.mark.parametrize("extra", [[], ["runtime.fsdp=true", "diffusion.normalization=all_tokens"], PACKED_SFT],
                         ids=["ddp", "fsdp", "ddp-packed-sft"])
def test_two_processes_match_one(tmp_path, tok, extra):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    common = [*ARGS, *extra, f"tokenizer.path={tok}"]
    two = subprocess.Popen([*torchrun(), "--standalone", "--nproc_per_node=2", "-m", "diffucoder.cli.main",
                            "train", *common, f"run_dir={tmp_path / 'two'}"],
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    one = subprocess.run([sys.executable, "-m", "diffucoder.cli.main", "train", *common,
                          f"run_dir={tmp_path / 'one'}"], env=env, capture_output=True, text=True, timeout=200)
    out, _ = two.communicate(timeout=200)
    assert one.returncode == 0, one.stderr[-3000:]
    assert two.returncode == 0, out[-3000:]

    def rows(run):
        return [json.loads(x) for x in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]

    r1, r2 = rows("one"), rows("two")
    assert [r["world_size"] for r in r2 if r.get("event") == "start"] == [2]
    if extra is PACKED_SFT:  # several examples a row, counted alike by both runs
        assert [r["data/examples_per_row"] > 1 for r in r1 if r.get("event") == "start"] == [True]
        assert [r["examples_seen"] for r in r1 if "loss" in r] == [r["examples_seen"] for r in r2 if "loss" in r]
    l1 = [r["loss"] for r in r1 if "loss" in r]
    l2 = [r["loss"] for r in r2 if "loss" in r]
    assert len(l1) == 4 and l1 == pytest.approx(l2, rel=1e-5)
    e1 = [r["eval/elbo_per_token"] for r in r1 if "eval/elbo_per_token" in r]
    e2 = [r["eval/elbo_per_token"] for r in r2 if "eval/elbo_per_token" in r]
    assert len(e1) == 2 and e1 == pytest.approx(e2, rel=1e-5)
    a = DreamModel.from_pretrained(tmp_path / "one" / "final").state_dict()
    b = DreamModel.from_pretrained(tmp_path / "two" / "final").state_dict()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=2e-5, rtol=1e-4), f"{k}: max diff {(a[k] - b[k]).abs().max()}"


def _rank_value(x: int) -> tuple[int, int]:
    from diffucoder.training.distributed import init_distributed

    info = init_distributed("cpu")  # the ranks get torchrun's environment; joining the group is theirs to do
    return (x + info.rank, info.world_size)


def _rank_fails() -> None:
    import os

    from diffucoder.errors import InputError

    from diffucoder.training.distributed import barrier, init_distributed

    info = init_distributed("cpu")
    if os.environ["RANK"] == "1":
        raise InputError("rank 1 says no")
    barrier(info)  # rank 0 waits here until the job is torn down


@pytest.mark.timeout(120)
def test_local_ranks_return_rank_zero_and_reraise_a_rank_error():
    from diffucoder.errors import InputError
    from diffucoder.training.distributed import run_local_ranks

    assert run_local_ranks(_rank_value, (7,), 2) == (7, 2)
    assert run_local_ranks(abs, (-3,), 1) == 3  # one process: a plain call
    with pytest.raises(InputError, match="rank 1 says no"):
        run_local_ranks(_rank_fails, (), 2)
