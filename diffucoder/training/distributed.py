"""Process-group setup for ``torchrun`` (DDP with gloo on CPU / NCCL on GPU, or FSDP2) and small collectives.

The same entry point runs alone (no environment variables: world size 1, no process group) or under
``torchrun --nproc_per_node=N``, which sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous address.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass
class DistInfo:
    """Where this process sits in the job."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("runtime.device is 'cuda' but no CUDA device is available")
        return torch.device("cuda", local_rank)
    return torch.device(name)


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the torchrun job when its environment is set (idempotent); else a world of one."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    dev = resolve_device(device, local_rank)
    if world > 1 and not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo",
                                device_id=dev if dev.type == "cuda" else None)
    return DistInfo(rank, world, local_rank, local_world, dev)


def all_reduce_sum(x: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum a tensor over ranks (returns a new tensor; identity in a world of one)."""
    if not info.distributed:
        return x.clone()
    y = x.clone()
    dist.all_reduce(y, op=dist.ReduceOp.SUM)
    return y


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def broadcast_object(obj: object, info: DistInfo) -> object:
    """Rank 0's value on every rank."""
    if not info.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def wrap(module: nn.Module, info: DistInfo, fsdp: bool, block_types: tuple[type, ...] = ()) -> nn.Module:
    """DDP (replicated) or FSDP2 (``fully_shard`` per block, then the root) when distributed; else as is."""
    if not info.distributed:
        return module
    if fsdp:
        from torch.distributed.fsdp import fully_shard

        for m in module.modules():
            if block_types and isinstance(m, block_types):
                fully_shard(m)
        fully_shard(module)
        return module
    from torch.nn.parallel import DistributedDataParallel as DDP

    return DDP(module, device_ids=[info.device.index] if info.device.type == "cuda" else None)


def cleanup() -> None:
    """Leave the process group: collect the finished run's objects first (FSDP modules sit in reference cycles
    that hold the group's tensors and pending work), then destroy the group while the interpreter is fully
    alive. Without the collection a gloo worker thread could still own those objects at interpreter exit and
    abort the process ("terminate called without an active exception") after a run that had finished. No
    barrier here: callers end a successful run at one already, and this also runs after an exception, when the
    other ranks may never reach another collective."""
    if dist.is_initialized():
        import gc

        gc.collect()
        dist.destroy_process_group()


# ------------------------------------------------------------------------------------------------------------
# a local job without torchrun
# ------------------------------------------------------------------------------------------------------------
def _free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _local_rank_main(rank: int, nprocs: int, port: int, fn, args: tuple, kwargs: dict, box: str) -> None:
    import pickle
    from pathlib import Path

    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(nprocs), LOCAL_WORLD_SIZE=str(nprocs),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    try:
        result = fn(*args, **kwargs)
    except BaseException as e:  # hand the error itself to the parent (a clean project error stays one)
        import time

        try:
            Path(box, f"error{rank}.pkl").write_bytes(pickle.dumps((time.time(), e)))
        except Exception:
            pass
        raise
    finally:
        cleanup()
    if rank == 0:
        Path(box, "result.pkl").write_bytes(pickle.dumps(result))


def run_local_ranks(fn, args: tuple, nprocs: int, kwargs: dict | None = None):
    """Run ``fn(*args, **kwargs)`` as a ``nprocs``-process job on this machine (gloo on CPU), the way ``torchrun
    --standalone --nproc_per_node=nprocs`` would, and return rank 0's result; ``nprocs == 1`` just calls it.

    ``fn`` must be importable by name (the ranks are spawned, not forked: a forked copy of a process that has
    used torch's thread pools can hang). An exception in a rank is re-raised here as itself when it can be
    pickled (the error of the rank that failed first), else as a RuntimeError with the rank's traceback."""
    kwargs = kwargs or {}
    if nprocs <= 1:
        return fn(*args, **kwargs)
    import pickle
    import tempfile
    from pathlib import Path

    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory(prefix="diffucoder-ranks-") as box:
        try:
            mp.start_processes(_local_rank_main, args=(nprocs, _free_port(), fn, args, kwargs, box), nprocs=nprocs,
                               join=True, start_method="spawn")
        except (mp.ProcessRaisedException, mp.ProcessExitedException) as e:
            errors = []
            for f in Path(box).glob("error*.pkl"):
                try:
                    errors.append(pickle.loads(f.read_bytes()))
                except Exception:
                    pass
            if errors:  # the first to fail: the others mostly fail because it left (a closed connection)
                raise min(errors, key=lambda te: te[0])[1] from None
            raise RuntimeError(f"a rank of the local {nprocs}-process job failed: {e}") from None
        return pickle.loads(Path(box, "result.pkl").read_bytes())
