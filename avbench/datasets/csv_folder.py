"""``csv``: any folder of videos with a CSV of labels, ``file,label[,split]``.

``file`` is relative to the media root (or absolute); ``label`` is a class name, several separated by
``;`` for multilabel data (the task is multilabel as soon as one row has more or fewer than one
label); ``split`` is optional: without it a stable 80/20 train/test split by clip id is used and
recorded. Extra columns are ignored. Clip ids are the file paths without extension. Classes are the
label names sorted. There are no published audio statistics for a new folder: pass
``--compute-norm`` to measure them.
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
    hash_split,
    read_text,
    sha256_of,
    task_of,
)
from avbench.errors import UserError


class CSVFolderCard(MediaCard):
    name: ClassVar[str] = "csv"
    description: ClassVar[str] = "any folder of videos with a file,label[,split] CSV (';' separates multilabels)"
    task: ClassVar[str] = "multiclass"
    recipe_defaults: ClassVar[dict[str, Any]] = {}
    audio_norm: ClassVar[tuple[float, float] | None] = None
    manifest_names: ClassVar[tuple[str, ...]] = ("manifest.csv", "labels.csv")

    def read_clips(self, media_root: Path, manifest: Path, index: MediaIndex) -> ClipList:
        rows = list(csv.DictReader(io.StringIO(read_text(manifest))))
        if not rows or not {"file", "label"} <= set(rows[0]):
            raise UserError(f"{manifest}: expected a header with 'file' and 'label' (and optionally 'split')")
        names = sorted({x.strip() for r in rows for x in (r["label"] or "").split(";") if x.strip()})
        if not names:
            raise UserError(f"{manifest}: no labels")
        by_name = {n: i for i, n in enumerate(names)}
        has_split = "split" in rows[0]
        records = []
        for n, r in enumerate(rows, start=2):
            f = (r["file"] or "").strip()
            if not f:
                raise UserError(f"{manifest}:{n}: empty 'file'")
            clip_id = str(Path(f).with_suffix("")) if Path(f).suffix else f
            labels = tuple(sorted({by_name[x.strip()] for x in (r["label"] or "").split(";") if x.strip()}))
            split = (r.get("split") or "").strip() if has_split else hash_split(clip_id)
            if not split:
                raise UserError(f"{manifest}:{n}: empty 'split' for {f}")
            p = Path(f) if Path(f).is_absolute() else media_root / f
            records.append(ClipRecord(clip_id, p if p.is_file() else None, labels, split, expected=str(p)))
        found, missing = found_or_missing(records)
        source: dict[str, Any] = {"labels": str(manifest), "labels_sha256": sha256_of(manifest)}
        if not has_split:
            source["split"] = "hash of the clip id, 20% test (no split column)"
        classes = [(n, n) for n in names]
        return ClipList(classes, task_of(r.labels for r in records), found, missing, source)
