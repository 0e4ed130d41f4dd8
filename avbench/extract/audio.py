"""The audio front end of the UAVM / AST recipe: 16 kHz mono, Kaldi fbank, pad or cut, normalise.

Follows the reference exactly (see shared notes, "Features"): resample with torchaudio, subtract the
waveform mean (DC offset), ``torchaudio.compliance.kaldi.fbank`` with HTK-compatible 128 mel bins, a
25 ms Hanning window, 10 ms shift, no energy term and no dither; pad with zeros (in the log-mel
domain, before normalising, as the reference loader does) or cut to ``target_length`` frames; then
``(fbank - mean) / std`` with the dataset's statistics (plain std, not AST's 2 * std).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torchaudio

SAMPLE_RATE = 16000
NUM_MEL_BINS = 128
FRAME_SHIFT_MS = 10.0
FRAME_LENGTH_MS = 25.0
WINDOW = "hanning"
MIN_SAMPLES = int(SAMPLE_RATE * FRAME_LENGTH_MS / 1000)  # one analysis window


@dataclass(frozen=True)
class AudioNorm:
    mean: float
    std: float


def resample(waveform: np.ndarray, sample_rate: int, target: int = SAMPLE_RATE) -> np.ndarray:
    """Mono float waveform at ``sample_rate`` -> ``target`` Hz (torchaudio's band-limited resampler)."""
    x = torch.from_numpy(np.ascontiguousarray(waveform, dtype=np.float32))
    if sample_rate != target:
        x = torchaudio.functional.resample(x, int(sample_rate), int(target))
    return x.numpy()


def fbank(waveform_16k: np.ndarray) -> torch.Tensor:
    """Log-mel filterbank ``[frames, 128]`` of a 16 kHz mono waveform, DC offset removed first."""
    w = torch.from_numpy(np.ascontiguousarray(waveform_16k, dtype=np.float32))
    if w.numel() < MIN_SAMPLES:  # shorter than one window: pad so one frame exists
        w = torch.nn.functional.pad(w, (0, MIN_SAMPLES - w.numel()))
    w = w - w.mean()
    return torchaudio.compliance.kaldi.fbank(
        w[None], htk_compat=True, sample_frequency=SAMPLE_RATE, use_energy=False, window_type=WINDOW,
        num_mel_bins=NUM_MEL_BINS, dither=0.0, frame_shift=FRAME_SHIFT_MS, frame_length=FRAME_LENGTH_MS)


def pad_or_cut(fb: torch.Tensor, target_length: int) -> torch.Tensor:
    n = fb.shape[0]
    if n < target_length:
        return torch.nn.functional.pad(fb, (0, 0, 0, target_length - n))
    return fb[:target_length]


def front_end(waveform_16k: np.ndarray, target_length: int, norm: AudioNorm | None) -> tuple[torch.Tensor, int]:
    """Normalised ``[target_length, 128]`` model input and the number of real fbank frames."""
    fb = fbank(waveform_16k)
    frames = int(fb.shape[0])
    fb = pad_or_cut(fb, target_length)
    if norm is not None:
        fb = (fb - norm.mean) / norm.std
    return fb.contiguous(), frames


def window_samples(target_length: int) -> int:
    """Samples that ``target_length`` fbank frames cover (the last window ends here)."""
    shift = int(SAMPLE_RATE * FRAME_SHIFT_MS / 1000)
    return (target_length - 1) * shift + MIN_SAMPLES


class NormAccumulator:
    """Running mean and std of fbank values over real (unpadded) frames, mergeable across ranks."""

    def __init__(self) -> None:
        self.count = 0
        self.total = 0.0
        self.total_sq = 0.0

    def add(self, fb: torch.Tensor) -> None:
        x = fb.double()
        self.count += x.numel()
        self.total += float(x.sum())
        self.total_sq += float((x * x).sum())

    def merge(self, count: int, total: float, total_sq: float) -> None:
        self.count += count
        self.total += total
        self.total_sq += total_sq

    def result(self) -> AudioNorm:
        if self.count == 0:
            raise ValueError("no audio frames to measure")
        mean = self.total / self.count
        var = max(self.total_sq / self.count - mean * mean, 0.0)
        return AudioNorm(mean=mean, std=float(np.sqrt(var)) or 1.0)
