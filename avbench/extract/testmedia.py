"""Write small real media files with known content, for tests and benchmarks of extraction.

The files are genuine containers written by FFmpeg through PyAV (H.264 or MPEG-4 video, AAC or PCM
audio), so they exercise the same decoding path as downloaded clips. Audio is either silence, a
quiet tone, or clicks (short noise bursts) at given times, which lets a test check that onsets land
on the right feature steps; video frames carry a moving gradient so the video model sees varied input.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Sequence

import av
import numpy as np


def click_track(seconds: float, sample_rate: int, clicks: Sequence[float], *, amplitude: float = 0.8,
                burst: float = 0.01, seed: int = 0) -> np.ndarray:
    """Near-silence with a decaying noise burst at each time in ``clicks`` (seconds)."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sample_rate))
    y = 1e-4 * rng.standard_normal(n).astype(np.float32)
    width = max(1, int(burst * sample_rate))
    decay = np.exp(-np.linspace(0, 6, width)).astype(np.float32)
    for t in clicks:
        s = int(round(t * sample_rate))
        e = min(n, s + width)
        if 0 <= s < n:
            y[s:e] += amplitude * decay[: e - s] * rng.uniform(-1, 1, e - s).astype(np.float32)
    return np.clip(y, -1, 1)


def write_clip(path: str | Path, *, seconds: float = 2.0, fps: int = 10, size: tuple[int, int] = (64, 48),
               video: bool = True, audio: bool = True, audio_kind: str = "clicks", clicks: Sequence[float] = (),
               sample_rate: int = 16000, channels: int = 1, video_codec: str = "h264",
               audio_codec: str = "aac", seed: int = 0) -> Path:
    """Write a clip. ``audio_kind``: ``clicks`` (at ``clicks``), ``tone`` (440 Hz) or ``silence``."""
    path = Path(path)
    if not (video or audio):
        raise ValueError("a clip needs at least one stream")
    rng = np.random.default_rng(seed)
    with av.open(str(path), mode="w") as out:
        vs = as_ = None
        if video:
            vs = out.add_stream(video_codec, rate=fps)
            vs.width, vs.height = size
            vs.pix_fmt = "yuv420p"
            if video_codec in ("h264", "libx264"):
                vs.options = {"preset": "ultrafast"}
        if audio:
            as_ = out.add_stream(audio_codec, rate=sample_rate)
            as_.layout = "mono" if channels == 1 else "stereo"
        if vs is not None:
            w, h = size
            yy, xx = np.mgrid[0:h, 0:w]
            base = rng.integers(0, 255, 3)
            for i in range(int(round(seconds * fps))):
                img = np.empty((h, w, 3), np.uint8)
                for c in range(3):
                    img[..., c] = (base[c] + 3 * xx + 2 * yy + 7 * i * (c + 1)) % 256
                frame = av.VideoFrame.from_ndarray(img, format="rgb24")
                frame.pts = i
                frame.time_base = Fraction(1, fps)
                for pkt in vs.encode(frame):
                    out.mux(pkt)
            for pkt in vs.encode():
                out.mux(pkt)
        if as_ is not None:
            n = int(round(seconds * sample_rate))
            if audio_kind == "clicks":
                y = click_track(seconds, sample_rate, clicks, seed=seed)
            elif audio_kind == "tone":
                y = (0.3 * np.sin(2 * np.pi * 440 * np.arange(n) / sample_rate)).astype(np.float32)
            elif audio_kind == "silence":
                y = np.zeros(n, np.float32)
            else:
                raise ValueError(f"unknown audio_kind {audio_kind!r}")
            data = np.tile(y, (channels, 1)) if channels > 1 else y[None]
            frame_size = as_.codec_context.frame_size or 1024
            fmt = as_.codec_context.format.name if as_.codec_context.format else "fltp"
            for start in range(0, n, frame_size):
                chunk = data[:, start:start + frame_size]
                if fmt.startswith("s16"):
                    arr = (chunk * 32767).astype(np.int16)
                    arr = arr if fmt.endswith("p") else arr.T.reshape(1, -1)
                else:
                    arr = chunk.astype(np.float32)
                    arr = arr if fmt.endswith("p") else arr.T.reshape(1, -1)
                frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(arr), format=fmt,
                                                   layout="mono" if channels == 1 else "stereo")
                frame.sample_rate = sample_rate
                frame.pts = start
                frame.time_base = Fraction(1, sample_rate)
                for pkt in as_.encode(frame):
                    out.mux(pkt)
            for pkt in as_.encode():
                out.mux(pkt)
    return path


STEP_SECONDS = 0.32  # ConvNeXt audio feature step: 32 fbank frames x 10 ms
# clip -> (label, split, steps with a click) in the folder ``write_test_folder`` makes
CLICK_CLIPS = {"c0": ("dog", "train", (1, 5)), "c1": ("cat", "train", (3,)), "c2": ("dog", "test", (0, 8)),
               "c3": ("cat", "test", (6,)), "c4": ("dog", "train", (2, 4))}


def write_test_folder(root: str | Path, *, seconds: float = 3.0, size: tuple[int, int] = (48, 32)) -> Path:
    """A ``csv``-card folder with every case extraction must handle, and its ``manifest.csv``.

    Five clips with clicks at known feature steps (H.264 and MPEG-4 video, AAC audio), one with a
    silent audio track, one without an audio stream, one audio-only WAV, a truncated MP4, a zero-byte
    file, a text file named ``.mp4``, and a listed file that does not exist.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (cid, (label, split, steps)) in enumerate(CLICK_CLIPS.items()):
        write_clip(root / f"{cid}.mp4", seconds=seconds, fps=6, size=size,
                   clicks=[(k + 0.5) * STEP_SECONDS for k in steps], seed=i,
                   video_codec="mpeg4" if i % 2 else "h264")
        rows.append(f"{cid}.mp4,{label},{split}")
    write_clip(root / "silent.mp4", seconds=2.0, fps=6, size=size, audio_kind="silence")
    write_clip(root / "noaudio.mp4", seconds=2.0, fps=6, size=size, audio=False)
    write_clip(root / "audioonly.wav", seconds=2.0, video=False, audio_codec="pcm_s16le", clicks=[0.5])
    good = (root / "c0.mp4").read_bytes()
    (root / "trunc.mp4").write_bytes(good[: len(good) // 2])
    (root / "zero.mp4").write_bytes(b"")
    (root / "text.mp4").write_text("not a video at all\n")
    rows += ["silent.mp4,cat,train", "noaudio.mp4,dog,train", "audioonly.wav,cat,test", "trunc.mp4,dog,train",
             "zero.mp4,cat,test", "text.mp4,dog,train", "gone.mp4,cat,train"]
    (root / "manifest.csv").write_text("file,label,split\n" + "\n".join(rows) + "\n")
    return root
