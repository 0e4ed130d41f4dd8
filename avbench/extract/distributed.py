"""Sharded extraction under ``torchrun``: every rank fills its own contiguous block of each split.

Rank 0 preallocates the split files, a barrier lets the other ranks reopen them, and each rank then
writes only rows ``[start, stop)`` of its block, so ranks never write the same row and share at most
the one page at each block boundary. Blocks are fixed by the row count and world size alone, so a
resumed run (any rank finding rows already marked done) gives every row to the same rank again.
Without ``torchrun`` (no ``WORLD_SIZE`` > 1) everything here is a no-op for a single rank.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owns_group: bool = False  # this module initialised the process group (and destroys it)

    @property
    def active(self) -> bool:
        return self.world > 1

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum over ranks (float64)."""
        if not self.active:
            return list(values)
        device = f"cuda:{self.local_rank}" if dist.get_backend() == "nccl" else "cpu"
        t = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(t)
        return t.cpu().tolist()

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if not self.active:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def from_env(device: str) -> Dist:
    """Join the ``torchrun`` group if there is one (gloo on CPU, nccl on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", str(rank)))
    owns = False
    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") and torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local)
        dist.init_process_group(backend=backend)
        owns = True
    return Dist(rank=dist.get_rank(), world=dist.get_world_size(), local_rank=local, owns_group=owns)


def block(n: int, rank: int, world: int) -> tuple[int, int]:
    """Rows ``[start, stop)`` of an ``n``-row split that belong to ``rank``."""
    per, extra = divmod(n, world)
    start = rank * per + min(rank, extra)
    return start, start + per + (1 if rank < extra else 0)
