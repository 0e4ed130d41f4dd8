import json

import numpy as np
import pytest

from avbench.cache import CacheWriter, FeatureCache, Manifest
from avbench.cache.verify import verify_cache
from avbench.errors import UserError


def make_manifest(**over):
    base = dict(dataset="toy", task="multiclass", num_classes=3, num_steps=4, audio_dim=5, video_dim=2, key="k1")
    return Manifest(**{**base, **over})


def write_toy(root, n=6, finalize=True):
    rng = np.random.default_rng(0)
    w = CacheWriter(root, make_manifest(), [("m0", "a"), ("m1", "b"), ("m2", "c")])
    labels = np.eye(3, dtype=np.uint8)[np.arange(n) % 3]
    sw = w.create_split("train", [f"id{i}" for i in range(n)], labels)
    audio = rng.standard_normal((n, 4, 5)).astype(np.float16)
    video = rng.standard_normal((n, 4, 2)).astype(np.float16)
    onsets = rng.random((n, 4)) < 0.3
    present = np.ones((n, 2), bool)
    present[1, 1] = False
    sw.write(np.arange(n), audio, video, present=present, onsets=onsets)
    test = w.create_split("test", ["t0", "t1", "t2"], np.eye(3, dtype=np.uint8))  # a run needs both splits
    test.write(np.arange(3), audio[:3], video[:3])
    if finalize:
        w.finalize()
    return audio, video, labels, onsets, present


def test_round_trip(tmp_path):
    audio, video, labels, onsets, present = write_toy(tmp_path / "c")
    cache = FeatureCache(tmp_path / "c")
    s = cache.split("train")
    assert cache.features.audio_dim == 5 and cache.features.video_dim == 2 and cache.features.num_steps == 4
    assert cache.task.num_classes == 3 and cache.task.class_names == ("a", "b", "c")
    idx = np.array([4, 0, 2])
    b = s.gather(idx)
    np.testing.assert_array_equal(b["audio"].numpy(), audio[idx])
    np.testing.assert_array_equal(b["video"].numpy(), video[idx])
    np.testing.assert_array_equal(b["labels"].numpy(), labels[idx])
    np.testing.assert_array_equal(b["onsets"].numpy(), onsets[idx])
    assert not s.present[1, 1] and s.ids[4] == "id4"
    d = s.to_device("cpu").gather(np.array([4, 0, 2]))
    np.testing.assert_array_equal(d["audio"].numpy(), audio[idx])
    assert verify_cache(tmp_path / "c") == []


def test_unfinished_cache_is_refused_and_resumes(tmp_path):
    root = tmp_path / "c"
    w = CacheWriter(root, make_manifest(), [("m0", "a"), ("m1", "b"), ("m2", "c")])
    sw = w.create_split("train", ["a", "b", "c"], np.eye(3, dtype=np.uint8))
    sw.write([0], np.ones((1, 4, 5)), np.ones((1, 4, 2)))
    with pytest.raises(UserError, match="unfinished"):
        FeatureCache(root)
    # A second writer (a resumed run) sees the written row as done and only the rest pending.
    w2 = CacheWriter(root, make_manifest(), [("m0", "a"), ("m1", "b"), ("m2", "c")])
    sw2 = w2.create_split("train", ["a", "b", "c"], np.eye(3, dtype=np.uint8))
    assert sw2.pending().tolist() == [1, 2]
    assert float(sw2.audio[0, 0, 0]) == 1.0
    with pytest.raises(RuntimeError, match="2 rows not written"):
        w2.finalize()
    sw2.write([1, 2], np.zeros((2, 4, 5)), np.zeros((2, 4, 2)))
    w2.finalize()
    assert FeatureCache(root).split("train").done.all()
    # Settings that differ from the unfinished cache's are refused.
    (root / "manifest.json").unlink()
    (root / "manifest.pending.json").write_text(json.dumps(make_manifest(key="other").to_json()))
    with pytest.raises(UserError, match="other settings"):
        CacheWriter(root, make_manifest(), [("m0", "a"), ("m1", "b"), ("m2", "c")])


@pytest.mark.parametrize("corrupt, expected", [
    (lambda d: _edit(d / "train" / "audio.npy", lambda a: a.__setitem__((2, 1, 0), np.nan)), "NaN or Inf"),
    (lambda d: _edit(d / "train" / "labels.npy", lambda a: a.__setitem__((0, 1), 3)), "values other than 0/1"),
    (lambda d: _edit(d / "train" / "labels.npy", lambda a: a.__setitem__((0, slice(None)), 0)), "have no label"),
    (lambda d: _edit(d / "train" / "labels.npy", lambda a: a.__setitem__((0, slice(None)), 1)), "several labels"),
    (lambda d: _edit(d / "train" / "done.npy", lambda a: a.__setitem__(3, False)), "1 rows are not marked done"),
    (lambda d: (d / "train" / "ids.txt").write_text("id0\nid1\n"), "2 ids for 6 rows"),
    (lambda d: (d / "train" / "ids.txt").write_text("x\n" * 6), "duplicate ids"),
    (lambda d: np.save(d / "train" / "video.npy", np.zeros((6, 4, 2), np.float32)), "expected float16"),
    (lambda d: np.save(d / "train" / "audio.npy", np.zeros((6, 3, 5), np.float16)), "expected float16[6, 4, 5]"),
])
def test_verify_finds_corruption(tmp_path, corrupt, expected):
    root = tmp_path / "c"
    write_toy(root)
    assert verify_cache(root) == []
    corrupt(root)
    problems = verify_cache(root)
    assert any(expected in p for p in problems), problems


def _edit(path, fn):
    a = np.load(path)
    fn(a)
    np.save(path, a)


def test_cache_cli_info_and_verify(tmp_path, capsys):
    from avbench.cli import main

    write_toy(tmp_path / "c")
    assert main(["cache", "info", str(tmp_path / "c")]) == 0
    out = capsys.readouterr().out
    assert "toy (multiclass, 3 classes)" in out and "T=4" in out
    assert main(["cache", "verify", str(tmp_path / "c")]) == 0
    _edit(tmp_path / "c" / "train" / "video.npy", lambda a: a.__setitem__((0, 0, 0), np.inf))
    assert main(["cache", "verify", str(tmp_path / "c")]) == 1
    assert "NaN or Inf" in capsys.readouterr().out
    assert main(["cache", "info", str(tmp_path / "missing")]) == 2


def test_atomic_writes_get_the_umask_mode_not_mkstemps_0600(tmp_path):
    """A manifest or result replaced atomically stays readable by the others a umask lets read it."""
    import os
    import stat

    from avbench.cache.format import write_json_atomic

    old = os.umask(0o022)
    try:
        write_json_atomic(tmp_path / "a.json", {"x": 1})
        os.umask(0o077)
        write_json_atomic(tmp_path / "b.json", {"x": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "b.json").stat().st_mode) == 0o600
