"""Reading a feature cache: memmapped splits gathered by index, or whole splits held on a device.

Training on frozen features is compute-bound only if gathering is cheap, so the reader never touches
per-clip files: a batch is one fancy-indexed read from each memmap (sorted indices for locality), and
a split that fits on the device is moved there once and indexed in place.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import Tensor

from avbench.api import FeatureSpec, TaskSpec
from avbench.cache import format as fmt
from avbench.cache import validation as validation_mod
from avbench.cache.validation import Validation
from avbench.errors import UserError


class FeatureCache:
    """An opened, finished cache directory."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        if not self.root.exists():
            raise UserError(f"cache path does not exist: {self.root}")
        mpath = self.root / fmt.MANIFEST
        if not mpath.exists():
            if (self.root / fmt.PENDING).exists():
                raise UserError(f"{self.root}: the cache is unfinished (no manifest.json yet); "
                                f"rerun the command that writes it to resume")
            raise UserError(f"{self.root}: not an avbench cache (no manifest.json)")
        try:
            data = json.loads(mpath.read_text())
        except json.JSONDecodeError as e:
            raise UserError(f"{mpath}: unreadable manifest ({e})") from None
        if data.get("schema_version") != fmt.SCHEMA_VERSION:
            raise UserError(f"{mpath}: schema version {data.get('schema_version')} is not supported "
                            f"(this avbench reads {fmt.SCHEMA_VERSION})")
        self.manifest = fmt.Manifest.from_json(data)
        self._splits: dict[str, CacheSplit] = {}

    @cached_property
    def classes(self) -> list[tuple[str, str]]:
        return fmt.read_classes(self.root / fmt.CLASSES)

    @property
    def features(self) -> FeatureSpec:
        m = self.manifest
        return FeatureSpec(audio_dim=m.audio_dim, video_dim=m.video_dim, num_steps=m.num_steps)

    @property
    def task(self) -> TaskSpec:
        m = self.manifest
        return TaskSpec(num_classes=m.num_classes, multilabel=m.task == "multilabel",
                        class_names=tuple(name for _, name in self.classes))

    @property
    def split_names(self) -> list[str]:
        return list(self.manifest.splits)

    def split(self, name: str) -> "CacheSplit | SplitView":
        """A stored split by name; ``"val"`` is the validation split even when it is a hold-out."""
        if name == "val" and name not in self.manifest.splits:
            return self.val_split()
        if name not in self.manifest.splits:
            raise UserError(f"{self.root}: no split '{name}' (has {', '.join(self.split_names)})")
        if name not in self._splits:
            self._splits[name] = CacheSplit(self.root / name, self.manifest.splits[name])
        return self._splits[name]

    def train_split(self) -> "CacheSplit":
        return self.split(_first_of(self.split_names, ("train", "balanced_train", "unbalanced_train")))

    def test_split_name(self) -> str:
        return _first_of(self.split_names, ("test", "eval", "val", "validation"))

    def test_split(self) -> "CacheSplit":
        return self.split(self.test_split_name())

    # --- validation (avbench/cache/validation.py) ---------------------------------------------------
    @cached_property
    def validation(self) -> Validation:
        """The validation split: official, or a stratified hold-out of the training split recorded in
        the cache on first use. Identical for every strategy and run on this cache."""
        return validation_mod.resolve(self)

    @contextmanager
    def using_validation(self, v: Validation) -> Iterator[None]:
        """Within the block, ``v`` is this cache's validation split (a cross-validation fold); after it,
        the recorded one again. Everything that reads the validation (the val split, the fit rows,
        the engine's validator) reads it through ``self.validation``."""
        had, saved = "validation" in self.__dict__, self.__dict__.get("validation")
        self.__dict__["validation"] = v
        try:
            yield
        finally:
            if had:
                self.__dict__["validation"] = saved
            else:
                del self.__dict__["validation"]

    def val_split(self) -> "CacheSplit | SplitView":
        """The validation clips as a split (a row view of the training split for a hold-out)."""
        v = self.validation
        split = self.split(v.split)
        return split if v.official else SplitView(split, v.rows, "val")

    def fit_rows(self) -> np.ndarray:
        """Training-split rows to train on when validating honestly: every row with a modality present,
        minus the validation hold-out (all of them when the validation split is official)."""
        train = self.train_split()
        rows = np.flatnonzero(train.present.any(axis=1))
        return np.setdiff1d(rows, self.validation.held_out, assume_unique=True)


class SplitView:
    """Rows ``rows`` of a split, read like a split (a validation hold-out inside the training split).

    Labels, ids, presence, onsets and extras are subset eagerly (they are small); features are
    gathered from the parent's memmaps on demand, so no feature is copied or rewritten.
    """

    def __init__(self, parent: "CacheSplit", rows: np.ndarray, name: str):
        self.parent = parent
        self.rows = np.asarray(rows, dtype=np.int64)
        self.name = name
        self.root = parent.root
        self.labels = parent.labels[self.rows]
        self.present = parent.present[self.rows]
        self.done = parent.done[self.rows]
        self.onsets = None if parent.onsets is None else parent.onsets[self.rows]
        self.ids = [parent.ids[i] for i in self.rows]
        self.extras = {k: v[self.rows] for k, v in parent.extras.items()}

    @cached_property
    def audio(self) -> np.ndarray:
        return np.asarray(self.parent.audio[self.rows])

    @cached_property
    def video(self) -> np.ndarray:
        return np.asarray(self.parent.video[self.rows])

    def __len__(self) -> int:
        return len(self.rows)

    def gather(self, idx: np.ndarray) -> dict[str, Tensor]:
        """Rows ``idx`` of the view (``index`` holds view positions, as for a split)."""
        idx = np.asarray(idx, dtype=np.int64)
        out = self.parent.gather(self.rows[idx])
        out["index"] = torch.from_numpy(idx)
        return out

    def nbytes(self) -> int:
        n, p = len(self.rows), max(1, len(self.parent))
        return int(self.parent.nbytes() * n / p)

    def to_device(self, device: torch.device | str) -> "DeviceSplit":
        return DeviceSplit(self, device)


def _first_of(names: list[str], wanted: tuple[str, ...]) -> str:
    for w in wanted:
        if w in names:
            return w
    raise UserError(f"cache has splits {names}; expected one of {', '.join(wanted)}")


class CacheSplit:
    """One split, memmapped. Labels, ids, presence and onsets are small and loaded eagerly."""

    def __init__(self, root: Path, info: dict[str, Any]):
        self.root = root
        self.name = root.name
        self.audio = np.load(root / "audio.npy", mmap_mode="r")
        self.video = np.load(root / "video.npy", mmap_mode="r")
        self.labels = np.load(root / "labels.npy")
        self.present = np.load(root / "present.npy")
        self.done = np.load(root / "done.npy")
        onsets = root / "onsets.npy"
        self.onsets = np.load(onsets) if onsets.exists() else None
        self.ids = (root / "ids.txt").read_text().splitlines()
        self.extras = {k: np.load(root / f"extra_{k}.npy") for k in info.get("extras", [])}

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def gather(self, idx: np.ndarray) -> dict[str, Tensor]:
        """Rows ``idx`` as CPU tensors: audio/video float16, labels uint8, present/onsets bool."""
        idx = np.asarray(idx, dtype=np.int64)
        order = np.argsort(idx, kind="stable")
        sorted_idx = idx[order]
        inverse = np.empty_like(order)
        inverse[order] = np.arange(len(order))
        out = {
            "audio": torch.from_numpy(np.ascontiguousarray(self.audio[sorted_idx][inverse])),
            "video": torch.from_numpy(np.ascontiguousarray(self.video[sorted_idx][inverse])),
            "labels": torch.from_numpy(self.labels[idx]),
            "present": torch.from_numpy(self.present[idx]),
            "index": torch.from_numpy(idx),
        }
        if self.onsets is not None:
            out["onsets"] = torch.from_numpy(self.onsets[idx])
        return out

    def nbytes(self) -> int:
        return int(self.audio.nbytes + self.video.nbytes + self.labels.nbytes + self.present.nbytes)

    def to_device(self, device: torch.device | str) -> "DeviceSplit":
        return DeviceSplit(self, device)


class DeviceSplit:
    """A split copied once to ``device``; ``gather`` indexes it there with no host round trip."""

    def __init__(self, split: CacheSplit, device: torch.device | str):
        self.name = split.name
        self.device = torch.device(device)
        self.ids = split.ids
        self.audio = torch.from_numpy(np.array(split.audio)).to(self.device)
        self.video = torch.from_numpy(np.array(split.video)).to(self.device)
        self.labels = torch.from_numpy(split.labels).to(self.device)
        self.present = torch.from_numpy(split.present).to(self.device)
        self.onsets = None if split.onsets is None else torch.from_numpy(split.onsets).to(self.device)
        self.extras = split.extras

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def gather(self, idx: Tensor | np.ndarray) -> dict[str, Tensor]:
        idx = torch.as_tensor(idx, device=self.device, dtype=torch.long)
        out = {"audio": self.audio[idx], "video": self.video[idx], "labels": self.labels[idx],
               "present": self.present[idx], "index": idx}
        if self.onsets is not None:
            out["onsets"] = self.onsets[idx]
        return out


def record_validation(root: str | Path, fraction: float = validation_mod.DEFAULT_FRACTION) -> Validation:
    """Record a just-written cache's validation split (importers and extraction call this).

    Here rather than in ``validation.py`` so that module needs no reader (it works on any object
    with the reader's interface) and the two do not import each other."""
    return validation_mod.resolve(FeatureCache(root), fraction=fraction)
