"""AudioSet (Gemmeke et al. 2017): 10 s YouTube segments, 527 classes, multilabel.

Labels come from the official segment CSVs (``balanced_train_segments.csv``,
``unbalanced_train_segments.csv``, ``eval_segments.csv``: ``# `` comment lines, then
``YTID, start_seconds, end_seconds, "mid,mid,..."``) and ``class_labels_indices.csv``
(``index,mid,display_name``). ``--manifest`` is the folder holding them (default: the media root) or
one segment CSV. Splits are named after the files: ``balanced_train``, ``unbalanced_train``, ``eval``.
Media files are found by stem: ``YTID``, ``YYTID`` (the common ``Y``-prefixed dumps),
``YTID_{start:06d}``, ``YTID_{start}`` or ``YTID_{start}_{end}``, with any media extension.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, ClassVar

from avbench.datasets.adapters import (
    ClipList,
    ClipRecord,
    MediaCard,
    MediaIndex,
    found_or_missing,
    read_class_indices,
    read_text,
    sha256_of,
)
from avbench.errors import UserError

SEGMENT_FILES = {"balanced_train": "balanced_train_segments.csv",
                 "unbalanced_train": "unbalanced_train_segments.csv",
                 "eval": "eval_segments.csv"}
LABELS = "class_labels_indices.csv"


def read_segments(path: Path) -> list[tuple[str, str, str, list[str]]]:
    out = []
    text = "\n".join(line for line in read_text(path).splitlines() if not line.lstrip().startswith("#"))
    for n, row in enumerate(csv.reader(io.StringIO(text), skipinitialspace=True), start=1):
        if not row:
            continue
        if len(row) < 4:
            raise UserError(f"{path}: row {n} should be 'YTID, start_seconds, end_seconds, \"labels\"': {row}")
        ytid, start, end, labels = row[0].strip(), row[1].strip(), row[2].strip(), row[3]
        out.append((ytid, start, end, [m.strip() for m in labels.split(",") if m.strip()]))
    return out


def _secs(x: str) -> int:
    try:
        return int(float(x))
    except ValueError:
        return -1


class AudioSetCard(MediaCard):
    name: ClassVar[str] = "audioset"
    description: ClassVar[str] = "AudioSet: 10 s YouTube segments, 527 classes, multilabel; extract or import-uavm"
    task: ClassVar[str] = "multilabel"
    recipe_defaults: ClassVar[dict[str, Any]] = {"lr": 1e-5}
    audio_norm: ClassVar[tuple[float, float] | None] = (-4.2677, 4.5690)

    def default_manifest(self, media_root: Path) -> Path:
        for d in (media_root, media_root.parent):
            if any((d / f).exists() for f in SEGMENT_FILES.values()):
                return d
        raise UserError(f"dataset 'audioset': no *_segments.csv under {media_root}; pass --manifest DIR")

    def read_clips(self, media_root: Path, manifest: Path, index: MediaIndex) -> ClipList:
        if manifest.is_dir():
            files = {s: manifest / f for s, f in SEGMENT_FILES.items() if (manifest / f).exists()}
            label_csv = manifest / LABELS
        else:
            split = manifest.name.removesuffix(".csv").removesuffix("_segments")
            files = {split: manifest}
            label_csv = manifest.parent / LABELS
        if not files:
            raise UserError(f"{manifest}: none of {', '.join(SEGMENT_FILES.values())} found")
        if not label_csv.exists():
            raise UserError(f"{label_csv} not found (AudioSet's index,mid,display_name class list)")
        classes = read_class_indices(label_csv)
        by_mid = {mid: i for i, (mid, _) in enumerate(classes)}
        records = []
        source: dict[str, Any] = {"class_list": str(label_csv), "class_list_sha256": sha256_of(label_csv)}
        for split, path in files.items():
            source[f"{split}_sha256"] = sha256_of(path)
            for ytid, start, end, mids in read_segments(path):
                unknown = [m for m in mids if m not in by_mid]
                if unknown:
                    raise UserError(f"{path}: {ytid} has label(s) {', '.join(unknown)} not in {label_csv.name}")
                s, e = _secs(start), _secs(end)
                stems = [ytid, f"Y{ytid}", f"{ytid}_{s:06d}", f"{ytid}_{s}", f"{ytid}_{s}_{e}",
                         f"{ytid}_{start}", f"Y{ytid}_{start}_{end}"]
                path_found = index.find(*stems)
                records.append(ClipRecord(ytid, path_found, tuple(sorted({by_mid[m] for m in mids})), split,
                                          expected=f"{ytid}.*"))
        found, missing = found_or_missing(records)
        return ClipList(classes, "multilabel", found, missing, source)
