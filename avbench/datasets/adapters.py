"""What the extractor needs from a real dataset's card: the clip list read from the official files.

A card for media on disk subclasses :class:`MediaCard` and implements ``read_clips``: parse the
dataset's own label files (VGGSound's ``vggsound.csv``, AudioSet's segment CSVs, AVE's
``Annotations.txt``, LLP's weak-label CSVs, or a generic ``file,label[,split]`` CSV) into
``(clip id, media file, label indices, split)`` records plus the class list. Clips whose media file
is not on disk (about a fifth of VGGSound is gone from YouTube) are returned separately as
``missing``: the extractor reports them with a count and a list and goes on without them.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterable

from avbench.datasets.base import DatasetCard
from avbench.errors import UserError

MEDIA_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".flv", ".ogv", ".3gp", ".asf", ".wmv",
                    ".rmvb", ".rm", ".mpg", ".mpeg", ".m4v", ".ts", ".wav", ".flac", ".mp3", ".ogg", ".m4a")


@dataclass(frozen=True)
class ClipRecord:
    id: str
    path: Path | None  # None when the media file was not found
    labels: tuple[int, ...]
    split: str
    expected: str = ""  # the file name looked for (for the missing list)


@dataclass
class ClipList:
    classes: list[tuple[str, str]]  # (mid, display name), index order
    task: str  # multiclass | multilabel
    clips: list[ClipRecord]  # found on disk
    missing: list[ClipRecord] = field(default_factory=list)
    source: dict[str, Any] = field(default_factory=dict)  # label files read and their sha256

    def splits(self) -> dict[str, list[ClipRecord]]:
        out: dict[str, list[ClipRecord]] = {}
        for c in self.clips:
            out.setdefault(c.split, []).append(c)
        return out


class MediaIndex:
    """Find media files under a root by exact relative path, file name, or stem (one walk, lazily)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self._by_name: dict[str, Path] | None = None
        self._by_stem: dict[str, Path] = {}

    def _build(self) -> None:
        by_name: dict[str, Path] = {}
        by_stem: dict[str, Path] = {}
        for dirpath, _dirs, files in os.walk(self.root, followlinks=True):
            for f in files:
                p = Path(dirpath) / f
                by_name.setdefault(f, p)
                if p.suffix.lower() in MEDIA_EXTENSIONS:
                    by_stem.setdefault(p.stem, p)
        self._by_name, self._by_stem = by_name, by_stem

    def find(self, *candidates: str) -> Path | None:
        """First hit among candidates: a relative path under root, else a file name, else a stem."""
        for c in candidates:
            direct = self.root / c
            if direct.is_file():
                return direct
        if self._by_name is None:
            self._build()
        assert self._by_name is not None
        for c in candidates:
            name = Path(c).name
            if name in self._by_name:
                return self._by_name[name]
            stem = Path(c).stem if Path(c).suffix.lower() in MEDIA_EXTENSIONS else name
            if stem in self._by_stem:
                return self._by_stem[stem]
        return None


def sha256_of(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def read_text(path: Path) -> str:
    try:
        return Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise UserError(f"label file not found: {path}") from None
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text ({e})") from None


def read_class_indices(path: Path) -> list[tuple[str, str]]:
    """``class_labels_indices.csv`` (``index,mid,display_name``) -> [(mid, name)] in index order."""
    rows = list(csv.DictReader(io.StringIO(read_text(path))))
    if not rows or not {"index", "mid", "display_name"} <= set(rows[0]):
        raise UserError(f"{path}: expected a header 'index,mid,display_name'")
    try:
        rows.sort(key=lambda r: int(r["index"]))
    except ValueError:
        raise UserError(f"{path}: 'index' column must hold integers") from None
    if [int(r["index"]) for r in rows] != list(range(len(rows))):
        raise UserError(f"{path}: indices must run 0..{len(rows) - 1} without gaps")
    return [(r["mid"].strip(), r["display_name"].strip()) for r in rows]


def name_key(name: str) -> str:
    """Match class names across files that spell punctuation differently (UAVM replaced commas)."""
    return re.sub(r"[^0-9a-z]+", "", name.lower())


def hash_split(clip_id: str, test_fraction: float = 0.2) -> str:
    """A stable train/test assignment from the clip id alone (same id, same split, everywhere)."""
    h = int(hashlib.sha1(clip_id.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "test" if h < test_fraction else "train"


def task_of(label_sets: Iterable[tuple[int, ...]]) -> str:
    return "multilabel" if any(len(s) != 1 for s in label_sets) else "multiclass"


class MediaCard(DatasetCard):
    """A dataset that lives as media files plus official label files."""

    # (mean, std) of the normalised fbank for this dataset; None: measure with --compute-norm.
    audio_norm: ClassVar[tuple[float, float] | None] = None
    # Label files looked for under the media root when --manifest is not given.
    manifest_names: ClassVar[tuple[str, ...]] = ()

    def default_manifest(self, media_root: Path) -> Path:
        for name in self.manifest_names:
            for cand in (media_root / name, media_root.parent / name):
                if cand.exists():
                    return cand
        want = " or ".join(self.manifest_names) or "a label file"
        raise UserError(f"dataset '{self.name}': no {want} under {media_root}; pass --manifest PATH")

    def list_clips(self, media_root: str | Path, manifest: str | Path | None = None) -> ClipList:
        root = Path(media_root).expanduser()
        if not root.is_dir():
            raise UserError(f"--media-root {root} is not a directory")
        path = Path(manifest).expanduser() if manifest else self.default_manifest(root)
        if not path.exists():
            raise UserError(f"--manifest {path} does not exist")
        clips = self.read_clips(root, path, MediaIndex(root))
        if not clips.clips and not clips.missing:
            raise UserError(f"{path}: no clips listed")
        ids = [c.id for c in clips.clips + clips.missing]
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise UserError(f"{path}: clip id '{dup}' is listed more than once")
        return clips

    def read_clips(self, media_root: Path, manifest: Path, index: MediaIndex) -> ClipList:
        raise NotImplementedError


def found_or_missing(clips: list[ClipRecord]) -> tuple[list[ClipRecord], list[ClipRecord]]:
    found = [c for c in clips if c.path is not None]
    missing = [c for c in clips if c.path is None]
    return found, missing
