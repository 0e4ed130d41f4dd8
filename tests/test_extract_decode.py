"""Decoding and the audio front end: real files in many containers, generated clips, broken files."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torchaudio

from avbench.extract import audio as afe
from avbench.extract.decode import DecodeError, decode_clip, scaled_size
from avbench.extract.loader import FrontEnd, Job, load_clip
from avbench.extract.onsets import onset_steps
from avbench.extract.testmedia import write_clip

# file: (audio seconds, video seconds, channels in the file). Durations are those of
# shared/data/README.md except where a stream says otherwise:
# - asf.asf: the header claims 4.4 s, but both streams run to 6.44 s with a 1.1 s hole in the
#   middle (161 frames, audio pts 0.09..6.39); the hole is kept as silence / a held frame.
# - balle1-vp9.avi: the video lasts 1.6 s, its mp3 track only 47 x 1152 samples = 1.128 s.
# - mkv.mkv: the 6-channel AAC track's timestamps jump back at 2.26 s; samples already covered are
#   dropped, leaving the 3.6 s timeline (within the 0.1 s tolerance).
MEDIA = {
    "mp4.mp4": (5.6, 5.6, 1), "mov.mov": (5.6, 5.6, 1), "webm.webm": (5.6, 5.6, 1), "ogg.ogv": (5.5, 5.5, 1),
    "flv.flv": (5.6, 5.6, 1), "3gp.3gp": (5.5, 5.5, 1), "asf.asf": (6.44, 6.44, 2), "rmvb.rmvb": (5.6, 5.6, 1),
    "mkv.mkv": (3.6, 3.6, 6), "kphotoalbum-movie.avi": (4.5, 4.5, 1), "balle1-vp9.avi": (1.128, 1.6, 2),
    "balle-jbart-silent.mp4": (10.2, 10.2, 2),
}


@pytest.mark.media
@pytest.mark.parametrize("name", sorted(MEDIA))
def test_media_formats_decode_to_their_duration(shared_data, name):
    path = shared_data / "media-formats" / name
    a_sec, v_sec, _channels = MEDIA[name]
    clip = decode_clip(path, max_seconds=None)
    # 3 fps: one frame per started third of a second of video.
    assert clip.frames is not None and clip.frames.dtype == np.uint8
    assert abs(len(clip.frames) - v_sec * 3) <= 1.0, (len(clip.frames), v_sec)
    assert len(clip.frames) == math.ceil(clip.video_seconds * 3 - 1e-6)
    assert abs(clip.video_seconds - v_sec) < 0.1
    h, w = clip.frames.shape[1:3]
    assert min(h, w) == 224
    # Mono at the file's rate, then 16 kHz: samples match the audio duration.
    assert clip.waveform is not None and clip.waveform.ndim == 1
    wave = afe.resample(clip.waveform, clip.sample_rate)
    assert abs(len(wave) / afe.SAMPLE_RATE - a_sec) < 0.1, (len(wave) / 16000, a_sec)
    assert np.isfinite(wave).all() and np.abs(wave).max() <= 1.0 + 1e-3
    fb = afe.fbank(wave)
    assert fb.shape == (1 + (len(wave) - 400) // 160, 128) and torch.isfinite(fb).all()


@pytest.mark.media
def test_long_clip_is_cut_to_the_window_and_silence_stays_silent(shared_data):
    fe = FrontEnd(norm_mean=-5.081, norm_std=4.4849)
    item = load_clip(Job("t", 0, "silent", str(shared_data / "media-formats" / "balle-jbart-silent.mp4")), fe)
    assert item["error"] is None
    assert item["audio_frames"] == 1000 and item["video_frames"] == 30  # 10.2 s: cut to 10 s
    assert item["audio_cut"] and item["video_cut"]
    assert item["frames"].shape == (30, 224, 280, 3)  # 720x576 -> short side 224, aspect kept
    assert not item["onsets"].any()  # digital silence has no onsets
    assert torch.isfinite(item["fbank"]).all() and item["fbank"].shape == (1000, 128)


@pytest.mark.media
def test_six_channel_audio_is_the_channel_mean(shared_data):
    import av

    path = shared_data / "media-formats" / "mkv.mkv"
    with av.open(str(path)) as c:
        frame = next(f for f in c.decode(audio=0))
        planes = frame.to_ndarray()
    assert planes.shape[0] == 6
    clip = decode_clip(path, max_seconds=None, video=False)
    np.testing.assert_allclose(clip.waveform[: frame.samples], planes.mean(0), atol=1e-6)


def test_fbank_matches_the_reference_recipe():
    rng = np.random.default_rng(0)
    wave = (0.1 * rng.standard_normal(16000) + 0.3).astype(np.float32)  # with a DC offset
    w = torch.from_numpy(wave)
    ref = torchaudio.compliance.kaldi.fbank((w - w.mean())[None], htk_compat=True, sample_frequency=16000,
                                            use_energy=False, window_type="hanning", num_mel_bins=128, dither=0.0,
                                            frame_shift=10)
    got, frames = afe.front_end(wave, 120, afe.AudioNorm(-5.081, 4.4849))
    assert frames == ref.shape[0] == 98
    torch.testing.assert_close(got[:98], (ref - -5.081) / 4.4849)
    # Padding is zeros in the log-mel domain, normalised like the rest (as the reference loader).
    torch.testing.assert_close(got[98:], torch.full((22, 128), 5.081 / 4.4849))


def test_scaled_size_keeps_aspect_without_crop():
    assert scaled_size(320, 240, 224) == (298, 224)
    assert scaled_size(240, 320, 224) == (224, 298)
    assert scaled_size(1280, 720, 224) == (398, 224)


def test_onset_steps_mapping():
    got = onset_steps(np.array([0.0, 0.31, 0.33, 5.0, 9.7, 12.0]), 0.32, 30)
    assert np.flatnonzero(got).tolist() == [0, 1, 15]  # 9.7 s is step 30 and 12 s is past T


def test_generated_clip_frames_samples_and_onsets(tmp_path):
    step = 0.32
    clicks = [(k + 0.5) * step for k in (2, 7, 11)]
    path = write_clip(tmp_path / "c.mp4", seconds=4.0, fps=10, clicks=clicks, sample_rate=22050, channels=2)
    clip = decode_clip(path)
    assert len(clip.frames) == 12  # 4 s at 3 fps
    assert abs(clip.audio_seconds - 4.0) < 0.06 and clip.sample_rate == 22050
    item = load_clip(Job("t", 0, "c", str(path)), FrontEnd(norm_mean=0.0, norm_std=1.0, step_seconds=step))
    assert np.flatnonzero(item["onsets"].numpy()).tolist() == [2, 7, 11]
    assert item["video_frames"] == 12 and 395 <= item["audio_frames"] <= 405
    assert not item["audio_cut"] and not item["video_cut"]


def test_frame_shown_at_each_time_is_picked(tmp_path):
    # 2 fps video: frame k is shown during [k/2, (k+1)/2); at 3 fps we sample t = 0, 1/3, 2/3, 1, ...
    path = write_clip(tmp_path / "slow.mp4", seconds=3.0, fps=2, audio=False, size=(32, 32))
    clip = decode_clip(path, short_side=32)
    assert len(clip.frames) == 9
    import av

    with av.open(str(path)) as c:
        src = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    expected = [int((k / 3) * 2 + 1e-9) for k in range(9)]  # source frame index shown at k/3 s
    assert expected == [0, 0, 1, 2, 2, 3, 4, 4, 5]
    for k, j in enumerate(expected):
        assert np.abs(clip.frames[k].astype(int) - src[j].astype(int)).mean() < 2.0, k


def test_streams_missing_and_broken_files(tmp_path):
    video_only = write_clip(tmp_path / "v.mp4", seconds=1.0, audio=False)
    clip = decode_clip(video_only)
    assert clip.waveform is None and clip.frames is not None and "no audio stream" in clip.notes
    audio_only = write_clip(tmp_path / "a.wav", seconds=1.0, video=False, audio_codec="pcm_s16le", clicks=[0.5])
    clip = decode_clip(audio_only)
    assert clip.frames is None and len(clip.waveform) == 16000 and "no video stream" in clip.notes
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "text.mp4").write_text("this is not a video\n" * 50)
    good = write_clip(tmp_path / "good.mp4", seconds=2.0, clicks=[1.0])
    data = good.read_bytes()
    (tmp_path / "trunc.mp4").write_bytes(data[: len(data) // 2])  # moov atom at the end is lost
    for name in ("empty.mp4", "text.mp4", "trunc.mp4", "nonexistent.mp4"):
        with pytest.raises(DecodeError, match="cannot open"):
            decode_clip(tmp_path / name)
        item = load_clip(Job("t", 0, name, str(tmp_path / name)), FrontEnd(norm_mean=0.0, norm_std=1.0))
        assert item["error"].startswith("cannot open")
