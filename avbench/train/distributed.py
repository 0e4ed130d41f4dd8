"""Data-parallel training with torch.distributed: process-group setup, rank-0-first work, gathers,
and the ``avbench run --nproc N`` launcher.

Why it looks like this: the engine already gives every rank its slice of the same global batch and
draws the recipe's augmentations for the whole global batch (avbench/train/engine.py), so DDP only
has to average gradients. This module keeps the rest out of the engine and the runner: who owns which
device, which rank prepares shared files first, how evaluation is gathered, how workers are started.

Launch with ``torchrun --nproc-per-node N -m avbench run ...`` (any torchrun topology, multi-node
included) or ``avbench run --nproc N ...`` (one node; it re-executes itself under torchrun).
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

import torch

from avbench.errors import UserError
from avbench.hardware import machine_cpus

T = TypeVar("T")


@dataclass
class DistContext:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False  # this process initialised the group and must destroy it

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_rank_world() -> tuple[int, int, int]:
    """(rank, world size, local rank) from the torchrun environment; (0, 1, 0) outside it."""
    return (int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
            int(os.environ.get("LOCAL_RANK", 0)))


def setup(device: str | torch.device = "cpu") -> DistContext:
    """Join the process group when started by torchrun (WORLD_SIZE > 1); pick this rank's device.

    CUDA ranks use ``cuda:LOCAL_RANK`` (NCCL) unless an explicit index was given; CPU ranks use gloo
    and split the machine's cores between the local processes unless OMP_NUM_THREADS says otherwise.
    """
    rank, world, local = env_rank_world()
    dev = torch.device(device)
    if world <= 1:
        return DistContext(device=dev)
    import torch.distributed as dist

    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {device}: CUDA is not available on this machine")
        if dev.index is None:
            dev = torch.device("cuda", local % torch.cuda.device_count())
        torch.cuda.set_device(dev)
    elif "OMP_NUM_THREADS" not in os.environ or os.environ.get("AVBENCH_SPLIT_THREADS") == "1":
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
        torch.set_num_threads(max(1, machine_cpus() // local_world))  # affinity and cgroup quota, not the host's cores
    owns = False
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
        owns = True
    if dist.get_world_size() != world or dist.get_rank() != rank:
        raise RuntimeError(f"process group is rank {dist.get_rank()}/{dist.get_world_size()} but the "
                           f"environment says {rank}/{world}")
    return DistContext(rank=rank, world=world, local_rank=local, device=dev, owns_group=owns)


def teardown(ctx: DistContext) -> None:
    if ctx.owns_group:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def active() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def barrier() -> None:
    if active():
        import torch.distributed as dist

        dist.barrier()


def main_first(fn: Callable[[], T], ctx: DistContext) -> T:
    """Run ``fn`` on rank 0, then on the other ranks (shared files such as a generated cache are
    written once). A UserError on rank 0 is raised on every rank, so no rank waits forever."""
    if ctx.world <= 1 or not active():
        return fn()
    import torch.distributed as dist

    error: list[Any] = [None]
    result = None
    if ctx.rank == 0:
        try:
            result = fn()
        except UserError as e:
            error[0] = str(e)
            dist.broadcast_object_list(error, src=0)
            raise
        dist.broadcast_object_list(error, src=0)
        return result
    dist.broadcast_object_list(error, src=0)
    if error[0] is not None:
        raise UserError(error[0])
    return fn()


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (``[obj]`` outside a process group)."""
    if not active():
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def shard(n: int, rank: int, world: int) -> tuple[int, int]:
    """This rank's contiguous [start, stop) of ``n`` items (the first ranks take the remainder)."""
    base, extra = divmod(n, world)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def torchrun_command(nproc: int, args: list[str], nnodes: int = 1) -> list[str]:
    """The torchrun command line that runs ``python -m avbench <args>`` on ``nproc`` local workers."""
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}"]
    if nnodes == 1:
        cmd.append("--standalone")
    return cmd + ["-m", "avbench", *args]


def launch(nproc: int, args: list[str]) -> int:
    """Start ``nproc`` workers of ``avbench <args>`` under torchrun and wait; returns the exit code
    (2 when any worker failed on a user error, as a single process would)."""
    if nproc < 1:
        raise UserError("--nproc must be at least 1")
    env = dict(os.environ)
    env.setdefault("AVBENCH_SPLIT_THREADS", "1")  # torchrun sets OMP_NUM_THREADS=1; share the cores instead
    proc = subprocess.run(torchrun_command(nproc, args), env=env)
    return proc.returncode
