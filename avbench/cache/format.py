"""The on-disk layout of a feature cache (see README "Feature cache").

::

    manifest.json          schema version, dataset, task, classes count, splits and sizes, T, dims,
                           dtype, extractor identities and settings, provenance, avbench version
    classes.csv            index,mid,display_name (the AudioSet / UAVM convention)
    <split>/audio.npy      [N, T, Da] float16 memmap
    <split>/video.npy      [N, T, Dv] float16 memmap
    <split>/labels.npy     [N, C] uint8 multi-hot (one-hot for multiclass)
    <split>/ids.txt        one clip id per line
    <split>/onsets.npy     [N, T] bool (optional): audio onsets per feature step
    <split>/present.npy    [N, 2] bool: audio present, video present
    <split>/done.npy       [N] bool: rows written
    <split>/extra_<k>.npy  optional per-clip arrays named in manifest["splits"][split]["extras"]
    train/val_rows.npy     training rows held out for validation when the dataset has no official
                           validation split (named in manifest["validation"]; see cache/validation.py)

``manifest.json`` is written last and atomically: a directory without it is an unfinished cache;
``manifest.pending.json`` holds the settings while rows are still being written so a rerun resumes.
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
PENDING = "manifest.pending.json"
CLASSES = "classes.csv"
FEATURE_DTYPE = "float16"
TASKS = ("multiclass", "multilabel")


@dataclass
class Manifest:
    dataset: str
    task: str
    num_classes: int
    num_steps: int
    audio_dim: int
    video_dim: int
    splits: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> {"size": N, "extras": [...]}
    dtype: str = FEATURE_DTYPE
    extractor: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)  # dataset-specific facts (synth knobs, norm stats)
    validation: dict[str, Any] = field(default_factory=dict)  # the validation split (cache/validation.py)
    key: str = ""
    avbench_version: str = ""
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Manifest":
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


def umask_mode() -> int:
    """The mode ``open()`` would give a new file (0o666 less the umask). ``tempfile.mkstemp`` creates
    files 0o600, so an atomically replaced file would otherwise be readable by its owner only: a
    manifest or result another user (a Ray worker, a colleague on a shared cache) cannot open."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON so that readers see either the old file or the whole new one, never a torn one.
    ``path`` must be a regular file or a new name (``fsguard.check_output``); ``-`` is standard output."""
    from avbench import fsguard

    if str(path) == fsguard.STDOUT:
        import sys

        json.dump(data, sys.stdout, indent=2, sort_keys=True, default=str)
        sys.stdout.write("\n")
        sys.stdout.flush()
        return
    path = Path(path)
    fsguard.check_output(path)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, umask_mode())
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, sort_keys=True, default=str)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_classes(path: Path, classes: list[tuple[str, str]]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["index", "mid", "display_name"])
        for i, (mid, name) in enumerate(classes):
            w.writerow([i, mid, name])


def read_classes(path: Path) -> list[tuple[str, str]]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return [(r["mid"], r["display_name"]) for r in sorted(rows, key=lambda r: int(r["index"]))]
