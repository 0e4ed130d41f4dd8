"""The local record of truth: every seed's results under the results directory, written before MLflow.

::

    <results-dir>/runs/<group>/group.json          what the parent run holds (dataset, name, params, tags)
    <results-dir>/runs/<group>/seed<N>/record.json status, owner process, MLflow ids, what was sent
    <results-dir>/runs/<group>/seed<N>/history.json per-epoch metrics (written every epoch)
    <results-dir>/runs/<group>/seed<N>/result.json  the seed's result (metrics, config, recipe, cache...)
    <results-dir>/runs/<group>/seed<N>/predictions.npz, model.pt

Every file is written to a temporary name and renamed, so a crash or a full disk never leaves a torn
file that a later command would trust. ``avbench sync`` replays records MLflow has not seen
(``sent`` false) and marks records of dead processes KILLED.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from avbench.fsguard import atomic_write

RUNS = "runs"
ACTIVE = "RUNNING"
ENDED = ("FINISHED", "FAILED", "KILLED")


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _write(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str))


class GroupRecord:
    """One parent's worth of seeds."""

    def __init__(self, results_dir: str | Path, group: str):
        self.dir = Path(results_dir).expanduser().resolve() / RUNS / group
        self.group = group

    @property
    def info(self) -> dict[str, Any] | None:
        return _read(self.dir / "group.json")

    def write_info(self, info: dict[str, Any]) -> None:
        _write(self.dir / "group.json", {**info, "group": self.group})

    def seed(self, seed: int) -> SeedRecord:
        return SeedRecord(self.dir / f"seed{seed}", seed)

    def seeds(self) -> list[SeedRecord]:
        if not self.dir.is_dir():
            return []
        return [SeedRecord(p, int(p.name[4:])) for p in sorted(self.dir.glob("seed*")) if p.name[4:].isdigit()]


class SeedRecord:
    def __init__(self, directory: Path, seed: int):
        self.dir = directory
        self.seed = seed

    @property
    def data(self) -> dict[str, Any]:
        return _read(self.dir / "record.json") or {}

    def update(self, **changes: Any) -> dict[str, Any]:
        data = {**self.data, **changes, "seed": self.seed, "updated": time.time()}
        _write(self.dir / "record.json", data)
        return data

    @property
    def status(self) -> str | None:
        return self.data.get("status")

    @property
    def history(self) -> list[dict[str, Any]]:
        return _read(self.dir / "history.json") or []

    def write_history(self, history: list[dict[str, Any]]) -> None:
        _write(self.dir / "history.json", history)

    @property
    def result(self) -> dict[str, Any] | None:
        return _read(self.dir / "result.json")

    def write_result(self, result: dict[str, Any]) -> None:
        _write(self.dir / "result.json", result)

    def path(self, name: str) -> Path:
        return self.dir / name

    def artifacts(self) -> list[Path]:
        """The files MLflow gets as the child's artifacts (those present)."""
        return [p for p in (self.dir / n for n in ("result.json", "predictions.npz", "model.pt", "config.yaml"))
                if p.exists()]

    def reset(self) -> None:
        """Forget a finished seed before ``--force`` reruns it."""
        for p in self.dir.glob("*"):
            if p.is_file():
                p.unlink()


def all_seeds(results_dir: str | Path) -> Iterator[tuple[GroupRecord, SeedRecord]]:
    root = Path(results_dir).expanduser().resolve() / RUNS
    if not root.is_dir():
        return
    for gdir in sorted(p for p in root.iterdir() if p.is_dir()):
        group = GroupRecord(results_dir, gdir.name)
        for s in group.seeds():
            yield group, s
