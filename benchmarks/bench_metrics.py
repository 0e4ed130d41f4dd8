"""Evaluation metrics at VGGSound test size: 15k clips x 309 classes (accuracy, top-5, mAP, mAUC, d')."""

from __future__ import annotations

import numpy as np


def test_classification_metrics_15k_x_309(benchmark):
    from avbench.metrics.classification import classification_metrics

    rng = np.random.default_rng(0)
    n, c = 15000, 309
    labels = np.zeros((n, c), np.uint8)
    labels[np.arange(n), rng.integers(0, c, n)] = 1
    scores = rng.standard_normal((n, c)).astype(np.float32) + 2 * labels
    out = benchmark.pedantic(classification_metrics, args=(scores, labels), rounds=3, warmup_rounds=1)
    assert 0 < out["mAP"] <= 1
    benchmark.extra_info.update({"clips": n, "classes": c, "clips_per_s": n / benchmark.stats.stats.mean})
