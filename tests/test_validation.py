"""The validation split: stratified, disjoint from training and test, stable, recorded without
rewriting features; official splits are used where a dataset has one."""

import hashlib
import json

import numpy as np
import pytest

from avbench.cache import FeatureCache
from avbench.cache import format as fmt
from avbench.cache.validation import ROWS_FILE, stratified_folds, stratified_holdout
from avbench.cache.writer import CacheWriter
from helpers import tiny_cache


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_holdout_is_stratified_disjoint_and_recorded(tmp_path):
    c = FeatureCache(tiny_cache(tmp_path / "c", classes=6, train_clips=300))
    v = c.validation
    train = c.train_split()
    assert v.split == "train" and not v.official and v.record["source"] == "holdout"
    # 10% of every class (at least one), drawn from that class.
    cls = train.labels.argmax(1)
    per_class = np.bincount(cls, minlength=6)
    held = np.bincount(cls[v.rows], minlength=6)
    np.testing.assert_array_equal(held, np.maximum(1, np.round(0.1 * per_class)).astype(int))
    # Disjoint from the training rows, together all of them; disjoint from test by clip id.
    fit = c.fit_rows()
    assert np.intersect1d(fit, v.rows).size == 0
    np.testing.assert_array_equal(np.union1d(fit, v.rows), np.arange(len(train)))
    val = c.split("val")
    assert len(val) == len(v.rows) and not set(val.ids) & set(c.test_split().ids)
    np.testing.assert_array_equal(val.labels, train.labels[v.rows])
    np.testing.assert_array_equal(val.gather(np.array([1, 0]))["audio"].numpy(),
                                  np.asarray(train.audio[v.rows[[1, 0]]]))
    # Recorded in the manifest and beside the training split.
    manifest = json.loads((c.root / fmt.MANIFEST).read_text())
    assert manifest["validation"]["rows_file"] == f"train/{ROWS_FILE}"
    assert manifest["validation"]["size"] == len(v.rows)
    np.testing.assert_array_equal(np.load(c.root / "train" / ROWS_FILE), v.rows)


def test_holdout_is_stable_and_an_old_cache_gets_it_without_rewriting_features(tmp_path):
    a = FeatureCache(tiny_cache(tmp_path / "a")).validation.rows
    b = FeatureCache(tiny_cache(tmp_path / "b")).validation.rows
    np.testing.assert_array_equal(a, b)  # same cache contents, same rows, whatever the run
    other = FeatureCache(tiny_cache(tmp_path / "o", seed=1)).validation.rows
    assert not np.array_equal(a, other)  # other labels, other draw
    # A cache written before validation existed: no record, no rows file.
    root = tmp_path / "a"
    (root / "train" / ROWS_FILE).unlink()
    m = json.loads((root / fmt.MANIFEST).read_text())
    del m["validation"]
    fmt.write_json_atomic(root / fmt.MANIFEST, m)
    features = {p: _sha(p) for p in root.glob("*/*.npy")}
    first = FeatureCache(root).validation
    np.testing.assert_array_equal(first.rows, a)
    assert json.loads((root / fmt.MANIFEST).read_text())["validation"]["size"] == len(a)
    assert {p: _sha(p) for p in features} == features  # no feature, label or id file changed


def test_multilabel_holdout_keeps_a_rare_class():
    labels = np.zeros((50, 3), np.uint8)
    labels[:, 0] = 1
    labels[:3, 2] = 1  # class 2 is rare (3 clips), always with class 0
    rows = stratified_holdout(labels, np.arange(50), 0.1, seed=0)
    assert labels[rows, 2].sum() >= 1 and len(rows) == 1 + 5  # rare stratum: 1 of 3; the other: 5 of 47
    np.testing.assert_array_equal(rows, stratified_holdout(labels, np.arange(50), 0.1, seed=0))


def test_cv_folds_partition_the_clips_and_keep_every_class_in_every_fold():
    labels = np.eye(4, dtype=np.uint8)[np.r_[np.zeros(30, int), np.ones(13, int), np.full(5, 2), [3, 3]]]
    cands = np.arange(60, 110)  # rows of a bigger split; 50 candidates
    labels = np.concatenate([np.zeros((60, 4), np.uint8), labels])
    folds = stratified_folds(labels, cands, 5, seed=3)
    joined = np.concatenate(folds)
    np.testing.assert_array_equal(np.sort(joined), cands)  # disjoint and covering
    assert [len(f) for f in folds] == [10] * 5  # 30/13/5/2 dealt so that no fold is short
    per_class = np.array([labels[f].sum(axis=0) for f in folds])
    assert (per_class.max(axis=0) - per_class.min(axis=0) <= 1).all()  # stratified: within one clip
    assert (per_class[:, :3] >= 1).all()  # every class with at least k clips is in every fold
    assert all((np.diff(f) > 0).all() for f in folds)
    again = stratified_folds(labels, cands, 5, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(folds, again))
    assert not all(np.array_equal(a, b) for a, b in zip(folds, stratified_folds(labels, cands, 5, seed=4)))
    with pytest.raises(ValueError, match="at least 2 folds"):
        stratified_folds(labels, cands, 1)


def _cache_with_splits(path, names):
    m = fmt.Manifest(dataset="x", task="multiclass", num_classes=2, num_steps=2, audio_dim=3, video_dim=3, key="k")
    w = CacheWriter(path, m, [("a", "a"), ("b", "b")])
    for name in names:
        n = 10
        labels = np.eye(2, dtype=np.uint8)[np.arange(n) % 2]
        sw = w.create_split(name, [f"{name}{i}" for i in range(n)], labels)
        sw.write(np.arange(n), np.zeros((n, 2, 3), np.float16), np.zeros((n, 2, 3), np.float16))
    w.finalize()
    return FeatureCache(path)


def test_an_official_validation_split_is_used_as_is(tmp_path):
    c = _cache_with_splits(tmp_path / "c", ["train", "val", "test"])
    v = c.validation
    assert v.official and v.split == "val" and len(v.held_out) == 0
    np.testing.assert_array_equal(c.fit_rows(), np.arange(10))
    assert c.val_split() is c.split("val")
    # A "val" split that stands in for a missing test split is the test split, not validation.
    d = _cache_with_splits(tmp_path / "d", ["train", "val"])
    assert d.test_split_name() == "val" and not d.validation.official and d.validation.split == "train"
