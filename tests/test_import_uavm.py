"""The UAVM importer on per-clip npy files laid out as the authors publish them."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from avbench.cache import FeatureCache
from avbench.cache.import_uavm import balanced_weights, import_uavm
from avbench.cache.verify import verify_cache
from avbench.cli import main
from avbench.errors import UserError

MIDS = ["vgg_0", "vgg_1", "vgg_2", "vgg_3"]


def _layout(tmp_path, n_train=7, n_test=3, audio_steps=30, drop=()):
    """Write the authors' layout: label CSV, two datafile JSONs, afeat/ and vfeat/ npy files."""
    (tmp_path / "afeat").mkdir()
    (tmp_path / "vfeat").mkdir()
    labels_csv = tmp_path / "class_labels_indices.csv"
    labels_csv.write_text("index,mid,display_name\n" + "".join(
        f'{i},{m},"class {i}, with comma"\n' for i, m in enumerate(MIDS)))
    rng = np.random.default_rng(0)
    truth = {}
    files = {}
    for split, n in (("train", n_train), ("test", n_test)):
        data = []
        for i in range(n):
            cid = f"{split}Yt{i:03d}_{i * 10:06d}"
            # Mixed orders on purpose: row order must follow the JSON, not the ids.
            labs = [MIDS[(i * 3 + len(split)) % 4]] + ([MIDS[0]] if i % 3 == 0 and split == "train" else [])
            a = rng.standard_normal((audio_steps, 16)).astype(np.float32)
            v = rng.standard_normal((30, 12)).astype(np.float16)
            if cid not in drop:
                np.save(tmp_path / "afeat" / f"{cid}.npy", a)
            np.save(tmp_path / "vfeat" / f"{cid}.npy", v)
            data.append({"video_id": cid, "wav": f"/x/{cid}.flac", "labels": ",".join(labs),
                         "afeat": str(tmp_path / "afeat" / f"{cid}.npy"),
                         "vfeat": str(tmp_path / "vfeat" / f"{cid}.npy")})
            truth[cid] = (a, v, labs)
        data = data[::-1] if split == "train" else data
        files[split] = tmp_path / f"{split}.json"
        files[split].write_text(json.dumps({"data": data}))
    return labels_csv, files, truth


def test_import_keeps_json_order_features_and_labels(tmp_path):
    labels_csv, files, truth = _layout(tmp_path, audio_steps=31)
    out = tmp_path / "cache"
    s = import_uavm(files["train"], files["test"], labels_csv, out, progress=False)
    assert verify_cache(out) == []
    cache = FeatureCache(out)
    m = cache.manifest
    assert (m.num_steps, m.audio_dim, m.video_dim, m.num_classes) == (30, 16, 12, 4)
    assert m.task == "multilabel"  # some training clips carry two labels
    assert m.provenance["source"].startswith("UAVM authors")
    assert m.extractor["audio"]["name"] == "uavm-released"
    assert [n for _, n in cache.classes][0] == "class 0, with comma"
    assert m.validation["source"] == "holdout" and m.validation["size"] >= 1  # recorded by the import
    train = cache.split("train")
    order = [d["video_id"] for d in json.loads(files["train"].read_text())["data"]]
    assert train.ids == order
    for row, cid in enumerate(order):
        a, v, labs = truth[cid]
        np.testing.assert_array_equal(train.audio[row], a[:30].astype(np.float16))  # 31 steps cut to 30
        np.testing.assert_array_equal(train.video[row], v)
        assert sorted(np.flatnonzero(train.labels[row])) == sorted(MIDS.index(x) for x in labs)
    assert s["info"]["counts"]["cut"] == 10  # every audio file had 31 steps
    assert s["info"]["counts"]["failed"] == 0
    assert cache.split("test").ids == [d["video_id"] for d in json.loads(files["test"].read_text())["data"]]


def test_weights_csv_is_checked(tmp_path):
    labels_csv, files, _ = _layout(tmp_path)
    data = json.loads(files["train"].read_text())["data"]
    labs = [tuple(sorted(MIDS.index(m) for m in d["labels"].split(","))) for d in data]
    w = balanced_weights(labs, 4)
    # Hand check of the formula on the first clip: 1000 / (count + 0.01) summed over its labels.
    counts = np.bincount([x for lab in labs for x in lab], minlength=4)
    assert w[0] == pytest.approx(sum(1000 / (counts[c] + 0.01) for c in labs[0]))
    good = tmp_path / "weights.csv"
    np.savetxt(good, w, delimiter=",")
    s = import_uavm(files["train"], files["test"], labels_csv, tmp_path / "ok", weights_csv=good, progress=False)
    assert FeatureCache(s["cache"]).manifest.provenance["weights_csv"]["max_relative_difference"] < 1e-6
    bad = tmp_path / "bad.csv"
    swapped = w.copy()
    j = int(np.flatnonzero(w != w[0])[0])
    swapped[[0, j]] = swapped[[j, 0]]
    np.savetxt(bad, swapped, delimiter=",")  # right values, wrong order
    with pytest.raises(UserError, match="JSON order or labels differ"):
        import_uavm(files["train"], files["test"], labels_csv, tmp_path / "no", weights_csv=bad, progress=False)
    assert not (tmp_path / "no").exists()  # checked before anything is written
    short = tmp_path / "short.csv"
    np.savetxt(short, w[:-1])
    with pytest.raises(UserError, match="6 weights for 7"):
        import_uavm(files["train"], files["test"], labels_csv, tmp_path / "no2", weights_csv=short, progress=False)


def test_missing_feature_file_is_recorded_not_fatal(tmp_path):
    labels_csv, files, _ = _layout(tmp_path, drop=("trainYt002_000020",))
    out = tmp_path / "cache"
    s = import_uavm(files["train"], files["test"], labels_csv, out, progress=False)
    assert s["info"]["counts"]["no_audio"] == 1
    split = FeatureCache(out).split("train")
    row = split.ids.index("trainYt002_000020")
    assert split.present[row].tolist() == [False, True]
    assert not split.audio[row].any()
    fails = [json.loads(x) for x in (out / "failures.jsonl").read_text().splitlines()]
    assert [(f["id"], f["modality"], f["reason"]) for f in fails] == [("trainYt002_000020", "audio", "file not found")]


def test_bad_inputs_are_user_errors(tmp_path):
    labels_csv, files, _ = _layout(tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"data": [{"labels": "vgg_9", "afeat": "a.npy", "vfeat": "v.npy"}]}))
    with pytest.raises(UserError, match="vgg_9 not in the label CSV"):
        import_uavm(bad, files["test"], labels_csv, tmp_path / "c", progress=False)
    bad.write_text(json.dumps({"data": [{"labels": "vgg_1", "afeat": "a.npy"}]}))
    with pytest.raises(UserError, match="lacks vfeat"):
        import_uavm(bad, files["test"], labels_csv, tmp_path / "c", progress=False)


def test_cli_import_and_resume(tmp_path, capsys):
    labels_csv, files, _ = _layout(tmp_path)
    out = tmp_path / "cache"
    args = ["cache", "import-uavm", "--train-json", str(files["train"]), "--test-json", str(files["test"]),
            "--labels", str(labels_csv), "--out", str(out), "--no-progress"]
    assert main(args) == 0
    assert "10/10 rows" in capsys.readouterr().out
    assert main(args) == 0  # a rerun finds the finished cache with the same key
    assert "already complete" in capsys.readouterr().out
    assert main(["cache", "verify", str(out)]) == 0


def test_interrupted_import_resumes_to_the_same_cache(tmp_path):
    labels_csv, files, _ = _layout(tmp_path, n_train=9)
    ref = tmp_path / "ref"
    import_uavm(files["train"], files["test"], labels_csv, ref, progress=False)
    out = tmp_path / "cut"
    # Kill an import after its first chunk: CHUNK=2 through the module global, in a child process.
    code = (
        "import os, sys, avbench.cache.import_uavm as m\n"
        "m.CHUNK = 2\n"
        "orig = m.CacheWriter.create_split\n"
        "def create(self, *a, **k):\n"
        "    sw = orig(self, *a, **k)\n"
        "    w = sw.write\n"
        "    def write(*a, **k):\n"
        "        w(*a, **k)\n"
        "        os._exit(9)\n"
        "    sw.write = write\n"
        "    return sw\n"
        "m.CacheWriter.create_split = create\n"
        f"m.import_uavm({str(files['train'])!r}, {str(files['test'])!r}, {str(labels_csv)!r}, {str(out)!r},"
        " progress=False)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 9, r.stderr
    assert not (out / "manifest.json").exists()
    assert int(np.load(out / "train" / "done.npy").sum()) == 2
    import_uavm(files["train"], files["test"], labels_csv, out, progress=False)
    a, b = FeatureCache(ref), FeatureCache(out)
    for split in ("train", "test"):
        for key in ("audio", "video", "labels", "present", "done"):
            np.testing.assert_array_equal(getattr(a.split(split), key), getattr(b.split(split), key))
        assert a.split(split).ids == b.split(split).ids
    assert a.manifest.key == b.manifest.key
