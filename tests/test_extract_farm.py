"""Extraction end to end on the 25 real farm-animal clips in ../shared/data/farm-av (skipped if absent)."""

from __future__ import annotations

import numpy as np
import pytest

from avbench.cache import FeatureCache
from avbench.cache.verify import verify_cache
from avbench.cli import main


@pytest.mark.media
def test_farm_av_extracts_every_clip(shared_data, tmp_path, capsys):
    root = shared_data / "farm-av"
    out = tmp_path / "farm"
    rc = main(["extract", "--dataset", "csv", "--media-root", str(root), "--out", str(out),
               "--audio-model", "convnext_atto", "--video-model", "convnext_atto", "--no-pretrained",
               "--short-side", "64", "--compute-norm", "--workers", "1", "--batch-size", "5", "--no-progress"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "25/25 rows done, 0 failed, 0 without audio, 0 without video" in printed
    assert verify_cache(out) == []
    cache = FeatureCache(out)
    m = cache.manifest
    assert m.num_classes == 9 and (m.num_steps, m.audio_dim, m.video_dim) == (30, 320, 320)
    assert sum(len(cache.split(s)) for s in cache.split_names) == 25
    # Ten-second clips: 30 real frames each, audio within a few fbank frames of 1000, none cut.
    c = m.info["counts"]
    assert c["cut"] == 0 and c["video_padded"] == 0 and c["audio_padded"] == 0
    # AAC audio of real recordings: the measured statistics are in the range of AudioSet/VGGSound's.
    assert -9 < m.info["norm"]["mean"] < -2 and 2 < m.info["norm"]["std"] < 7
    for name in cache.split_names:
        s = cache.split(name)
        assert s.present.all()
        assert (s.extras["video_frames"] == 30).all() and (s.extras["audio_frames"] >= 990).all()
        assert s.onsets.any(axis=1).all()  # every recording has audible events
        assert np.isfinite(np.asarray(s.audio, np.float32)).all()
        assert np.isfinite(np.asarray(s.video, np.float32)).all()
        v = np.asarray(s.video, np.float32)
        # A looped still photograph: the frame features barely change over time.
        assert np.abs(v - v[:, :1]).max() < 0.05 * np.abs(v).max()
