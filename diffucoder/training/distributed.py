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
