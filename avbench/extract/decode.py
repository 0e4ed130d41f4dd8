"""Decode one media file into a mono waveform and frames sampled at a fixed rate, with PyAV.

PyAV reads every container FFmpeg reads (mp4, mov, webm, ogv, flv, 3gp, asf, rmvb, mkv, avi, ...),
so extraction needs no ffmpeg binary and no temporary wav/jpg files. One demux pass decodes both
streams; decoding stops once both have covered the clip window (``max_seconds``), so a long file costs
no more than a short one.

* Audio: every channel layout is converted to float planar and averaged to mono (stereo, 5.1, ...),
  at the stream's own sample rate (the audio front end resamples with torchaudio).
* Video: the frame *shown* at each time ``k / fps`` (k = 0, 1, ...) is kept, while ``k / fps`` is
  before the end of the stream, so a 10 s clip at 3 fps gives 30 frames, like ffmpeg's ``fps``
  filter. Each kept frame is scaled so its short side is ``short_side`` pixels, aspect ratio kept,
  no crop (the UAVM / video_feature_extractor convention), and returned as RGB uint8.

A stream that is absent, or that yields nothing decodable, comes back as ``None`` with the reason;
a file that cannot be opened at all raises :class:`DecodeError`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import av
import numpy as np

# Interpolation used for the short-side resize (ffmpeg's scale filter default is bicubic).
INTERPOLATION = "BICUBIC"
_EPS = 1e-6
# Audio timestamps that jump by more than this (seconds) are honoured: a gap is filled with silence,
# a jump back drops the samples already covered (ffmpeg's aresample ``min_hard_comp`` default is 0.1).
GAP_TOLERANCE = 0.1
_SCALE = {"u8": 128.0, "s16": 32768.0, "s32": 2147483648.0, "s64": 9223372036854775808.0}


class DecodeError(Exception):
    """The file cannot be opened or holds nothing decodable."""


@dataclass
class DecodedClip:
    waveform: np.ndarray | None  # [n] float32 mono at ``sample_rate``
    sample_rate: int
    frames: np.ndarray | None  # [k, H, W, 3] uint8
    audio_seconds: float = 0.0  # decoded audio length (up to the window, see ``audio_cut``)
    video_seconds: float = 0.0  # video stream length (up to the window, see ``video_cut``)
    audio_cut: bool = False  # the stream went on past the window
    video_cut: bool = False
    notes: list[str] = field(default_factory=list)  # why a stream is None, or decode errors skipped


def scaled_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """(width, height) with the short side at ``short_side`` and the aspect ratio kept."""
    if height >= width:
        return short_side, max(1, int(height * short_side / width))
    return max(1, int(width * short_side / height)), short_side


def _frame_time(frame, index: int, rate: float | None) -> float | None:
    if frame.pts is not None and frame.time_base is not None:
        return float(frame.pts * frame.time_base)
    if rate:
        return index / rate
    return None


def decode_clip(path: str, *, fps: float = 3.0, short_side: int = 224, max_seconds: float | None = 10.0,
                audio: bool = True, video: bool = True) -> DecodedClip:
    """Decode ``path``. ``max_seconds`` bounds the window read (``None``: the whole file)."""
    try:
        container = av.open(str(path), mode="r", metadata_errors="ignore")
    except (av.error.FFmpegError, OSError, UnicodeDecodeError, ValueError) as e:
        raise DecodeError(f"cannot open: {_reason(e)}") from None
    notes: list[str] = []
    try:
        astream = container.streams.audio[0] if (audio and container.streams.audio) else None
        vstream = container.streams.video[0] if (video and container.streams.video) else None
        if audio and astream is None:
            notes.append("no audio stream")
        if video and vstream is None:
            notes.append("no video stream")
        if astream is None and vstream is None:
            if not (audio or video):
                return DecodedClip(None, 0, None, notes=notes)
            if not container.streams.audio and not container.streams.video:
                raise DecodeError("no audio or video stream")
            return DecodedClip(None, 0, None, notes=notes)
        for s in (astream, vstream):
            if s is not None:
                s.thread_type = "AUTO"
        return _decode(container, astream, vstream, fps, short_side, max_seconds, notes)
    finally:
        container.close()


def _decode(container, astream, vstream, fps, short_side, max_seconds, notes) -> DecodedClip:
    limit = math.inf if max_seconds is None else float(max_seconds)
    origin = container.start_time / 1e6 if container.start_time is not None else None
    # Audio state
    chunks: list[np.ndarray] = []
    sr = int(astream.rate or astream.codec_context.sample_rate or 0) if astream is not None else 0
    n_audio = 0  # samples placed so far (at ``sr``), gaps included
    audio_origin: float | None = origin
    audio_done = astream is None
    audio_cut = False
    gaps = {"filled": 0.0, "dropped": 0.0}

    def on_audio(frame) -> None:
        nonlocal n_audio, sr, audio_origin
        if not sr:
            sr = frame.sample_rate
        mono = to_mono_float(frame)
        t = frame.time
        if t is not None:
            t = float(t)
            if audio_origin is None:
                audio_origin = t
            delta = int(round((t - audio_origin) * sr)) - n_audio
            if delta > GAP_TOLERANCE * sr:  # a hole in the timeline: silence, as a player would
                chunks.append(np.zeros(delta, np.float32))
                n_audio += delta
                gaps["filled"] += delta / sr
            elif delta < -GAP_TOLERANCE * sr:  # timestamps went back: drop what was already covered
                drop = min(len(mono), -delta)
                mono = mono[drop:]
                gaps["dropped"] += drop / sr
        chunks.append(mono)
        n_audio += len(mono)

    # Video state
    rate = float(vstream.average_rate) if (vstream is not None and vstream.average_rate) else None
    frames: list[np.ndarray] = []
    t0: float | None = None
    last_t = 0.0
    prev = None  # (frame, converted image or None)
    n_vframes = 0
    video_done = vstream is None
    video_cut = False
    max_frames = math.inf if max_seconds is None else max(1, int(math.ceil(limit * fps - _EPS)))
    errors = {"audio": 0, "video": 0}

    def emit(img_holder) -> None:
        frame, img = img_holder
        if img is None:
            w, h = scaled_size(frame.width, frame.height, short_side)
            img = frame.to_ndarray(width=w, height=h, format="rgb24", interpolation=INTERPOLATION)
            img_holder[1] = img
        frames.append(img)

    def on_video(frame) -> bool:
        nonlocal t0, last_t, prev, n_vframes, video_cut
        t = _frame_time(frame, n_vframes, rate)
        n_vframes += 1
        if t is None:
            t = last_t + (1.0 / rate if rate else 1.0 / 25)
        if t0 is None:
            t0 = origin if (origin is not None and origin <= t) else t
        rel = t - t0
        if rel < last_t - _EPS and prev is not None:
            rel = last_t  # non-monotonic timestamps: treat as simultaneous
        if prev is not None and rel >= limit - _EPS:
            # This frame starts after the window: the rest of the window shows the previous one.
            while len(frames) < max_frames:
                emit(prev)
            video_cut = True
            return True
        # Every target time before this frame shows the previous frame.
        while prev is not None and len(frames) < max_frames and len(frames) / fps < rel - _EPS:
            emit(prev)
        last_t = rel
        prev = [frame, None]
        return False

    streams = [s for s in (astream, vstream) if s is not None]
    try:
        for packet in container.demux(*streams):
            if packet.stream is astream and audio_done:
                continue
            if packet.stream is vstream and video_done:
                continue
            try:
                decoded = packet.decode()
            except av.error.FFmpegError:
                errors["audio" if packet.stream is astream else "video"] += 1
                continue
            for frame in decoded:
                if packet.stream is astream:
                    if audio_done:
                        break
                    try:
                        on_audio(frame)
                    except (av.error.FFmpegError, ValueError):
                        errors["audio"] += 1
                        continue
                    if sr and n_audio / sr > limit + 0.05:
                        audio_done = True  # enough: trimmed to the window below
                else:
                    if video_done:
                        break
                    if on_video(frame):
                        video_done = True
            if audio_done and video_done:
                break
    except av.error.FFmpegError as e:
        notes.append(f"demux stopped early: {_reason(e)}")
    # Flush decoders of streams that are still open.
    if astream is not None and not audio_done:
        try:
            for frame in astream.codec_context.decode(None):
                on_audio(frame)
        except (av.error.FFmpegError, ValueError):
            pass
    if vstream is not None and not video_done:
        try:
            for frame in vstream.codec_context.decode(None):
                if on_video(frame):
                    video_done = True
                    break
        except av.error.FFmpegError:
            pass

    waveform = None
    audio_seconds = 0.0
    if astream is not None:
        if n_audio and sr:
            waveform = np.concatenate(chunks).astype(np.float32, copy=False)
            if np.isfinite(limit) and len(waveform) > int(round(limit * sr)):
                waveform = waveform[: int(round(limit * sr))]
                audio_cut = True
            audio_seconds = len(waveform) / sr
        else:
            notes.append("audio stream has no decodable samples" + _errs(errors["audio"]))
    out_frames = None
    video_seconds = 0.0
    if vstream is not None:
        if prev is not None:
            if not video_cut:
                # Frames after the last one: it stays on screen for one frame duration.
                dur = 1.0 / rate if rate else (last_t / max(1, n_vframes - 1) if n_vframes > 1 else 1.0 / fps)
                end = last_t + dur
                video_seconds = end
                while len(frames) < max_frames and len(frames) / fps < end - _EPS:
                    emit(prev)
            else:
                video_seconds = limit
            out_frames = np.stack(frames) if frames else None
            video_seconds = min(video_seconds, limit)
        if out_frames is None:
            notes.append("video stream has no decodable frames" + _errs(errors["video"]))
    if gaps["filled"] or gaps["dropped"]:
        notes.append(f"audio timestamps: {gaps['filled']:.3f} s of gaps filled with silence, "
                     f"{gaps['dropped']:.3f} s of overlapping samples dropped")
    for kind in ("audio", "video"):
        if errors[kind]:
            notes.append(f"{errors[kind]} {kind} packets failed to decode and were skipped")
    return DecodedClip(waveform, sr, out_frames, audio_seconds, video_seconds, audio_cut, video_cut, notes)


def _errs(n: int) -> str:
    return f" ({n} packets failed to decode)" if n else ""


def _reason(e: BaseException) -> str:
    text = getattr(e, "strerror", None) or str(e)
    return f"{type(e).__name__}: {text}"


def to_mono_float(frame) -> np.ndarray:
    """A decoded audio frame of any sample format and channel count -> mono float32 in [-1, 1]."""
    fmt = frame.format
    name = fmt.name.rstrip("p")
    channels = max(1, len(frame.layout.channels))
    arr = frame.to_ndarray()
    if not fmt.is_planar:
        arr = arr.reshape(-1, channels).T
    arr = arr[:, : frame.samples]
    if name == "u8":
        out = (arr.astype(np.float32) - 128.0) / 128.0
    elif name in _SCALE:
        out = arr.astype(np.float32) / _SCALE[name]
    else:  # flt, dbl
        out = arr.astype(np.float32, copy=False)
    return out.mean(axis=0, dtype=np.float32) if out.shape[0] > 1 else out[0].copy()
