"""``avbench cache verify`` and the check ``run``/``eval`` make before using a cache.

Everything that would silently corrupt a benchmark, or crash it after an hour of training, is found
here first: a malformed manifest (not an object, keys missing, an unknown task, sizes that are not
counts), splits missing or empty, arrays whose shapes or dtypes disagree with the manifest, ids.txt
truncated or duplicated, rows not marked done, labels outside 0/1 or clips with none, a split where
no clip has any modality present, NaN or Inf features, a validation hold-out whose rows are not rows of
the training split. ``checked_cache`` remembers a clean result per cache version (``version``: the
manifest, and per file its size, times, inode and a sampled hash), so a run pays for the scan once.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from avbench.cache import format as fmt
from avbench.errors import UserError

CHUNK = 4096
TRAIN_NAMES = ("train", "balanced_train", "unbalanced_train")
TEST_NAMES = ("test", "eval", "val", "validation")
REQUIRED = {"dataset": str, "task": str, "num_classes": int, "num_steps": int, "audio_dim": int, "video_dim": int,
            "splits": dict}


def manifest_problems(data: Any) -> list[str]:
    """What is wrong with a manifest's structure (before anything is opened from it)."""
    if not isinstance(data, dict):
        return [f"manifest.json holds a {type(data).__name__}, expected an object"]
    problems = []
    for key, typ in REQUIRED.items():
        if key not in data:
            problems.append(f"manifest.json has no '{key}'")
        elif not isinstance(data[key], typ) or isinstance(data[key], bool):
            problems.append(f"manifest.json '{key}' is {data[key]!r}, expected {typ.__name__}")
    if problems:
        return problems
    if data["task"] not in fmt.TASKS:
        problems.append(f"manifest.json task '{data['task']}' is not one of {', '.join(fmt.TASKS)}")
    for key in ("num_classes", "num_steps", "audio_dim", "video_dim"):
        if data[key] < 1:
            problems.append(f"manifest.json {key}={data[key]} must be at least 1")
    splits = data["splits"]
    if not any(n in splits for n in TRAIN_NAMES):
        problems.append(f"no training split (one of {', '.join(TRAIN_NAMES)}); has {', '.join(splits) or 'none'}")
    if not any(n in splits for n in TEST_NAMES):
        problems.append(f"no test split (one of {', '.join(TEST_NAMES)}); has {', '.join(splits) or 'none'}")
    for name, info in splits.items():
        size = info.get("size") if isinstance(info, dict) else None
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            problems.append(f"{name}: manifest size {size!r} is not a count")
        elif size == 0:
            problems.append(f"{name}: the split is empty")
    return problems


def _open(root: Path) -> tuple[Any, list[str]]:
    """The opened cache, or None and why not (every failure as a problem, never a traceback)."""
    from avbench.cache.reader import FeatureCache

    mpath = root / fmt.MANIFEST
    if mpath.exists():
        try:
            data = json.loads(mpath.read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
            return None, [f"manifest.json unreadable ({e})"]
        problems = manifest_problems(data)
        if problems:
            return None, problems
    try:
        return FeatureCache(root), []  # UserError (no manifest, unfinished, schema) propagates
    except (TypeError, KeyError, ValueError, AttributeError) as e:
        return None, [f"manifest.json malformed ({type(e).__name__}: {e})"]


def verify_cache(root: str | Path) -> list[str]:
    """Return a list of problems (empty when the cache is sound). Raises UserError if unopenable."""
    cache, problems = _open(Path(root))
    if cache is None:
        return problems
    m = cache.manifest
    try:
        classes = cache.classes
        if len(classes) != m.num_classes:
            problems.append(f"classes.csv has {len(classes)} rows, manifest says {m.num_classes}")
    except (OSError, KeyError, ValueError) as e:
        problems.append(f"classes.csv unreadable: {e}")
    for name, info in m.splits.items():
        problems += split_problems(cache, name, info)
    problems += validation_problems(cache)
    return problems


def validation_problems(cache: Any) -> list[str]:
    """The recorded validation hold-out (``<train>/val_rows.npy``): integer rows of the training split,
    sorted and distinct, read as data only. A row out of range would be an IndexError mid-run."""
    record = cache.manifest.validation or {}
    rel = record.get("rows_file") if isinstance(record, dict) else None
    if record.get("source") != "holdout" or not isinstance(rel, str):
        return []
    path = (cache.root / rel).resolve()
    if cache.root.resolve() not in path.parents:
        return [f"manifest.json validation rows_file '{rel}' points outside the cache"]
    if not path.exists():
        return []  # recomputed (and recorded) on first use
    split_name = record.get("split", "train")
    size = (cache.manifest.splits.get(split_name) or {}).get("size")
    try:
        rows = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        return [f"{rel}: unreadable ({str(e).splitlines()[0][:200]})"]
    if rows.ndim != 1 or rows.dtype.kind not in "iu":
        return [f"{rel} is {rows.dtype}{list(rows.shape)}, expected a 1-D array of integer rows"]
    if len(rows) and isinstance(size, int):
        lo, hi = int(rows.min()), int(rows.max())
        if lo < 0 or hi >= size:
            return [f"{rel}: row {hi if hi >= size else lo} is out of range [0, {size}) of the {split_name} split"]
    if len(rows) > 1 and not bool((np.diff(rows) > 0).all()):
        return [f"{rel}: rows are not sorted and distinct"]
    if len(rows) != record.get("size", len(rows)):
        return [f"{rel} has {len(rows)} rows, manifest.json validation says {record.get('size')}"]
    return []


def split_problems(cache: Any, name: str, info: dict[str, Any]) -> list[str]:
    from avbench.cache.reader import CacheSplit

    m = cache.manifest
    try:
        split = CacheSplit(cache.root / name, info)
    except (OSError, ValueError, EOFError) as e:
        return [f"{name}: cannot open arrays ({e})"]
    problems: list[str] = []
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
        return problems
    not_done = int((~split.done).sum())
    if not_done:
        problems.append(f"{name}: {not_done} rows are not marked done")
    if not split.present.any():
        problems.append(f"{name}: no clip has audio or video present")
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


# --- the check before use, remembered per cache version ----------------------------------------------
def version(root: Path) -> str:
    """What identifies the cache's content without reading it all: the manifest's bytes, and for every
    file a run reads its size, mtime, ctime and inode plus a sampled hash of its bytes. A same-size
    edit that puts the mtime back (``os.utime``) still moves the ctime, which no user can set, and a
    sample of the file's blocks is hashed too, so the remembered verification is not fooled by it."""
    h = hashlib.sha256(str(root.resolve()).encode())
    mpath = root / fmt.MANIFEST
    h.update(mpath.read_bytes() if mpath.exists() else b"")
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.suffix in (".npy", ".txt", ".csv"):
            st = p.stat()
            h.update(f"{p.relative_to(root)}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}:{st.st_ino}".encode())
            h.update(sampled_digest(p, st.st_size))
    return h.hexdigest()


SAMPLE_BLOCKS = 32
SAMPLE_BYTES = 4096


def sampled_digest(path: Path, size: int) -> bytes:
    """A hash of ``SAMPLE_BLOCKS`` evenly spaced blocks of the file (all of a small file): cheap on a
    25 GB cache, and it changes with any edit that touches a sampled block."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        if size <= SAMPLE_BLOCKS * SAMPLE_BYTES:
            h.update(f.read())
        else:
            step = (size - SAMPLE_BYTES) // (SAMPLE_BLOCKS - 1)
            for i in range(SAMPLE_BLOCKS):
                f.seek(i * step)
                h.update(f.read(SAMPLE_BYTES))
    return h.digest()


def _memo(root: Path) -> Path:
    from avbench.paths import cache_root

    return cache_root() / ".verified" / f"{version(root)}.ok"


def checked_cache(root: str | Path) -> Any:
    """Open a cache for a run or an evaluation, refusing it (one line) when ``verify_cache`` finds a
    problem. A clean result is remembered per cache version, so the scan runs once."""
    from avbench.cache.reader import FeatureCache

    root = Path(root)
    cache, problems = _open(root)
    if cache is None:
        raise UserError(f"{root}: {problems[0]}" + _more(problems))
    try:
        memo = _memo(root)
    except OSError:
        memo = None
    if memo is not None and memo.exists():
        return cache
    problems = verify_cache(root)
    if problems:
        raise UserError(f"{root}: {problems[0]}" + _more(problems))
    if memo is not None:
        try:
            memo.parent.mkdir(parents=True, exist_ok=True)
            memo.write_text(str(root.resolve()) + "\n")
        except OSError:
            pass  # a read-only cache dir: verify again next time
    return FeatureCache(root) if cache is None else cache


def _more(problems: list[str]) -> str:
    extra = len(problems) - 1
    return f" (and {extra} more; see avbench cache verify)" if extra else " (see avbench cache verify)"
