"""The validation split of a cache: the dataset's official one, or a stratified seeded hold-out.

Every choice a comparison makes (learning rate, training length, any tuned setting) must be made on
data that is neither trained on nor tested on, and it must be the *same* data for every strategy and
every run. A cache with an official validation split (AVE, LLP) uses it. Any other cache holds out a
stratified, seeded fraction of its training split (default 10%, at least one clip of every class
that has two or more), chosen from the labels alone, so it is identical across strategies, runs and
machines.

The hold-out is recorded without touching the features: ``<train split>/val_rows.npy`` lists the
held-out training rows (sorted) and ``manifest.json`` gains a ``validation`` entry naming the file,
the method, the fraction, the seed and a hash of the held-out clip ids. Importers and the synth
generator record it when they write a cache; a cache written before this existed gets it on first
use (a read-only cache gets the same rows computed in memory).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from avbench.cache import format as fmt
from avbench.locks import file_lock

OFFICIAL_NAMES = ("val", "validation", "valid")
ROWS_FILE = "val_rows.npy"
DEFAULT_FRACTION = 0.1
DEFAULT_SEED = 0
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Validation:
    """Where the validation clips are: ``rows`` of split ``split``; ``held_out`` rows of the training
    split that training must skip (empty when the split is official)."""

    split: str
    rows: np.ndarray
    official: bool
    held_out: np.ndarray
    record: dict[str, Any]


def official_split(split_names: list[str]) -> str | None:
    for name in OFFICIAL_NAMES:
        if name in split_names:
            return name
    return None


def stratified_holdout(labels: np.ndarray, candidates: np.ndarray, fraction: float = DEFAULT_FRACTION,
                       seed: int = DEFAULT_SEED) -> np.ndarray:
    """Sorted rows (a subset of ``candidates``) held out for validation, stratified by label.

    Each clip's stratum is its rarest label over the candidates (its only label for single-label
    data; clips with no label form one stratum). From every stratum of n clips, round(fraction * n)
    are drawn with a generator seeded by ``seed`` and the stratum's class, at least one when n >= 2
    (so every class that can spare a clip is validated) and never all of them (it stays trainable).
    """
    if not 0 < fraction < 1:
        raise ValueError(f"validation fraction must be in (0, 1), got {fraction}")
    candidates = np.asarray(candidates, dtype=np.int64)
    stratum = _strata(labels, candidates)
    picked = []
    for s in np.unique(stratum):
        members = candidates[stratum == s]
        n = len(members)
        k = min(n - 1, max(1, int(round(fraction * n)))) if n >= 2 else 0
        if k:
            rng = np.random.default_rng([seed, int(s) + 1])
            picked.append(rng.choice(members, size=k, replace=False))
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, np.int64)


def _strata(labels: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Each candidate's stratum: its rarest label over the candidates (-1 for a clip with no label)."""
    lab = np.asarray(labels).astype(bool)[candidates]
    rarity = np.where(lab, lab.sum(axis=0)[None, :], np.iinfo(np.int64).max)
    return np.where(lab.any(axis=1), rarity.argmin(axis=1), -1)


def stratified_folds(labels: np.ndarray, candidates: np.ndarray, k: int, seed: int = DEFAULT_SEED) -> list[np.ndarray]:
    """``k`` disjoint sorted row sets covering ``candidates``, stratified as the hold-out is.

    Each stratum (rarest label) is shuffled by a generator seeded by ``seed`` and the stratum, then
    dealt round-robin from a stratum-dependent fold, so every fold gets floor or ceil(n / k) of every
    stratum and the folds' sizes differ by at most one clip per stratum."""
    if k < 2:
        raise ValueError(f"cross-validation needs at least 2 folds, got {k}")
    candidates = np.asarray(candidates, dtype=np.int64)
    if len(candidates) < k:
        raise ValueError(f"{k} folds of {len(candidates)} clips: at least one clip per fold")
    stratum = _strata(labels, candidates)
    folds: list[list[np.ndarray]] = [[] for _ in range(k)]
    offset = 0
    for s in np.unique(stratum):
        members = np.random.default_rng([seed, int(s) + 1]).permutation(candidates[stratum == s])
        for i in range(k):
            folds[(offset + i) % k].append(members[i::k])
        offset += len(members) % k  # the next stratum's extra clips go to the folds short of one
    return [np.sort(np.concatenate(f)) for f in folds]


def cross_validation(train: Any, k: int, seed: int = DEFAULT_SEED) -> list[Validation]:
    """The ``k`` folds of a training split as validations: fold i validates, the rest train.

    Each carries a record like the hold-out's (method, k, fold, seed, size, a hash of its clip ids),
    so a tuning's trial says exactly which clips chose it."""
    candidates = np.flatnonzero(train.present.any(axis=1))
    out = []
    for i, rows in enumerate(stratified_folds(train.labels, candidates, k, seed)):
        record = {"source": "cv", "split": train.name, "method": "stratified k-fold by rarest label",
                  "k": k, "fold": i, "seed": seed, "size": int(len(rows)), "ids_sha256": ids_hash(train.ids, rows)}
        out.append(Validation(train.name, rows, False, rows, record))
    return out


def ids_hash(ids: list[str], rows: np.ndarray) -> str:
    h = hashlib.sha256()
    for r in rows:
        h.update(ids[int(r)].encode() + b"\n")
    return h.hexdigest()


def resolve(cache: Any, fraction: float = DEFAULT_FRACTION, seed: int = DEFAULT_SEED) -> Validation:
    """The cache's validation split, recording a new hold-out in the cache when it has none yet."""
    official = official_split(cache.split_names)
    if official is not None and official != cache.test_split_name():  # not the test split's stand-in
        split = cache.split(official)
        rows = np.flatnonzero(split.present.any(axis=1))
        return Validation(official, rows, True, np.zeros(0, np.int64),
                          {"source": "official", "split": official, "size": int(len(rows))})
    train = cache.train_split()
    record = dict(cache.manifest.validation or {})
    rows_path = cache.root / train.name / ROWS_FILE
    if record.get("source") == "holdout" and rows_path.exists():
        try:  # data only (never a pickle), and every row a row of the split, before anything indexes it
            rows = np.load(rows_path, allow_pickle=False)
            ok = (rows.ndim == 1 and rows.dtype.kind in "iu" and (len(rows) == 0 or (
                int(rows.min()) >= 0 and int(rows.max()) < len(train.ids) and bool((np.diff(rows) > 0).all()))))
        except (OSError, ValueError):
            rows, ok = np.zeros(0, np.int64), False
        if ok and record.get("ids_sha256") == ids_hash(train.ids, rows):
            return Validation(train.name, rows.astype(np.int64), False, rows.astype(np.int64), record)
        log.warning("%s: the recorded validation rows do not match the clip ids; recomputing", rows_path)
    candidates = np.flatnonzero(train.present.any(axis=1))
    rows = stratified_holdout(train.labels, candidates, fraction, seed)
    record = {"source": "holdout", "split": train.name, "method": "stratified by rarest label",
              "fraction": fraction, "seed": seed, "size": int(len(rows)),
              "rows_file": f"{train.name}/{ROWS_FILE}", "ids_sha256": ids_hash(train.ids, rows)}
    try:
        record_holdout(cache.root, rows_path, rows, record)
    except OSError as e:  # a read-only cache: the same rows, computed in memory every time
        log.warning("%s: cannot record the validation split (%s); using it unrecorded", cache.root, e)
    cache.manifest.validation = record
    return Validation(train.name, rows, False, rows, record)


def record_holdout(root: Path, rows_path: Path, rows: np.ndarray, record: dict[str, Any]) -> None:
    """Write the rows file, then the manifest entry, each atomically, under the cache's lock: concurrent
    first uses compute the same rows, and the manifest's read-modify-write must not lose another
    writer's change."""
    # Its own lock inside the cache (the cache's builder may hold the one beside it while it records).
    with file_lock(Path(root) / ".validation.lock", "recording the validation split"):
        _record_holdout(root, rows_path, rows, record)


def _record_holdout(root: Path, rows_path: Path, rows: np.ndarray, record: dict[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=rows_path.name + ".", suffix=".tmp", dir=rows_path.parent)
    try:
        os.fchmod(fd, fmt.umask_mode())
        with os.fdopen(fd, "wb") as f:
            np.save(f, np.asarray(rows, dtype=np.int64))
        os.replace(tmp, rows_path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    mpath = Path(root) / fmt.MANIFEST
    data = json.loads(mpath.read_text())
    if data.get("validation") != record:
        data["validation"] = record
        fmt.write_json_atomic(mpath, data)

