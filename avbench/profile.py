"""Where a run's wall time went (``avbench run --profile``): a small registry of named phases.

Code around an existing phase says ``with profile.phase("cache"):``. While no profile is active (the
default) that is one global lookup and nothing else; while one is, time is charged to the innermost
open phase only (a validation evaluation inside the training loop counts as validation, not as
training), so the phases never overlap and their sum plus ``other`` is the wall time. ``startup`` is
the time from the process's start (Linux: /proc/self/stat) until the profile began, i.e. Python,
imports and argument parsing; elsewhere it is left out.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from typing import Any

PHASES = ("startup", "cache", "tracking", "training", "validation", "test_eval", "artifacts", "other")
LABELS = {"startup": "start-up (Python, imports, until the run begins)",
          "cache": "cache (generation, verification, open)",
          "tracking": "tracking (MLflow store, runs, metrics, artifacts)",
          "training": "training steps",
          "validation": "validation curve",
          "test_eval": "test evaluation",
          "artifacts": "artifacts (checkpoints, predictions, model, config)",
          "other": "other"}


class Profile:
    """Exclusive seconds per phase since ``begin`` (see the module docstring)."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.startup = process_age()
        self.seconds: dict[str, float] = {p: 0.0 for p in PHASES if p not in ("startup", "other")}
        self.stack: list[str] = []
        self.mark = self.t0

    def enter(self, name: str) -> None:
        now = time.perf_counter()
        if self.stack:
            self.seconds[self.stack[-1]] += now - self.mark
        self.stack.append(name)
        self.mark = now

    def leave(self) -> None:
        now = time.perf_counter()
        name = self.stack.pop()
        self.seconds[name] = self.seconds.get(name, 0.0) + now - self.mark
        self.mark = now

    def report(self) -> dict[str, Any]:
        """``{"phases": {phase: seconds}, "wall_seconds": ..., "shares": {phase: share of wall}}``; the
        phases (``other`` included) sum to ``wall_seconds``."""
        now = time.perf_counter()
        secs = dict(self.seconds)
        if self.stack:  # a report from inside a phase: charge it up to now
            secs[self.stack[-1]] += now - self.mark
        run = now - self.t0
        phases = {"startup": self.startup or 0.0, **secs, "other": max(0.0, run - sum(secs.values()))}
        wall = (self.startup or 0.0) + max(run, sum(secs.values()))
        return {"phases": {p: round(phases[p], 4) for p in PHASES}, "wall_seconds": round(wall, 4),
                "startup_measured": self.startup is not None,
                "shares": {p: round(phases[p] / wall, 4) if wall > 0 else 0.0 for p in PHASES}}


_active: Profile | None = None


def begin() -> Profile:
    """Start the process's profile (``--profile``); later ``phase`` blocks are timed into it."""
    global _active
    _active = Profile()
    return _active


def end() -> dict[str, Any] | None:
    """The active profile's report (None when off), and profiling off."""
    global _active
    p, _active = _active, None
    return p.report() if p is not None else None


def active() -> Profile | None:
    return _active


def snapshot() -> dict[str, Any] | None:
    """The active profile's report so far, or None when profiling is off."""
    return _active.report() if _active is not None else None


@contextlib.contextmanager
def phase(name: str) -> Iterator[None]:
    """Charge the block's time to ``name`` (innermost phase wins); nothing when profiling is off."""
    p = _active
    if p is None:
        yield
        return
    p.enter(name)
    try:
        yield
    finally:
        if p.stack:
            p.leave()


def process_age() -> float | None:
    """Seconds since this process started (Linux), or None where that cannot be read."""
    try:
        with open("/proc/self/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None


def format_report(rep: dict[str, Any]) -> str:
    """The table ``--profile`` prints after the result table."""
    wall = rep["wall_seconds"]
    lines = [f"where the wall time went ({wall:.1f} s):"]
    for p in PHASES:
        s = rep["phases"][p]
        label = LABELS[p] + ("" if p != "startup" or rep.get("startup_measured", True) else " (not measured here)")
        lines.append(f"  {label:<58} {s:8.2f} s  {100 * s / wall if wall > 0 else 0.0:5.1f}%")
    return "\n".join(lines)
