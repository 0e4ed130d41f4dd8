"""Fit a process to the machine it runs on: how many cores it may use, and which precision is fast.

Why this exists: a default chosen on one machine is wrong on another. bf16 autocast halves a training
step on a CPU with AMX or AVX512-BF16, and makes it 30-100x slower on an AVX2-only CPU, where torch
emulates bf16 matrix products. Likewise torch's default thread count follows the cores it saw at start-up,
not a container's CPU quota (nor an affinity set later), and oversubscribed OpenMP threads spin and stall.

* ``usable_cpus()``: the cores this process may use (affinity, cgroup CPU quota, ``OMP_NUM_THREADS``).
* ``configure_threads(n)``: torch's intra-op threads set to ``n`` or to that number.
* ``resolve_precision(requested, device)``: "auto" becomes bf16 only where bf16 matrix products are
  native and faster -- CUDA devices with bf16 support; CPUs that report ``avx512_bf16`` or
  ``amx_bf16`` *and* whose bf16 matmul rate, measured once by a short micro-benchmark and cached per
  machine, beats fp32 by ``BF16_MIN_SPEEDUP``. fp32 everywhere else; fp16 is never chosen
  automatically. An explicit precision is honoured, with a one-line warning when bf16 is emulated.

The capability probes (``cpu_info``, ``cuda_bf16_native``) and the micro-benchmark
(``measure_bf16_speedup``) are the module's boundary with the hardware: tests replace them.
The benchmark's cache lives in ``<cache root>/hardware/`` (the user cache directory, or
``$AVBENCH_CACHE_DIR``); set ``AVBENCH_REFRESH_PRECISION=1`` (or delete the file) to measure again.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import math
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

PRECISIONS = ("bf16", "fp16", "fp32")
NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16", "bf16")  # x86 AMX, x86 AVX512-BF16, Arm BF16 (e.g. Graviton3)
BF16_MIN_SPEEDUP = 1.25  # bf16 must beat fp32 clearly: it also rounds activations and casts weights
BENCH_SIZE = 256  # square matmul side: cache-resident, so it measures the matrix units, not memory
REFRESH_ENV = "AVBENCH_REFRESH_PRECISION"

_resolved: dict[tuple, tuple[str, str]] = {}
_announced: set[tuple[str, str]] = set()
_warned: set[str] = set()


# --- threads ----------------------------------------------------------------------------------------
def affinity_cpus() -> int:
    """CPUs in this process's affinity mask (``os.cpu_count()`` where the OS has no affinity call)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def cgroup_cpu_limit(root: str | Path = "/sys/fs/cgroup", proc_cgroup: str | Path = "/proc/self/cgroup") -> int | None:
    """Cores allowed by the cgroup CPU quota (rounded down: never more threads than the quota runs,
    at least 1), or None when there is no quota.

    cgroup v2: ``cpu.max`` ("QUOTA PERIOD" or "max PERIOD") of this process's cgroup and its parents;
    cgroup v1: ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` (quota -1 = none). The tightest limit wins.
    """
    root = Path(root)
    try:
        lines = Path(proc_cgroup).read_text().splitlines()
    except OSError:
        lines = []
    limits: list[float] = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, rel = parts
        rel = rel.strip().lstrip("/")
        if controllers == "":  # v2 unified hierarchy
            for d in _self_and_parents(root, rel):
                limits += _v2_limit(d / "cpu.max")
        elif "cpu" in controllers.split(","):
            for base in (root / controllers, root / "cpu", root / "cpu,cpuacct"):
                for d in _self_and_parents(base, rel):
                    limits += _v1_limit(d)
                if base.is_dir():
                    break
    if not lines:  # no /proc/self/cgroup: look at the root (a container's own view)
        limits += _v2_limit(root / "cpu.max") + _v1_limit(root / "cpu")
    return max(1, math.floor(min(limits) + 1e-9)) if limits else None


def _self_and_parents(base: Path, rel: str) -> list[Path]:
    out = [base]
    parts = [p for p in rel.split("/") if p]
    for i in range(1, len(parts) + 1):
        out.append(base.joinpath(*parts[:i]))
    return [d for d in out if d.is_dir()]


def _v2_limit(path: Path) -> list[float]:
    try:
        quota, period = path.read_text().split()[:2]
    except (OSError, ValueError):
        return []
    if quota == "max" or float(period) <= 0:
        return []
    return [float(quota) / float(period)]


def _v1_limit(d: Path) -> list[float]:
    try:
        quota = float((d / "cpu.cfs_quota_us").read_text())
        period = float((d / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return []
    return [quota / period] if quota > 0 and period > 0 else []


def omp_threads() -> int | None:
    """``OMP_NUM_THREADS`` as a positive integer (the outer level of a nested list), else None."""
    value = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    try:
        n = int(value)
    except ValueError:
        return None
    return n if n >= 1 else None


def machine_cpus() -> int:
    """The cores the OS and the container give this process (affinity mask, cgroup CPU quota), whatever
    ``OMP_NUM_THREADS`` says: what a launcher divides among the processes it starts."""
    caps = [affinity_cpus(), cgroup_cpu_limit()]
    return max(1, min(c for c in caps if c is not None))


def usable_cpus() -> int:
    """The cores this process may use: its affinity mask, capped by the cgroup CPU quota and by
    ``OMP_NUM_THREADS`` when set. At least 1."""
    omp = omp_threads()
    return max(1, min(machine_cpus(), omp) if omp is not None else machine_cpus())


def threads_per_job(jobs: int) -> int:
    """Cores for each of ``jobs`` processes sharing this machine (at least 1): what a launcher that
    runs several jobs at once exports as their ``OMP_NUM_THREADS``."""
    return max(1, usable_cpus() // max(1, jobs))


def configure_threads(n: int | None = None) -> int:
    """Set torch's intra-op threads to ``n``, or to ``usable_cpus()`` divided among torchrun's local
    ranks when ``n`` is None; return the number set."""
    if n is None:
        local_ranks = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
        n = max(1, usable_cpus() // max(1, local_ranks))
    if n < 1:
        raise ValueError(f"threads must be at least 1, got {n}")
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


# --- capability probes (the stub boundary for tests) -------------------------------------------------
@dataclass(frozen=True)
class CpuInfo:
    model: str
    flags: frozenset[str]

    @property
    def native_bf16(self) -> tuple[str, ...]:
        """The native-bf16 flags this CPU reports (empty: bf16 matmuls are emulated)."""
        return tuple(f for f in NATIVE_BF16_FLAGS if f in self.flags)


def cpu_info() -> CpuInfo:
    """Model name and feature flags of the first CPU (Linux ``/proc/cpuinfo``; elsewhere no flags)."""
    model, flags = "", ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip().lower()
            if key in ("model name", "cpu model", "hardware") and not model:
                model = value.strip()
            elif key in ("flags", "features") and not flags:
                flags = value
            if model and flags:
                break
    except OSError:
        pass
    return CpuInfo(model=model or platform.processor() or platform.machine() or "unknown CPU",
                   flags=frozenset(flags.split()))


def cuda_bf16_native(device: torch.device) -> tuple[bool, str]:
    """(bf16 is native on this CUDA device, its name and compute capability)."""
    index = device.index if device.index is not None else torch.cuda.current_device()
    major, minor = torch.cuda.get_device_capability(index)
    name = f"{torch.cuda.get_device_name(index)} (compute capability {major}.{minor})"
    with torch.cuda.device(index):
        return bool(torch.cuda.is_bf16_supported(including_emulation=False)), name


def measure_bf16_speedup(size: int = BENCH_SIZE, samples: int = 40, budget_s: float = 0.3) -> dict[str, Any]:
    """bf16 over fp32 rate of ``size``-square matmuls on the CPU, with torch's current thread count.

    One product of each precision in turn, ``samples`` times or until ``budget_s`` has passed; each
    rate is the fastest single product. A product takes well under a millisecond where the precision
    is fast, so on a loaded host at least some of them run unpreempted and the minimum is the
    hardware's, not the load's (windows of many products measured the load: 0.59x instead of 0.02x for
    an emulated bf16 on a host running 15 processes per core). Emulated bf16 shows at once: the loop
    stops after 3 samples once bf16 is under half the fp32 rate. One thread: a multi-threaded product
    on a shared host waits for its slowest thread (measured 2.1x instead of 3.5x with 2 threads at a
    load of 8 on 2 cores), and the bf16/fp32 ratio is a property of each core's matrix units.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _measure(size, samples, budget_s)
    finally:
        torch.set_num_threads(threads)


def _measure(size: int, samples: int, budget_s: float) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(0)
    mats = {p: (torch.randn(size, size, generator=gen).to(dt), torch.randn(size, size, generator=gen).to(dt))
            for p, dt in (("fp32", torch.float32), ("bf16", torch.bfloat16))}
    flops = 2.0 * size ** 3
    fastest = dict.fromkeys(mats, float("inf"))
    t_start = time.perf_counter()
    for a, b in mats.values():  # warm-up: kernel selection, weight packing, allocation
        torch.mm(a, b)
    n = 0
    while n < samples:
        for p, (a, b) in mats.items():
            t0 = time.perf_counter()
            torch.mm(a, b)
            fastest[p] = min(fastest[p], time.perf_counter() - t0)
        n += 1
        if (n >= 3 and fastest["bf16"] > 2 * fastest["fp32"]) or time.perf_counter() - t_start > budget_s:
            break
    rate = {p: flops / t for p, t in fastest.items()}
    return {"size": size, "threads": torch.get_num_threads(), "fp32_flops_per_s": rate["fp32"],
            "bf16_flops_per_s": rate["bf16"], "speedup": rate["bf16"] / rate["fp32"],
            "samples": n, "seconds": time.perf_counter() - t_start}


# --- the cached micro-benchmark -----------------------------------------------------------------------
ISA_ENV = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")


def benchmark_key(info: CpuInfo) -> dict[str, Any]:
    """What the cached result depends on: CPU model and flags, torch version and the kernels it uses
    (its CPU capability and any ISA limits set in the environment), thread count."""
    return {"cpu_model": info.model, "flags_sha": hashlib.sha256(" ".join(sorted(info.flags)).encode()).hexdigest()[:16],
            "torch": torch.__version__, "capability": torch.backends.cpu.get_cpu_capability(),
            "isa_env": {k: os.environ[k] for k in ISA_ENV if os.environ.get(k)},
            "threads": torch.get_num_threads(), "size": BENCH_SIZE}


def benchmark_path(key: dict[str, Any]) -> Path:
    from avbench.paths import cache_root

    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return cache_root() / "hardware" / f"bf16-matmul-{digest}.json"


def stored_bf16_speedup(info: CpuInfo) -> dict[str, Any] | None:
    """The cached micro-benchmark for this machine, or None (nothing is measured here)."""
    key = benchmark_key(info)
    try:
        data = json.loads(benchmark_path(key).read_text())
    except (OSError, ValueError):
        return None
    return {**data, "cached": True} if data.get("key") == key and data.get("speedup", 0) > 0 else None


def cached_bf16_speedup(info: CpuInfo, refresh: bool = False) -> dict[str, Any]:
    """``measure_bf16_speedup()`` once per machine: read from the cache unless ``refresh`` or
    ``$AVBENCH_REFRESH_PRECISION`` is set; the result carries ``cached`` and ``measured_at``."""
    key = benchmark_key(info)
    path = benchmark_path(key)
    refresh = refresh or os.environ.get(REFRESH_ENV, "") not in ("", "0")
    if not refresh:
        data = stored_bf16_speedup(info)
        if data is not None:
            return data
    data = {**measure_bf16_speedup(), "key": key,
            "measured_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    try:
        from avbench.cache.format import write_json_atomic

        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, data)
    except OSError as e:  # a read-only home still gets the right answer, just not cached
        log.debug("could not cache the bf16 benchmark at %s: %s", path, e)
    return {**data, "cached": False}


# --- the decision ----------------------------------------------------------------------------------
def resolve_precision(requested: str, device: torch.device | str, *, announce: bool = False,
                      refresh: bool = False) -> tuple[str, str]:
    """The autocast precision to use on ``device`` ("bf16", "fp16" or "fp32") and a sentence saying why.

    ``requested`` is "auto" or one of those three. Resolved once per process (per request, device and
    thread count); ``announce`` logs the choice once (INFO, on the ``avbench`` logger). Forcing bf16
    where it is emulated works, with a one-line warning.
    """
    if requested not in ("auto", *PRECISIONS):
        from avbench.errors import UserError

        raise UserError(f"precision must be auto, bf16, fp16 or fp32, got '{requested}'")
    device = torch.device(device)
    memo = (requested, device.type, device.index, torch.get_num_threads())
    if refresh or memo not in _resolved:
        _resolved[memo] = _decide(requested, device, refresh)
    precision, reason = _resolved[memo]
    if announce and (precision, reason) not in _announced:
        _announced.add((precision, reason))
        log.info("precision: %s (%s)", precision, reason)
    return precision, reason


def _decide(requested: str, device: torch.device, refresh: bool) -> tuple[str, str]:
    if requested != "auto":
        if requested == "bf16":
            emulated = _bf16_emulated(device)
            if emulated and emulated not in _warned:
                _warned.add(emulated)
                log.warning("bf16 was requested but %s; expect it to be much slower than fp32 "
                            "(train.amp=auto picks fp32 here)", emulated)
        return requested, f"{requested} as requested"
    if device.type == "cuda":
        native, name = cuda_bf16_native(device)
        if native:
            return "bf16", f"auto: {name} computes bf16 natively"
        return "fp32", f"auto: {name} has no native bf16 (fp16 is never chosen automatically)"
    if device.type != "cpu":
        return "fp32", f"auto: fp32 on {device.type} (bf16 is chosen automatically only on CUDA and on CPUs with native bf16)"
    info = cpu_info()
    flags = info.native_bf16
    if not flags:
        return "fp32", (f"auto: this CPU ({info.model}) reports no native bf16 ({' or '.join(NATIVE_BF16_FLAGS[:2])}), "
                        f"so bf16 matrix products would be emulated, far slower than fp32")
    m = cached_bf16_speedup(info, refresh)
    how = (f"{m['bf16_flops_per_s'] / 1e9:.3g} vs {m['fp32_flops_per_s'] / 1e9:.3g} GFLOP/s, {m['size']}x{m['size']} "
           f"matmuls on {m['threads']} thread{'s' if m['threads'] != 1 else ''}, "
           f"{'cached from ' if m['cached'] else 'measured '}{m['measured_at']}")
    if m["speedup"] >= BF16_MIN_SPEEDUP:
        return "bf16", f"auto: this CPU reports {'/'.join(flags)} and bf16 matmuls ran {m['speedup']:.1f}x the fp32 rate ({how})"
    return "fp32", (f"auto: this CPU reports {'/'.join(flags)} but bf16 matmuls ran only {m['speedup']:.2f}x the fp32 "
                    f"rate ({how}; bf16 needs {BF16_MIN_SPEEDUP}x)")


def _bf16_emulated(device: torch.device) -> str:
    """Why bf16 would be emulated on ``device`` ("" when it is native)."""
    if device.type == "cuda":
        native, name = cuda_bf16_native(device)
        return "" if native else f"{name} has no native bf16"
    if device.type == "cpu":
        info = cpu_info()
        if not info.native_bf16:
            return f"this CPU ({info.model}) has no native bf16 (no avx512_bf16 or amx_bf16)"
        m = stored_bf16_speedup(info)  # flags say native; a measurement on record may say otherwise
        if m is not None and m["speedup"] < 1.0:
            return f"bf16 matmuls measured {m['speedup']:.2f}x the fp32 rate on this CPU ({m['measured_at']})"
    return ""


def reset() -> None:
    """Forget this process's resolved precisions, announcements and warnings (tests)."""
    _resolved.clear()
    _announced.clear()
    _warned.clear()
