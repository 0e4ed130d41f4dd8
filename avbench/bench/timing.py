"""Timed rounds: warm-up outside, per-step latencies without a host sync per step.

On CUDA each step is bracketed by CUDA events read after one ``synchronize`` per round, so measuring
does not serialise the host and the device within a round; on CPU, ops run synchronously and
``perf_counter`` per step is exact.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Window:
    step_s: list[float]  # per-step latency, seconds
    wall_s: float  # the whole window, synchronised at both ends
    items: int  # clips processed in the window

    @property
    def items_per_s(self) -> float:
        return self.items / self.wall_s if self.wall_s > 0 else float("nan")

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(np.asarray(self.step_s) * 1e3, q)) if self.step_s else float("nan")

    def summary(self) -> dict[str, Any]:
        return {"clips_per_s": self.items_per_s, "step_ms_p50": self.percentile_ms(50),
                "step_ms_p95": self.percentile_ms(95), "step_ms_mean": 1e3 * self.wall_s / max(1, len(self.step_s)),
                "steps": len(self.step_s), "window_s": self.wall_s}


def time_rounds(steps: dict[str, Callable[[int], int]], rounds: int, device: torch.device,
                between: Callable[[], Any] | None = None) -> dict[str, Window]:
    """Interleaved windows: every round runs each ``steps[name](i)`` once, in order.

    Configurations compared side by side (fast path and reference, pre-made and cached batches) then
    see the same host conditions: on a shared machine, load that comes and goes hits them alike
    instead of whichever window ran at the wrong moment. Each Window's ``wall_s`` is the sum of its
    own step latencies. ``between`` runs after every round, outside all timings (the matmul-rate
    probe of avbench.bench.peak).
    """
    device = torch.device(device)
    cuda = device.type == "cuda"
    lat: dict[str, list[float]] = {k: [] for k in steps}
    items = dict.fromkeys(steps, 0)
    for i in range(rounds):
        events = []
        for name, fn in steps.items():
            if cuda:
                s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                s.record()
                items[name] += fn(i)
                e.record()
                events.append((name, s, e))
            else:
                t = time.perf_counter()
                items[name] += fn(i)
                lat[name].append(time.perf_counter() - t)
        if cuda:
            synchronize(device)
            for name, s, e in events:
                lat[name].append(s.elapsed_time(e) / 1e3)
        if between is not None:
            between()
    return {k: Window(lat[k], sum(lat[k]), items[k]) for k in steps}


def load_average() -> list[float] | None:
    """The host's 1/5/15-minute load averages (a CPU figure is only meaningful on a quiet host)."""
    try:
        import os

        return [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):
        return None
