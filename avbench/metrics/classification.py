"""Accuracy, mAP, mAUC and d' as the UAVM reference computes them (``calculate_stats``), made safe.

Per-class AP and AUC are scikit-learn's definitions (ties included), computed for all classes at once
in torch on the scores' device (``avbench.metrics.ranking``; equal to scikit-learn to float64
rounding, tested). A class without positives in the evaluated set (or, for AUC, without negatives) has
no defined AP/AUC: it is excluded from the mean and counted, instead of producing NaN or a
warning-laden 0 as the reference copy does.

Inputs may be numpy arrays or torch tensors (a tensor is evaluated where it lives); results are
numpy arrays / plain floats, as before.
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any

import numpy as np

from avbench.metrics import ranking


def _np(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def topk_accuracy(scores: Any, labels: Any, k: int = 1) -> float:
    """Share of clips whose top-k predictions contain a true label (single-label: the usual top-k)."""
    scores, labels = _np(scores), _np(labels)
    k = min(k, scores.shape[1])
    top = np.argpartition(-scores, kth=k - 1, axis=1)[:, :k]
    hit = np.take_along_axis(labels, top, axis=1).max(axis=1) > 0
    return float(hit.mean())


def per_class_ap_auc(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """Per-class AP and AUC (float64 numpy) with NaN where undefined."""
    ap, auc = ranking.per_class_ap_auc(scores, labels)
    return ap.cpu().numpy().astype(np.float64), auc.cpu().numpy().astype(np.float64)


def per_class_metrics(scores: Any, labels: Any) -> dict[str, Any]:
    """Per-class ``ap``, ``auc`` and ``dprime`` tensors [C] on the scores' device (NaN where undefined)."""
    ap, auc = ranking.per_class_ap_auc(scores, labels)
    return {"ap": ap, "auc": auc, "dprime": ranking.d_prime(auc)}


def _nanmean(x: np.ndarray) -> float:
    return float(np.nanmean(x)) if np.isfinite(x).any() else float("nan")


def mean_average_precision(scores: Any, labels: Any) -> float:
    ap, _ = per_class_ap_auc(scores, labels)
    return _nanmean(ap)


def d_prime(auc: float) -> float:
    """d' = sqrt(2) * Phi^-1(AUC), the reference's sensitivity index."""
    if not 0.0 < auc < 1.0:
        return float("inf") if auc >= 1.0 else float("-inf")
    return float(NormalDist().inv_cdf(auc) * math.sqrt(2.0))


def classification_metrics(scores: Any, labels: Any) -> dict[str, float]:
    """``scores`` [N, C] (logits or probabilities), ``labels`` [N, C] 0/1; numpy or torch."""
    ap, auc = per_class_ap_auc(scores, labels)
    s = _np(scores)
    y = (_np(labels) > 0).astype(np.int64)
    m_auc = _nanmean(auc)
    return {
        "acc": topk_accuracy(s, y, 1),
        "top5": topk_accuracy(s, y, 5),
        "mAP": _nanmean(ap),
        "mAUC": m_auc,
        "dprime": d_prime(m_auc) if math.isfinite(m_auc) else float("nan"),
        "classes_without_positives": int(np.isnan(ap).sum()),
    }
