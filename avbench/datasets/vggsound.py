"""VGGSound (Chen et al. 2020): ~200k ten-second YouTube clips, 309 classes, single label.

Labels come from the official ``vggsound.csv``, rows ``youtube_id,start_seconds,label,split`` (no
header; labels may be quoted and contain commas). Media files are ``{id}_{start:06d}.mp4`` anywhere
under the media root (any container with that stem is accepted); clip ids are that stem, as in the
UAVM authors' files (``glLQrEijrKg_000300``). Class order is the order of a
``class_labels_indices*.csv`` beside the CSV when there is one (the UAVM file, so caches from
``avbench extract`` and ``avbench cache import-uavm`` agree), else the label names sorted.
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
    name_key,
    read_class_indices,
    read_text,
    sha256_of,
    task_of,
)
from avbench.errors import UserError

LABEL_FILES = ("class_labels_indices_vgg.csv", "class_labels_indices.csv")


def clip_stem(youtube_id: str, start: str) -> str:
    try:
        s = int(float(start))
    except ValueError:
        raise UserError(f"vggsound.csv: start_seconds '{start}' of {youtube_id} is not a number") from None
    return f"{youtube_id}_{s:06d}"


def ordered_classes(names: set[str], label_csv: Path | None) -> list[tuple[str, str]]:
    if label_csv is None:
        return [(f"vgg_{i}", n) for i, n in enumerate(sorted(names))]
    classes = read_class_indices(label_csv)
    known = {name_key(n) for _, n in classes}
    unknown = sorted(n for n in names if name_key(n) not in known)
    if unknown:
        raise UserError(f"{label_csv}: no class for label(s) {', '.join(repr(u) for u in unknown[:5])}")
    return classes


class VGGSoundCard(MediaCard):
    name: ClassVar[str] = "vggsound"
    description: ClassVar[str] = "VGGSound: 10 s YouTube clips, 309 classes (UAVM Table I); extract or import-uavm"
    task: ClassVar[str] = "multiclass"
    recipe_defaults: ClassVar[dict[str, Any]] = {"lr": 5e-5}
    audio_norm: ClassVar[tuple[float, float] | None] = (-5.081, 4.4849)
    manifest_names: ClassVar[tuple[str, ...]] = ("vggsound.csv",)

    def read_clips(self, media_root: Path, manifest: Path, index: MediaIndex) -> ClipList:
        rows = []
        for n, row in enumerate(csv.reader(io.StringIO(read_text(manifest))), start=1):
            if not row or not "".join(row).strip():
                continue
            if len(row) < 4:
                raise UserError(f"{manifest}:{n}: expected youtube_id,start_seconds,label,split, got {row}")
            yid, start, label, split = (c.strip() for c in row[:4])
            if n == 1 and not start.replace(".", "").isdigit():
                continue  # a header line
            rows.append((yid, start, label, split))
        label_csv = next((manifest.parent / f for f in LABEL_FILES if (manifest.parent / f).exists()), None)
        classes = ordered_classes({r[2] for r in rows}, label_csv)
        by_key = {name_key(n): i for i, (_, n) in enumerate(classes)}
        records = []
        for yid, start, label, split in rows:
            stem = clip_stem(yid, start)
            path = index.find(f"{stem}.mp4", stem)
            records.append(ClipRecord(stem, path, (by_key[name_key(label)],), split, expected=f"{stem}.mp4"))
        found, missing = found_or_missing(records)
        source = {"labels": str(manifest), "labels_sha256": sha256_of(manifest)}
        if label_csv is not None:
            source.update(class_list=str(label_csv), class_list_sha256=sha256_of(label_csv))
        return ClipList(classes, task_of(r.labels for r in records), found, missing, source)
