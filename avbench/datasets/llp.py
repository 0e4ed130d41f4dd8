"""LLP / AVVP (Tian et al. 2020): 11,849 ten-second videos, 25 event classes, weak multilabels.

Labels come from the official weak-label files, tab-separated with a header ``filename
event_labels``: ``AVVP_train.csv`` (train), ``AVVP_val_pd.csv`` (val), ``AVVP_test_pd.csv`` (test);
labels in a row are comma-separated class names (``Speech,Dog``). ``--manifest`` is the folder
holding them (default: the media root or its parent) or one of them. Videos are
``{filename}.mp4`` (``{YTID}_{start}_{end}``) under the media root, or the first 11 characters (the
YouTube id) as the AVVP loaders use. Class order is the 25 categories in the authors' order. The clips
come from AudioSet, so the audio is normalised with AudioSet's statistics by default.
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
    read_text,
    sha256_of,
)
from avbench.errors import UserError

CATEGORIES = (
    "Speech", "Car", "Cheering", "Dog", "Cat", "Frying_(food)", "Basketball_bounce", "Fire_alarm",
    "Chainsaw", "Cello", "Banjo", "Singing", "Chicken_rooster", "Violin_fiddle", "Vacuum_cleaner",
    "Baby_laughter", "Accordion", "Lawn_mower", "Motorcycle", "Helicopter", "Acoustic_guitar",
    "Telephone_bell_ringing", "Baby_cry_infant_cry", "Blender", "Clapping",
)
SPLIT_FILES = {"train": "AVVP_train.csv", "val": "AVVP_val_pd.csv", "test": "AVVP_test_pd.csv"}


def read_weak_labels(path: Path) -> list[tuple[str, list[str]]]:
    text = read_text(path)
    first = text.splitlines()[0] if text else ""
    delim = "\t" if "\t" in first else ","
    rows = list(csv.reader(io.StringIO(text), delimiter=delim))
    if not rows or [c.strip().lower() for c in rows[0][:1]] != ["filename"]:
        raise UserError(f"{path}: expected a header 'filename<TAB>event_labels'")
    out = []
    for n, row in enumerate(rows[1:], start=2):
        if not row or not row[0].strip():
            continue
        if len(row) < 2:
            raise UserError(f"{path}:{n}: a row needs a filename and its event labels")
        labels = ",".join(row[1:]) if delim == "," else row[-1]
        out.append((row[0].strip(), [x.strip() for x in labels.split(",") if x.strip()]))
    return out


class LLPCard(MediaCard):
    name: ClassVar[str] = "llp"
    description: ClassVar[str] = "LLP / AVVP: 11,849 ten-second videos, 25 classes, weak multilabels"
    task: ClassVar[str] = "multilabel"
    recipe_defaults: ClassVar[dict[str, Any]] = {}
    audio_norm: ClassVar[tuple[float, float] | None] = (-4.2677, 4.5690)

    def default_manifest(self, media_root: Path) -> Path:
        for d in (media_root, media_root.parent):
            if (d / SPLIT_FILES["train"]).exists():
                return d
        raise UserError(f"dataset 'llp': no {SPLIT_FILES['train']} under {media_root}; pass --manifest DIR")

    def read_clips(self, media_root: Path, manifest: Path, index: MediaIndex) -> ClipList:
        if manifest.is_dir():
            files = {s: manifest / f for s, f in SPLIT_FILES.items() if (manifest / f).exists()}
        else:
            split = next((s for s, f in SPLIT_FILES.items() if f == manifest.name), "train")
            files = {split: manifest}
        if not files:
            raise UserError(f"{manifest}: none of {', '.join(SPLIT_FILES.values())} found")
        by_name = {c.lower(): i for i, c in enumerate(CATEGORIES)}
        records = []
        source: dict[str, Any] = {}
        for split, path in files.items():
            source[f"{split}_sha256"] = sha256_of(path)
            for fname, labels in read_weak_labels(path):
                unknown = [x for x in labels if x.lower() not in by_name]
                if unknown:
                    raise UserError(f"{path}: {fname} has unknown class(es) {', '.join(unknown)} "
                                    f"(LLP has: {', '.join(CATEGORIES)})")
                stem = Path(fname).stem if Path(fname).suffix == ".mp4" else fname
                records.append(ClipRecord(stem, index.find(f"{stem}.mp4", stem, stem[:11]),
                                          tuple(sorted({by_name[x.lower()] for x in labels})), split,
                                          expected=f"{stem}.mp4"))
        found, missing = found_or_missing(records)
        classes = [(c, c.replace("_", " ")) for c in CATEGORIES]
        return ClipList(classes, "multilabel", found, missing, source)
