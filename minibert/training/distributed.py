"""分布式数据并行 Distributed data parallel (DDP) set-up: one process per device, launched by `torchrun`.

`torchrun --nproc_per_node N -m pretrain ...` starts N copies of the program and tells each one who it is
through environment variables: RANK (0..N-1 over all machines), LOCAL_RANK (0..n-1 on this machine) and
WORLD_SIZE (N). Without them we run as a single process and never touch torch.distributed.

Backends: NCCL talks GPU to GPU directly; gloo is the CPU backend (and the one that works on every OS).
Only rank 0 prints, logs and writes files, so N processes never race on the same checkpoint.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from .device import pick_device


@dataclass
class DistributedContext:
    rank: int  # this process, 0..world_size-1
    world_size: int  # W: number of processes
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that logs, evaluates to the console and writes checkpoints."""
        return self.rank == 0


def init_distributed(device_request: str = "auto") -> DistributedContext:
    """Join the process group when launched by torchrun (WORLD_SIZE set), else a single-process context."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return DistributedContext(rank=0, world_size=1, device=pick_device(device_request))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_request)
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)  # one GPU per process
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=world_size)
    return DistributedContext(rank=rank, world_size=world_size, device=device)


def wrap_for_training(model: torch.nn.Module, ctx: DistributedContext, compiled: bool = False) -> torch.nn.Module:
    """What a training loop calls: the model itself in one process; under torchrun, DistributedDataParallel, which
    averages the gradients over the ranks during backward; optionally torch.compile'd on top. Checkpoints and
    exports keep using the bare model: the wrappers prefix its state_dict keys."""
    wrapped = model
    if ctx.world_size > 1:
        wrapped = DistributedDataParallel(model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)
    return torch.compile(wrapped) if compiled else wrapped


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Element-wise sum of a few numbers over all ranks (identity in a single process). Used for logged metrics."""
    if not (dist.is_available() and dist.is_initialized()):
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)  # [n]
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def broadcast_from_main(value: int, device: torch.device) -> int:
    """Rank 0's integer, on every rank (identity in a single process): what rank 0 decided, every rank does, so a
    decision that rests on rank 0's clock cannot leave the ranks running different steps (and hang an all-reduce)."""
    if not (dist.is_available() and dist.is_initialized()):
        return value
    t = torch.tensor([value], dtype=torch.long, device=device)  # [1]
    dist.broadcast(t, src=0)
    return int(t.item())


def shutdown_distributed() -> None:
    """Leave the process group at the end of a torchrun run (a no-op without one)."""
    if dist.is_available() and dist.is_initialized():
        # Leave together: rank 0 still writes the outputs when the others get here, and a rank that tore down its
        # gloo connections meanwhile was seen to abort ("terminate called without an active exception", 1 run in ~15).
        dist.barrier()
        dist.destroy_process_group()
