"""Accuracy, mAP, mAUC and d' as the UAVM reference computes them (``calculate_stats``), made safe.

Per-class AP and AUC come from scikit-learn. A class without positives in the evaluated set (or,
for AUC, without negatives) has no defined AP/AUC: it is excluded from the mean and counted, instead
of producing NaN or a warning-laden 0 as the reference copy does.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import norm
from sklearn.metrics import average_precision_score, roc_auc_score


def topk_accuracy(scores: np.ndarray, labels: np.ndarray, k: int = 1) -> float:
    """Share of clips whose top-k predictions contain a true label (single-label: the usual top-k)."""
    k = min(k, scores.shape[1])
    top = np.argpartition(-scores, kth=k - 1, axis=1)[:, :k]
    hit = np.take_along_axis(labels, top, axis=1).max(axis=1) > 0
    return float(hit.mean())


def per_class_ap_auc(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-class AP and AUC with NaN where undefined."""
    c = labels.shape[1]
    ap = np.full(c, np.nan)
    auc = np.full(c, np.nan)
    for j in range(c):
        pos = int(labels[:, j].sum())
        if pos == 0:
            continue
        ap[j] = average_precision_score(labels[:, j], scores[:, j])
        if pos < labels.shape[0]:
            auc[j] = roc_auc_score(labels[:, j], scores[:, j])
    return ap, auc


def mean_average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    ap, _ = per_class_ap_auc(scores, labels)
    return float(np.nanmean(ap)) if np.isfinite(ap).any() else float("nan")


def d_prime(auc: float) -> float:
    """d' = sqrt(2) * Phi^-1(AUC), the reference's sensitivity index."""
    if not 0.0 < auc < 1.0:
        return float("inf") if auc >= 1.0 else float("-inf")
    return float(norm.ppf(auc) * math.sqrt(2.0))


def classification_metrics(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """``scores`` [N, C] (logits or probabilities), ``labels`` [N, C] 0/1."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = (np.asarray(labels) > 0).astype(np.int64)
    ap, auc = per_class_ap_auc(scores, labels)
    m_auc = float(np.nanmean(auc)) if np.isfinite(auc).any() else float("nan")
    return {
        "acc": topk_accuracy(scores, labels, 1),
        "top5": topk_accuracy(scores, labels, 5),
        "mAP": float(np.nanmean(ap)) if np.isfinite(ap).any() else float("nan"),
        "mAUC": m_auc,
        "dprime": d_prime(m_auc) if math.isfinite(m_auc) else float("nan"),
        "classes_without_positives": int(np.isnan(ap).sum()),
    }
