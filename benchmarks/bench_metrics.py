"""Evaluation metrics, scikit-learn's per-class loop against avbench's vectorised torch kernels, side by side.

Two sizes: synth's test split (960 clips x 12 classes, what every validation-curve point of the main job
evaluates) and VGGSound's test split (15k clips x 309 classes). Compare the ``sklearn`` and ``avbench``
rows of one run (``pytest benchmarks/bench_metrics.py``): they run on the same machine in the same
minute, so their ratio holds even on a busy machine. ``AVBENCH_BENCH_DEVICE=cuda`` puts the avbench
kernels' input on the GPU (the ``sklearn`` row stays on CPU, as it must).
"""

from __future__ import annotations

import numpy as np
import pytest

SIZES = {"synth_960x12": (960, 12), "vggsound_15k_x309": (15000, 309)}


def _data(n: int, c: int):
    rng = np.random.default_rng(0)
    labels = np.zeros((n, c), np.uint8)
    labels[np.arange(n), rng.integers(0, c, n)] = 1
    scores = rng.standard_normal((n, c)).astype(np.float32) + 2 * labels
    return scores, labels


def _sklearn_classification(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """What ``classification_metrics`` computed before issue 27: one sklearn call per class."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    from avbench.metrics.classification import d_prime, topk_accuracy

    scores = np.asarray(scores, dtype=np.float64)
    labels = (labels > 0).astype(np.int64)
    c = labels.shape[1]
    ap, auc = np.full(c, np.nan), np.full(c, np.nan)
    for j in range(c):
        pos = int(labels[:, j].sum())
        if pos:
            ap[j] = average_precision_score(labels[:, j], scores[:, j])
            if pos < len(labels):
                auc[j] = roc_auc_score(labels[:, j], scores[:, j])
    m_auc = float(np.nanmean(auc))
    return {"acc": topk_accuracy(scores, labels, 1), "top5": topk_accuracy(scores, labels, 5),
            "mAP": float(np.nanmean(ap)), "mAUC": m_auc, "dprime": d_prime(m_auc)}


@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("impl", ["sklearn", "avbench"])
def test_classification_metrics(benchmark, impl, size, device):
    import torch

    from avbench.metrics.classification import classification_metrics

    n, c = SIZES[size]
    scores, labels = _data(n, c)
    benchmark.group = f"classification {size}"
    if impl == "sklearn":
        fn, args = _sklearn_classification, (scores, labels)
    else:
        fn, args = classification_metrics, (torch.from_numpy(scores).to(device), torch.from_numpy(labels).to(device))
    rounds = 3 if n * c > 1e6 else 10
    out = benchmark.pedantic(fn, args=args, rounds=rounds, warmup_rounds=1)
    ref = _sklearn_classification(scores, labels) if impl == "avbench" else out
    for k in ("mAP", "mAUC", "dprime"):
        assert out[k] == pytest.approx(ref[k], abs=1e-6)
    benchmark.extra_info.update({"clips": n, "classes": c, "impl": impl,
                                 "clips_per_s": n / benchmark.stats.stats.mean})


@pytest.mark.parametrize("impl", ["numpy", "avbench"])
def test_retrieval_ranks(benchmark, impl, device):
    """A->V ranks on a stratified subset of VGGSound's test split (5 per class: 1545 clips, 1024-d)."""
    import torch

    from avbench.metrics.retrieval import ranks

    rng = np.random.default_rng(0)
    a = rng.standard_normal((1545, 1024)).astype(np.float32)
    v = (a + rng.standard_normal(a.shape).astype(np.float32)).astype(np.float32)

    def numpy_ranks(q, c):
        q = q.astype(np.float64) / np.linalg.norm(q.astype(np.float64), axis=1, keepdims=True)
        c = c.astype(np.float64) / np.linalg.norm(c.astype(np.float64), axis=1, keepdims=True)
        sim = q @ c.T
        return (sim >= np.diag(sim)[:, None]).sum(1)

    benchmark.group = "retrieval ranks 1545x1024"
    if impl == "numpy":
        fn, args = numpy_ranks, (a, v)
    else:
        fn, args = ranks, (torch.from_numpy(a).to(device), torch.from_numpy(v).to(device))
    out = benchmark.pedantic(fn, args=args, rounds=5, warmup_rounds=1)
    np.testing.assert_array_equal(np.asarray(out), numpy_ranks(a, v))
