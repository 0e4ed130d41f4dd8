"""What the device can do, measured in the same run: the dense matmul rate per precision (the MFU
denominator) and peak memory (``max_memory_allocated`` on CUDA, peak RSS on CPU).

Vendor peak numbers are not what a 2-core VM slice or a power-capped GPU delivers; square matmuls
timed here are. The rate is the best over a few sizes, because on a CPU the size that reaches the
compute peak is the one whose operands stay in cache (on the development machine: bf16 ~720 GFLOP/s
at 1024, ~430 at 2048 and above, where memory bandwidth limits AMX; fp32 ~200 at every size). A
model whose matmuls are large then shows an MFU below 100% even with no overhead at all, which is
the honest reading: the denominator is what the device's matrix units can do.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from avbench.bench.timing import synchronize

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def default_sizes(device: torch.device | str) -> tuple[int, ...]:
    return (8192,) if torch.device(device).type == "cuda" else (1024, 2048)


def _operands(device: torch.device, precision: str, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator(device="cpu").manual_seed(seed)
    dtype = DTYPES[precision]
    return (torch.randn(n, n, generator=gen).to(device=device, dtype=dtype),
            torch.randn(n, n, generator=gen).to(device=device, dtype=dtype))


def matmul_rate(device: torch.device | str, precision: str, sizes: tuple[int, ...] | int | None = None,
                min_seconds: float = 0.25, windows: int = 3) -> float:
    """Best FLOP/s of n x n @ n x n matmuls in ``precision`` (bf16, fp16, fp32) over ``sizes``; each
    size is timed in ``windows`` windows of at least ``min_seconds`` (sustained, not one burst)."""
    device = torch.device(device)
    if sizes is None:
        sizes = default_sizes(device)
    elif isinstance(sizes, int):
        sizes = (sizes,)
    best = 0.0
    for n in sizes:
        a, b = _operands(device, precision, n)
        flops = 2.0 * n ** 3
        torch.mm(a, b)  # warm-up (kernel selection, allocation)
        synchronize(device)
        t = time.perf_counter()
        torch.mm(a, b)
        synchronize(device)
        reps = max(1, int(min_seconds / max(time.perf_counter() - t, 1e-6)))
        for _ in range(windows):
            synchronize(device)
            t = time.perf_counter()
            for _ in range(reps):
                torch.mm(a, b)
            synchronize(device)
            best = max(best, reps * flops / (time.perf_counter() - t))
    return best


class RateProbe:
    """A short matmul-rate sample per precision, taken between timed rounds on a shared CPU.

    The MFU denominator is then the median rate seen while the model was being timed, not a rate from
    a quieter (or busier) moment before or after. Each sample: the best over the sizes of two timings
    of back-to-back matmuls, each about 2 GFLOP (a few ms at the peak) and at most ``seconds``
    (``avbench bench --peak-seconds``), so a short ``--peak-seconds`` keeps the probes short too.
    """

    def __init__(self, device: torch.device | str, precisions: list[str], sizes: tuple[int, ...] | None = None,
                 seconds: float = 0.25):
        self.device = torch.device(device)
        self.sizes = tuple(sizes or default_sizes(self.device))
        self.seconds = seconds
        self.mats = {p: [(n, *_operands(self.device, p, n, seed=1)) for n in self.sizes] for p in precisions}
        self.samples: dict[str, list[float]] = {p: [] for p in precisions}
        self.reps = {p: [self._reps(n, a, b) for n, a, b in mats] for p, mats in self.mats.items()}

    def _reps(self, n: int, a: torch.Tensor, b: torch.Tensor) -> int:
        """Matmuls per timing: ~2 GFLOP, but no more than fit in ``seconds`` (one warm-up, one timed)."""
        torch.mm(a, b)
        synchronize(self.device)
        t = time.perf_counter()
        torch.mm(a, b)
        synchronize(self.device)
        one = max(time.perf_counter() - t, 1e-9)
        return max(1, min(int(2e9 / (2.0 * n ** 3)), int(self.seconds / one)))

    def sample(self) -> None:
        for p, mats in self.mats.items():
            best = 0.0
            for (n, a, b), reps in zip(mats, self.reps[p]):
                flops = 2.0 * n ** 3
                for _ in range(2):
                    synchronize(self.device)
                    t = time.perf_counter()
                    for _ in range(reps):
                        torch.mm(a, b)
                    synchronize(self.device)
                    best = max(best, reps * flops / max(time.perf_counter() - t, 1e-9))
            self.samples[p].append(best)

    def median(self, precision: str) -> float | None:
        s = sorted(self.samples.get(precision) or [])
        return s[len(s) // 2] if s else None


class PeakMemory:
    """Peak memory over a window: ``reset()`` at its start, ``read()`` at its end (bytes).

    CPU: the process's peak RSS (VmHWM), reset through /proc/self/clear_refs where Linux allows it;
    otherwise ``ru_maxrss`` (peak since the process started: ``kind`` says which).
    """

    def __init__(self, device: torch.device | str):
        self.device = torch.device(device)
        if self.device.type == "cuda":
            self.kind = "max_memory_allocated"
        else:
            self.kind = "peak_rss" if _can_reset_rss() else "peak_rss_since_start"

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        elif self.kind == "peak_rss":
            Path("/proc/self/clear_refs").write_text("5")

    def read(self) -> int:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return int(torch.cuda.max_memory_allocated(self.device))
        if self.kind == "peak_rss":
            return _status_kib("VmHWM") * 1024
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def current_rss() -> int:
    try:
        return _status_kib("VmRSS") * 1024
    except (OSError, ValueError):
        return 0


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise ValueError(f"{field} not in /proc/self/status")


def _can_reset_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        _status_kib("VmHWM")
        return True
    except (OSError, ValueError):
        return False
