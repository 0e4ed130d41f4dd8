"""``avbench cache verify``: find what would silently corrupt a benchmark before a run does."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from avbench.cache import format as fmt
from avbench.cache.reader import FeatureCache

CHUNK = 4096


def verify_cache(root: str | Path) -> list[str]:
    """Return a list of problems (empty when the cache is sound). Raises UserError if unopenable."""
    cache = FeatureCache(root)
    m = cache.manifest
    problems: list[str] = []
    try:
        classes = cache.classes
        if len(classes) != m.num_classes:
            problems.append(f"classes.csv has {len(classes)} rows, manifest says {m.num_classes}")
    except (OSError, KeyError, ValueError) as e:
        problems.append(f"classes.csv unreadable: {e}")
    for name, info in m.splits.items():
        try:
            split = cache.split(name)
        except (OSError, ValueError) as e:
            problems.append(f"{name}: cannot open arrays ({e})")
            continue
        n = info.get("size")
        expect = {
            "audio": (fmt.FEATURE_DTYPE, (n, m.num_steps, m.audio_dim)),
            "video": (fmt.FEATURE_DTYPE, (n, m.num_steps, m.video_dim)),
            "labels": ("uint8", (n, m.num_classes)),
            "present": ("bool", (n, 2)),
            "done": ("bool", (n,)),
        }
        if split.onsets is not None:
            expect["onsets"] = ("bool", (n, m.num_steps))
        ok_shapes = True
        for key, (dtype, shape) in expect.items():
            arr = getattr(split, key)
            if arr.dtype != np.dtype(dtype) or tuple(arr.shape) != shape:
                problems.append(f"{name}/{key}.npy is {arr.dtype}{list(arr.shape)}, expected {dtype}{list(shape)}")
                ok_shapes = False
        if len(split.ids) != n:
            problems.append(f"{name}/ids.txt has {len(split.ids)} ids for {n} rows")
        elif len(set(split.ids)) != n:
            problems.append(f"{name}/ids.txt has {n - len(set(split.ids))} duplicate ids")
        if not ok_shapes:
            continue
        not_done = int((~split.done).sum())
        if not_done:
            problems.append(f"{name}: {not_done} rows are not marked done")
        if split.labels.max(initial=0) > 1:
            problems.append(f"{name}/labels.npy has values other than 0/1")
        per_clip = split.labels.sum(1)
        if (per_clip == 0).any():
            problems.append(f"{name}: {int((per_clip == 0).sum())} clips have no label")
        if m.task == "multiclass" and (per_clip > 1).any():
            problems.append(f"{name}: {int((per_clip > 1).sum())} clips have several labels in a multiclass cache")
        for key in ("audio", "video"):
            arr = getattr(split, key)
            bad = 0
            for start in range(0, n, CHUNK):
                bad += int((~np.isfinite(np.asarray(arr[start:start + CHUNK], dtype=np.float32))).any(axis=(1, 2)).sum())
            if bad:
                problems.append(f"{name}/{key}.npy: {bad} rows contain NaN or Inf")
        for key in info.get("extras", []):
            if split.extras[key].shape[0] != n:
                problems.append(f"{name}/extra_{key}.npy has {split.extras[key].shape[0]} rows for {n}")
    return problems
