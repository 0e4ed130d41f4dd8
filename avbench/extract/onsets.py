"""Audio onsets per feature step (``onsets.npy``), for strategies that pool around events (paper 003).

librosa's spectral-flux detector runs on the same 16 kHz waveform the fbank sees; each onset time is
mapped to the feature step whose audio window contains it. A step lasts ``step_seconds``: the audio
model's time stride in fbank frames times the 10 ms shift (ConvNeXt downsamples time by 32, so a step
is 0.32 s and 1000 frames give 31 steps, cut to 30).

librosa reports an onset in the first ~0.1 s of almost any clip that starts with sound: its spectral
flux compares the first frames with the zero padding before the signal. A clip cut from a longer
recording does not begin with an event, so onsets before ``START_GUARD`` seconds are dropped.
"""

from __future__ import annotations

import librosa
import numpy as np

from avbench.extract.audio import SAMPLE_RATE

START_GUARD = 0.1


def onset_times(waveform_16k: np.ndarray) -> np.ndarray:
    """Onset times in seconds (empty for silence or a too-short waveform)."""
    y = np.ascontiguousarray(waveform_16k, dtype=np.float32)
    if y.size < 2048 or not np.any(y):
        return np.zeros(0)
    times = np.asarray(librosa.onset.onset_detect(y=y, sr=SAMPLE_RATE, units="time"), dtype=np.float64)
    return times[times > START_GUARD]


def onset_steps(times: np.ndarray, step_seconds: float, num_steps: int) -> np.ndarray:
    """``[num_steps]`` bool: True at every step that contains an onset."""
    out = np.zeros(num_steps, dtype=bool)
    steps = np.floor(np.asarray(times) / step_seconds).astype(np.int64)
    steps = steps[(steps >= 0) & (steps < num_steps)]
    out[steps] = True
    return out
