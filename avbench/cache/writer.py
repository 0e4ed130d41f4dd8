"""Writing a feature cache: preallocated memmaps, disjoint row writes, a done bitmap, atomic manifest.

Extraction, the UAVM importer and the embedded ``synth`` dataset all write through this class, so
every cache has one layout and one resume rule: a row counts only once ``done.npy`` says so, and the
manifest appears only when every row of every split is done.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib.format import open_memmap

import avbench
from avbench import fsguard
from avbench.cache import format as fmt
from avbench.errors import UserError


def _reserve(path: Path) -> None:
    """Allocate the file's blocks now: a full disk is an ENOSPC here, not a SIGBUS mid-write."""
    if not hasattr(os, "posix_fallocate"):
        return
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
    except OSError as e:
        if e.errno in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            return  # a filesystem without fallocate: the free-space check stands alone
        raise OSError(e.errno, e.strerror, str(path)) from None
    finally:
        os.close(fd)


class SplitWriter:
    """Row writer for one split. Several processes may hold one each and fill disjoint rows."""

    def __init__(self, root: Path, size: int, num_steps: int, audio_dim: int, video_dim: int,
                 num_classes: int, with_onsets: bool, extras: dict[str, tuple[str, tuple[int, ...]]]):
        self.root = root
        self.size = size
        resume = (root / "done.npy").exists()
        mode = "r+" if resume else "w+"

        def mm(name: str, dtype: str, shape: tuple[int, ...]) -> np.memmap:
            path = root / name
            if resume:
                arr = open_memmap(path, mode="r+")
                if arr.shape != shape or arr.dtype != np.dtype(dtype):
                    raise UserError(f"{path}: existing array is {arr.dtype}{list(arr.shape)}, "
                                    f"expected {dtype}{list(shape)}; remove the cache or use another --out")
                return arr
            arr = open_memmap(path, mode=mode, dtype=dtype, shape=shape)
            _reserve(path)
            return arr

        if not resume:  # refuse (needed vs free) before a memmap that would SIGBUS on a full disk
            shapes = [(fmt.FEATURE_DTYPE, (size, num_steps, audio_dim)), (fmt.FEATURE_DTYPE, (size, num_steps, video_dim)),
                      ("bool", (size, 2)), ("bool", (size,))] + [(dt, (size, *tail)) for dt, tail in extras.values()]
            shapes += [("bool", (size, num_steps))] if with_onsets else []
            need = sum(int(np.dtype(dt).itemsize * np.prod(shape)) for dt, shape in shapes)
            fsguard.check_space(root, need, "cache split")
        self.audio = mm("audio.npy", fmt.FEATURE_DTYPE, (size, num_steps, audio_dim))
        self.video = mm("video.npy", fmt.FEATURE_DTYPE, (size, num_steps, video_dim))
        self.present = mm("present.npy", "bool", (size, 2))
        self.onsets = mm("onsets.npy", "bool", (size, num_steps)) if with_onsets else None
        self.extras = {k: mm(f"extra_{k}.npy", dt, (size, *tail)) for k, (dt, tail) in extras.items()}
        # done.npy last: its existence marks a split whose arrays are all allocated.
        self.done = mm("done.npy", "bool", (size,))

    def pending(self, rows: np.ndarray | None = None) -> np.ndarray:
        """Row indices (optionally restricted to ``rows``) that are not written yet."""
        done = np.asarray(self.done)
        idx = np.arange(self.size) if rows is None else np.asarray(rows)
        return idx[~done[idx]]

    def write(self, rows: Sequence[int] | np.ndarray, audio: np.ndarray, video: np.ndarray,
              present: np.ndarray | None = None, onsets: np.ndarray | None = None,
              **extras: np.ndarray) -> None:
        rows = np.asarray(rows, dtype=np.int64)
        self.audio[rows] = audio
        self.video[rows] = video
        self.present[rows] = True if present is None else present
        if self.onsets is not None:
            self.onsets[rows] = False if onsets is None else onsets
        for k, v in extras.items():
            if k not in self.extras:
                raise KeyError(f"extra array '{k}' was not declared for this split")
            self.extras[k][rows] = v
        for arr in (self.audio, self.video, self.present, self.onsets, *self.extras.values()):
            if arr is not None:
                arr.flush()
        # Rows become visible as done only after their data reached the file.
        self.done[rows] = True
        self.done.flush()

    def all_done(self) -> bool:
        return bool(np.asarray(self.done).all())


class CacheWriter:
    """Creates (or resumes) a cache directory; ``finalize`` publishes it by writing the manifest."""

    def __init__(self, root: str | Path, manifest: fmt.Manifest, classes: list[tuple[str, str]],
                 overwrite: bool = False):
        self.root = Path(root)
        if manifest.task not in fmt.TASKS:
            raise ValueError(f"task must be one of {fmt.TASKS}, got {manifest.task!r}")
        if len(classes) != manifest.num_classes:
            raise ValueError(f"{len(classes)} class names for num_classes={manifest.num_classes}")
        manifest.avbench_version = manifest.avbench_version or avbench.__version__
        with self._lock():  # several writers of one cache (ranks, concurrent runs) set it up one at a time
            if overwrite and self.root.exists():
                shutil.rmtree(self.root)
            if (self.root / fmt.MANIFEST).exists():
                raise UserError(f"{self.root}: a finished cache is already there (remove it to rebuild)")
            self.root.mkdir(parents=True, exist_ok=True)
            pending = self.root / fmt.PENDING
            if pending.exists():
                try:
                    old = fmt.Manifest.from_json(json.loads(pending.read_text()))
                except (ValueError, TypeError):
                    raise UserError(f"{pending}: unreadable (not the JSON avbench writes); remove the unfinished "
                                    f"cache {self.root} to rebuild it") from None
                if old.key != manifest.key:
                    raise UserError(f"{self.root}: an unfinished cache with other settings (key {old.key}) is "
                                    f"there; remove it or choose another output directory")
                manifest.splits = {**old.splits, **manifest.splits}
            self.manifest = manifest
            fmt.write_classes(self.root / fmt.CLASSES, classes)
            fmt.write_json_atomic(pending, manifest.to_json())
        self.splits: dict[str, SplitWriter] = {}

    def _lock(self) -> Any:
        """The writers' lock, a hidden sibling of the cache (not the synth builder's, which may be held
        around this writer by the same process)."""
        from avbench.locks import file_lock

        return file_lock(self.root.with_name(f".{self.root.name}.writer.lock"), f"writing the cache {self.root}")

    def create_split(self, name: str, ids: Sequence[str], labels: np.ndarray, *, with_onsets: bool = True,
                     extras: dict[str, tuple[str, tuple[int, ...]]] | None = None,
                     rank: int = 0) -> SplitWriter:
        """Preallocate (rank 0) or reopen a split. ``labels`` is ``[N, C]`` multi-hot."""
        labels = np.asarray(labels)
        m = self.manifest
        if labels.shape != (len(ids), m.num_classes):
            raise ValueError(f"labels shape {labels.shape} != ({len(ids)}, {m.num_classes})")
        if any(("\n" in i or i == "") for i in ids):
            raise ValueError("clip ids must be non-empty and contain no newline")
        d = self.root / name
        d.mkdir(parents=True, exist_ok=True)
        ids_path = d / "ids.txt"
        if (d / "done.npy").exists():
            if ids_path.read_text().splitlines() != list(ids):
                raise UserError(f"{d}: the clip list differs from the one this cache was started with")
        elif rank == 0:
            ids_path.write_text("".join(i + "\n" for i in ids))
            np.save(d / "labels.npy", labels.astype(np.uint8))
        extras = extras or {}
        writer = SplitWriter(d, len(ids), m.num_steps, m.audio_dim, m.video_dim, m.num_classes,
                             with_onsets, extras)
        m.splits[name] = {"size": len(ids), "extras": sorted(extras), "onsets": with_onsets}
        if rank == 0:
            with self._lock():
                fmt.write_json_atomic(self.root / fmt.PENDING, m.to_json())
        self.splits[name] = writer
        return writer

    def finalize(self, info: dict[str, Any] | None = None) -> fmt.Manifest:
        """Check every row is done, then write ``manifest.json`` atomically."""
        for name, w in self.splits.items():
            if not w.all_done():
                missing = int((~np.asarray(w.done)).sum())
                raise RuntimeError(f"split '{name}' has {missing} rows not written; cannot finalize")
        if info:
            self.manifest.info.update(info)
        with self._lock():
            fmt.write_json_atomic(self.root / fmt.MANIFEST, self.manifest.to_json())
            (self.root / fmt.PENDING).unlink(missing_ok=True)
        return self.manifest
