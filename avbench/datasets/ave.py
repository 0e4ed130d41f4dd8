"""AVE (Tian et al. 2018): 4,143 ten-second videos of 28 audio-visual event categories.

Labels come from the official ``Annotations.txt`` (``Category&VideoID&Quality&StartTime&EndTime``,
one header line); the paper's splits from ``trainSet.txt``, ``valSet.txt`` and ``testSet.txt`` beside
it, same format (without them a stable 80/20 split by video id is used and recorded). Videos are
``{VideoID}.mp4`` under the media root. Class order is the 28 categories in the order the AVE
authors' code uses. A video annotated with several events carries all their categories (the task
then becomes multilabel, and the count is recorded). AVE clips are AudioSet clips, so the audio is
normalised with AudioSet's statistics unless ``--compute-norm`` measures AVE's own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from avbench.datasets.adapters import (
    ClipList,
    ClipRecord,
    MediaCard,
    MediaIndex,
    found_or_missing,
    hash_split,
    name_key,
    read_text,
    sha256_of,
    task_of,
)
from avbench.errors import UserError

CATEGORIES = (
    "Church bell", "Male speech, man speaking", "Bark", "Fixed-wing aircraft, airplane",
    "Race car, auto racing", "Female speech, woman speaking", "Helicopter", "Violin, fiddle", "Flute",
    "Ukulele", "Frying (food)", "Truck", "Shofar", "Motorcycle", "Acoustic guitar", "Train horn", "Clock",
    "Banjo", "Goat", "Baby cry, infant cry", "Bus", "Chainsaw", "Cat", "Horse", "Toilet flush",
    "Rodents, rats, mice", "Accordion", "Mandolin",
)
SPLIT_FILES = {"train": "trainSet.txt", "val": "valSet.txt", "test": "testSet.txt"}


def read_annotations(path: Path) -> list[tuple[str, str]]:
    """[(category, video_id)] from an AVE annotation file."""
    out = []
    for n, line in enumerate(read_text(path).splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        parts = line.split("&")
        if len(parts) < 5:
            raise UserError(f"{path}:{n}: expected Category&VideoID&Quality&StartTime&EndTime, got '{line}'")
        if n == 1 and parts[1].strip().lower() == "videoid":
            continue
        out.append((parts[0].strip(), parts[1].strip()))
    return out


class AVECard(MediaCard):
    name: ClassVar[str] = "ave"
    description: ClassVar[str] = "AVE: 4,143 ten-second videos, 28 audio-visual event categories"
    task: ClassVar[str] = "multiclass"
    recipe_defaults: ClassVar[dict[str, Any]] = {}
    audio_norm: ClassVar[tuple[float, float] | None] = (-4.2677, 4.5690)
    manifest_names: ClassVar[tuple[str, ...]] = ("Annotations.txt", "AVE_Dataset/Annotations.txt")

    def read_clips(self, media_root: Path, manifest: Path, index: MediaIndex) -> ClipList:
        if manifest.is_dir():
            manifest = manifest / "Annotations.txt"
        by_key = {name_key(c): i for i, c in enumerate(CATEGORIES)}
        labels: dict[str, set[int]] = {}
        for cat, vid in read_annotations(manifest):
            if name_key(cat) not in by_key:
                raise UserError(f"{manifest}: unknown AVE category '{cat}' (video {vid})")
            labels.setdefault(vid, set()).add(by_key[name_key(cat)])
        split_of: dict[str, str] = {}
        source: dict[str, Any] = {"labels": str(manifest), "labels_sha256": sha256_of(manifest)}
        for split, fname in SPLIT_FILES.items():
            p = manifest.parent / fname
            if p.exists():
                source[f"{split}_sha256"] = sha256_of(p)
                for _cat, vid in read_annotations(p):
                    split_of.setdefault(vid, split)
        if not split_of:
            source["split"] = "hash of the video id, 20% test (no trainSet/valSet/testSet.txt found)"
        records = []
        for vid, labs in labels.items():
            split = split_of.get(vid) if split_of else hash_split(vid)
            if split is None:
                continue  # listed in Annotations.txt but in none of the official splits
            records.append(ClipRecord(vid, index.find(f"{vid}.mp4", vid), tuple(sorted(labs)), split,
                                      expected=f"{vid}.mp4"))
        multi = sum(len(r.labels) > 1 for r in records)
        if multi:
            source["videos_with_several_events"] = multi
        found, missing = found_or_missing(records)
        classes = [(f"ave_{i}", c) for i, c in enumerate(CATEGORIES)]
        return ClipList(classes, task_of(r.labels for r in records), found, missing, source)
