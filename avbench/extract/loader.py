"""The CPU side of extraction, run in DataLoader worker processes while the models run.

One item = one clip: decode (PyAV), resample, fbank, pad/cut, normalise, onsets, and frames at 3 fps
scaled to the short side. Everything that can go wrong with a file is caught here and returned as a
reason, so a corrupt file becomes a line in ``failures.jsonl`` and never an exception in the run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from avbench.extract import audio as afe
from avbench.extract.decode import DecodeError, decode_clip
from avbench.extract.onsets import onset_steps, onset_times

# Seconds a stream may run past the clip window before the clip counts as cut (AAC priming and
# container rounding make many 10 s clips a few milliseconds longer).
CUT_TOLERANCE = 0.1


@dataclass(frozen=True)
class FrontEnd:
    """Settings of the per-clip CPU work (all of them are part of the cache key)."""

    target_length: int = 1000
    num_steps: int = 30
    fps: float = 3.0
    short_side: int = 224
    norm_mean: float | None = None
    norm_std: float | None = None
    step_seconds: float = 0.32  # audio feature step (model time stride x frame shift), for onsets
    audio: bool = True
    video: bool = True
    onsets: bool = True

    @property
    def window_seconds(self) -> float:
        """Media read per clip: what ``num_steps`` frames and ``target_length`` fbank frames cover."""
        return max(self.num_steps / self.fps, afe.window_samples(self.target_length) / afe.SAMPLE_RATE)

    @property
    def norm(self) -> afe.AudioNorm | None:
        if self.norm_mean is None or self.norm_std is None:
            return None
        return afe.AudioNorm(self.norm_mean, self.norm_std)


@dataclass(frozen=True)
class Job:
    split: str
    row: int
    clip_id: str
    path: str


def load_clip(job: Job, fe: FrontEnd) -> dict[str, Any]:
    """Decode and preprocess one clip. Never raises for a bad file: ``item["error"]`` says why."""
    item: dict[str, Any] = {"split": job.split, "row": job.row, "id": job.clip_id, "path": job.path,
                            "error": None, "notes": [], "fbank": None, "audio_frames": 0, "onsets": None,
                            "frames": None, "video_frames": 0, "audio_cut": False, "video_cut": False,
                            "duration": 0.0}
    try:
        # Read a little past the window: media that ends within CUT_TOLERANCE of it is not "cut".
        clip = decode_clip(job.path, fps=fe.fps, short_side=fe.short_side,
                           max_seconds=fe.window_seconds + CUT_TOLERANCE, audio=fe.audio, video=fe.video)
    except DecodeError as e:
        item["error"] = str(e)
        return item
    except Exception as e:  # noqa: BLE001 - any failure of one file must not stop the run
        item["error"] = f"decode failed: {type(e).__name__}: {e}"
        return item
    item["notes"] = clip.notes
    item["duration"] = max(clip.audio_seconds, clip.video_seconds)
    try:
        if clip.waveform is not None:
            wave = afe.resample(clip.waveform, clip.sample_rate)[: afe.window_samples(fe.target_length)]
            fb, frames = afe.front_end(wave, fe.target_length, fe.norm)
            item["fbank"] = fb
            item["audio_frames"] = frames
            item["audio_cut"] = clip.audio_cut
            if fe.onsets:
                item["onsets"] = torch.from_numpy(onset_steps(onset_times(wave), fe.step_seconds, fe.num_steps))
        if clip.frames is not None:
            n = len(clip.frames)
            item["frames"] = torch.from_numpy(np.ascontiguousarray(clip.frames[: fe.num_steps]))
            item["video_frames"] = min(n, fe.num_steps)
            item["video_cut"] = clip.video_cut
    except Exception as e:  # noqa: BLE001
        item["error"] = f"preprocessing failed: {type(e).__name__}: {e}"
        item["fbank"] = item["frames"] = None
    if item["error"] is None and item["fbank"] is None and item["frames"] is None:
        item["error"] = "; ".join(clip.notes) or "nothing decodable"
    return item


def load_raw_fbank(job: Job, fe: FrontEnd) -> dict[str, Any]:
    """Unnormalised, unpadded fbank of one clip (for measuring a dataset's mean and std)."""
    try:
        clip = decode_clip(job.path, max_seconds=fe.window_seconds, audio=True, video=False)
        if clip.waveform is None:
            return {"fbank": None}
        fb = afe.fbank(afe.resample(clip.waveform, clip.sample_rate))[: fe.target_length]
        return {"fbank": fb}
    except Exception:  # noqa: BLE001 - a bad file is skipped here; the extraction pass records it
        return {"fbank": None}


class ClipDataset(Dataset):
    def __init__(self, jobs: list[Job], fe: FrontEnd, raw_fbank: bool = False):
        self.jobs = jobs
        self.fe = fe
        self.raw_fbank = raw_fbank

    def __len__(self) -> int:
        return len(self.jobs)

    def __getitem__(self, i: int) -> dict[str, Any]:
        if self.raw_fbank:
            return load_raw_fbank(self.jobs[i], self.fe)
        return load_clip(self.jobs[i], self.fe)


def _as_list(batch: list) -> list:
    return batch


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)


def make_loader(jobs: list[Job], fe: FrontEnd, *, workers: int, batch_size: int, raw_fbank: bool = False) -> DataLoader:
    """Batches of per-clip dicts, decoded by ``workers`` processes ahead of the model."""
    kwargs: dict[str, Any] = {}
    if workers > 0:
        kwargs.update(worker_init_fn=_worker_init, prefetch_factor=max(2, math.ceil(4 / max(1, batch_size))),
                      persistent_workers=False)
    return DataLoader(ClipDataset(jobs, fe, raw_fbank), batch_size=batch_size, shuffle=False,
                      num_workers=workers, collate_fn=_as_list, **kwargs)
