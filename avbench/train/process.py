"""Process-wide settings a training or evaluation process needs, in one place.

Seeding every generator, host-memory tuning, precision (autocast), device synchronisation and the
device's description. They are process-global (``torch.manual_seed``, ``mallopt``), which is why they
live apart from the engine's per-run state.
"""

from __future__ import annotations

import ctypes
import os
import platform
import random
from typing import Any

import numpy as np
import torch
from torch import Tensor

from avbench.hardware import resolve_precision


def set_seed(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def to_device(arr: np.ndarray, device: torch.device) -> Tensor:
    """A small host array on ``device`` without a host sync: CUDA copies go through pinned memory
    (a copy from pageable memory may wait for the stream), so the host keeps queueing work."""
    t = torch.from_numpy(np.ascontiguousarray(arr))
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def tune_host_allocator() -> bool:
    """Keep freed memory for reuse on glibc hosts (no mmap per large tensor, no trimming).

    A CPU training step allocates and frees hundreds of MB of activations. glibc serves every block
    above 32 MB with a fresh mmap, so each step page-faults that memory in again (measured: ~0.6 GB
    per bf16 step and ~1.5 GB per fp32 step of paper-size UAVM, 2-5% of its time in the kernel). Set
    AVBENCH_MALLOC_TUNE=0 to leave malloc alone.
    """
    if os.environ.get("AVBENCH_MALLOC_TUNE", "1") == "0":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_max = -1, -4
        return bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 2**31 - 1))
    except (OSError, AttributeError):  # not glibc
        return False


def autocast(device: torch.device, amp: str) -> Any:
    """The autocast context for ``amp`` ("fp32" disables it; "auto" is resolved for ``device``)."""
    if amp == "auto":  # the engine resolves once; this is for callers holding a recipe as written
        amp = resolve_precision(amp, device)[0]
    if amp == "fp32":
        return torch.autocast(device_type=device.type, enabled=False)
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); a no-op elsewhere."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def describe_device(device: torch.device) -> str:
    """What the device is, for results: the GPU's name, or the CPU's with the thread count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
