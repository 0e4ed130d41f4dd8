"""The audio front end per ten-second clip at 16 kHz: the 128-bin Kaldi fbank
(``torchaudio.compliance.kaldi.fbank`` through avbench.extract.audio) and librosa onsets
(``librosa.onset.onset_detect`` through avbench.extract.onsets)."""

from __future__ import annotations

import numpy as np
import pytest

SR = 16000


@pytest.fixture(scope="module")
def clip():
    """Ten seconds of noise with a click every 0.5 s (so onset detection has work to do)."""
    rng = np.random.default_rng(0)
    y = 0.05 * rng.standard_normal(10 * SR).astype(np.float32)
    for t in np.arange(0.25, 10, 0.5):
        s = int(t * SR)
        y[s:s + 400] += np.hanning(400).astype(np.float32)
    return y


def test_fbank_10s(benchmark, clip):
    from avbench.extract.audio import fbank

    out = benchmark(fbank, clip)
    assert tuple(out.shape) == (998, 128)
    benchmark.extra_info.update({"clips_per_s": 1 / benchmark.stats.stats.mean, "frames": out.shape[0]})


def test_onsets_10s(benchmark, clip):
    from avbench.extract.onsets import onset_times

    times = benchmark(onset_times, clip)
    assert len(times) >= 10
    benchmark.extra_info.update({"clips_per_s": 1 / benchmark.stats.stats.mean, "onsets": len(times)})
