"""End-to-end extraction on media the test writes itself (avbench.extract.testmedia.write_test_folder):
shapes, onsets at the click steps, silent / missing / broken files, counts, resume after a kill, CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from avbench.cache import FeatureCache
from avbench.cache.verify import verify_cache
from avbench.cli import main
from avbench.errors import UserError
from avbench.extract.pipeline import Extraction, ExtractSettings, RunOptions
from avbench.extract.testmedia import CLICK_CLIPS, write_test_folder
from avbench.registry import load_dataset

SMALL = dict(audio_model="convnext_atto", video_model="convnext_atto", pretrained=False, short_side=32)
CLICKS = CLICK_CLIPS


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_test_folder(tmp_path_factory.mktemp("media"))


@pytest.fixture(scope="module")
def extracted(folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("cache") / "c"
    summary = Extraction(load_dataset("csv"), folder, out, settings=ExtractSettings(**SMALL),
                         options=RunOptions(workers=1, batch_size=3, compute_norm=True, progress=False)).run()
    return out, summary


def row(split, cid):
    return split.ids.index(cid)


def test_shapes_manifest_and_key(extracted):
    out, summary = extracted
    assert verify_cache(out) == []
    cache = FeatureCache(out)
    m = cache.manifest
    assert (m.num_steps, m.audio_dim, m.video_dim) == (30, 320, 320)  # convnext_atto width
    assert m.dataset == "csv" and m.task == "multiclass" and [n for _, n in cache.classes] == ["cat", "dog"]
    assert {s: len(cache.split(s)) for s in cache.split_names} == {"train": 7, "test": 4}
    for side in ("audio", "video"):
        assert m.extractor[side]["name"] == "convnext_atto"
        assert m.extractor[side]["weights"] == "random-init:seed0"
    assert m.extractor["audio"]["in_chans"] == 1
    st = m.extractor["settings"]
    assert (st["target_length"], st["fps"], st["short_side"], st["mel_bins"]) == (1000, 3.0, 32, 128)
    assert st["audio_steps_from_model"] == 31 and st["audio_step_frames"] == 32
    assert len(m.key) == 12 and m.key == summary["key"]
    norm = m.info["norm"]
    assert norm["source"] == "computed" and norm["clips"] == 4  # c0, c1, c4 and silent: the train clips with audio
    assert st["norm_mean"] == norm["mean"] and -20 < norm["mean"] < 0 and norm["std"] > 0


def test_counts_failures_and_missing(extracted):
    out, _ = extracted
    info = FeatureCache(out).manifest.info
    c = info["counts"]
    assert (c["clips"], c["done"], c["failed"], c["no_audio"], c["no_video"]) == (11, 11, 3, 1, 1)
    assert c["padded"] == 8 and c["cut"] == 0  # every readable clip is shorter than 10 s
    fails = {json.loads(x)["id"]: json.loads(x)["reason"] for x in (out / "failures.jsonl").read_text().splitlines()}
    assert sorted(fails) == ["text", "trunc", "zero"]
    assert all(r.startswith("cannot open") for r in fails.values())
    assert info["missing_media"] == 1
    assert (out / "missing.txt").read_text().splitlines()[1].startswith("train\tgone\t")
    assert not list(out.glob("failures.part*"))


def test_features_presence_and_onsets(extracted):
    out, _ = extracted
    cache = FeatureCache(out)
    tr, te = cache.split("train"), cache.split("test")
    for cid, (_label, split, steps) in CLICKS.items():
        s = tr if split == "train" else te
        i = row(s, cid)
        assert s.present[i].tolist() == [True, True]
        assert np.flatnonzero(s.onsets[i]).tolist() == list(steps), cid
        a, v = np.asarray(s.audio[i], np.float32), np.asarray(s.video[i], np.float32)
        assert np.isfinite(a).all() and np.abs(a).sum(1).min() > 0  # 31 model steps cut to 30, none empty
        assert np.abs(v[:9]).sum(1).min() > 0 and not v[9:].any()  # 3 s -> 9 frames, the rest padded
        assert s.extras["video_frames"][i] == 9 and 295 <= s.extras["audio_frames"][i] <= 305
    i = row(tr, "silent")
    assert tr.present[i].tolist() == [True, True] and not tr.onsets[i].any()
    assert np.abs(np.asarray(tr.audio[i], np.float32)).sum() > 0  # silence is still a spectrogram
    i = row(tr, "noaudio")
    assert tr.present[i].tolist() == [False, True] and not tr.audio[i].any() and not tr.onsets[i].any()
    i = row(te, "audioonly")
    assert te.present[i].tolist() == [True, False] and not te.video[i].any()
    assert te.onsets[i].sum() == 1
    for cid, s in (("trunc", tr), ("zero", te), ("text", tr)):
        i = row(s, cid)
        assert s.present[i].tolist() == [False, False] and s.extras["flags"][i] & 1
        assert not s.audio[i].any() and not s.video[i].any()
    # Different clips give different features (the model really ran on each).
    assert not np.array_equal(tr.audio[row(tr, "c0")], tr.audio[row(tr, "c1")])


def test_rerun_of_finished_cache_and_changed_settings(extracted, folder):
    out, _ = extracted
    card = load_dataset("csv")
    opts = RunOptions(workers=0, batch_size=3, compute_norm=True, progress=False)
    again = Extraction(card, folder, out, settings=ExtractSettings(**SMALL), options=opts).run()
    assert again.get("complete") is True
    with pytest.raises(UserError, match="other settings"):
        Extraction(card, folder, out, settings=ExtractSettings(**{**SMALL, "fps": 2.0}), options=opts).run()


def test_card_without_norm_needs_compute_norm(folder, tmp_path):
    with pytest.raises(UserError, match="--compute-norm"):
        Extraction(load_dataset("csv"), folder, tmp_path / "x", settings=ExtractSettings(**SMALL),
                   options=RunOptions(workers=0, progress=False)).run()


def _cli(folder: Path, out: Path, *extra: str) -> list[str]:
    return ["extract", "--dataset", "csv", "--media-root", str(folder), "--out", str(out),
            "--audio-model", "convnext_atto", "--video-model", "convnext_atto", "--no-pretrained",
            "--short-side", "32", "--compute-norm", "--no-progress", "--threads", "1", *extra]


def test_killed_run_resumes_to_the_uninterrupted_cache(folder, tmp_path, capsys):
    # One model thread in every run: a different thread count changes float reduction order, and the
    # last bits of some features with it (the cache stays within fp16 rounding, but not bit-equal).
    ref = tmp_path / "ref"
    assert main(_cli(folder, ref, "--workers", "0", "--batch-size", "1")) == 0
    printed = capsys.readouterr().out
    assert "11/11 rows done, 3 failed, 1 without audio, 1 without video, 8 padded, 0 cut" in printed
    assert "missing.txt" in printed and "failures.jsonl" in printed
    out = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "avbench", *_cli(folder, out, "--workers", "0", "--batch-size", "1")]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    done_file = out / "train" / "done.npy"
    deadline = time.time() + 120
    done = 0
    while time.time() < deadline and proc.poll() is None:
        try:
            done = int(np.load(done_file).sum())
        except (OSError, ValueError, EOFError):
            done = 0
        if done >= 2:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    assert not (out / "manifest.json").exists()
    assert 2 <= int(np.load(done_file).sum()) < 7
    assert main(_cli(folder, out, "--workers", "1", "--batch-size", "1")) == 0
    a, b = FeatureCache(ref), FeatureCache(out)
    assert a.manifest.key == b.manifest.key
    assert a.manifest.info["counts"] == b.manifest.info["counts"]
    for split in ("train", "test"):
        sa, sb = a.split(split), b.split(split)
        assert sa.ids == sb.ids
        for key in ("audio", "video", "labels", "present", "onsets", "done"):
            np.testing.assert_array_equal(getattr(sa, key), getattr(sb, key), err_msg=f"{split}/{key}")
        for key in sa.extras:
            np.testing.assert_array_equal(sa.extras[key], sb.extras[key])
    fa = sorted((out / "failures.jsonl").read_text().splitlines())
    assert fa == sorted((ref / "failures.jsonl").read_text().splitlines())


def test_cli_user_errors(folder, tmp_path, capsys):
    assert main(_cli(folder, tmp_path / "o", "--audio-model", "no_such_model_xyz")) == 2
    assert "unknown timm model 'no_such_model_xyz'" in capsys.readouterr().err
    assert main(["extract", "--dataset", "synth", "--media-root", str(folder), "--out", str(tmp_path / "s")]) == 2
    assert "not extracted from media" in capsys.readouterr().err
    assert main(_cli(folder, tmp_path / "w", "--audio-weights", str(tmp_path / "nope.pth"))) == 2
    assert "weights file not found" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "manifest.csv").write_text("file,label\nx.mp4,a\ny.mp4,b\n")
    assert main(_cli(empty, tmp_path / "e")) == 2
    assert "none of the 2 listed media files" in capsys.readouterr().err
