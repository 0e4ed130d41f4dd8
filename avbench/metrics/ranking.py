"""Per-class AP, ROC AUC and d' for every class at once, and retrieval ranks, in torch on the data's device.

Why not scikit-learn: ``average_precision_score`` / ``roc_auc_score`` run one class at a time in Python
(309 calls of two sorts each at VGGSound size; 13 s of the synth main job's 44 s of evaluation in
issue 27's profile).
Here the columns are sorted once, together, and every quantity is a cumulative sum over that order,
so the cost is one ``sort`` of the score matrix plus a few elementwise passes, on whatever device the
logits live (a GPU's evaluation never leaves it).

The definitions are scikit-learn's, ties included, so the numbers agree to float64 rounding:

- AP = sum over distinct thresholds t (scores in decreasing order) of (R(t) - R(t_prev)) * P(t), i.e.
  each positive contributes the precision at the *end* of its group of tied scores, divided by the
  number of positives (``average_precision_score``, no interpolation).
- AUC = the trapezoidal ROC area = the Mann-Whitney statistic with ties counted as half a win:
  (sum of the positives' average ranks - P (P + 1) / 2) / (P N) (``roc_auc_score``).
- A class without positives has no AP or AUC (NaN); one without negatives has an AP but no AUC.

Everything is computed in float64 (float32 where the device has no float64, e.g. Apple MPS).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

# Elements per chunk of classes: bounds the temporaries (~10 float64/int64 copies of a chunk) to ~0.3 GB.
_CHUNK_ELEMENTS = 4_000_000


def as_tensor(x: Any, device: torch.device | str | None = None) -> torch.Tensor:
    """``x`` (numpy array, tensor, nested list) as a float tensor of the working precision; a tensor keeps
    its device unless ``device`` is given, anything else lands on ``device`` (default CPU)."""
    t = x.detach() if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(np.asarray(x)))
    if device is not None:
        t = t.to(device)
    return t.to(_float(t.device))


def _float(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64


def per_class_ap_auc(scores: Any, labels: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class AP and AUC of ``scores`` [N, C] against 0/1 ``labels`` [N, C] (anything > 0 is positive):
    two float tensors [C] on the scores' device, NaN where undefined."""
    s = _scores(scores)
    y = labels.detach() if isinstance(labels, torch.Tensor) else torch.from_numpy(np.asarray(labels))
    y = y.to(s.device) > 0
    if s.ndim != 2 or s.shape != y.shape:
        raise ValueError(f"scores {tuple(s.shape)} and labels {tuple(y.shape)} must be the same [N, C]")
    n, c = s.shape
    # Class-major layout: every pass below runs along contiguous rows.
    s, y = s.T.contiguous(), y.T.contiguous()
    step = max(1, _CHUNK_ELEMENTS // max(1, n))
    aps, aucs = [], []
    for lo in range(0, c, step):
        ap, auc = _ap_auc(s[lo:lo + step], y[lo:lo + step])
        aps.append(ap)
        aucs.append(auc)
    if not aps:
        z = torch.zeros(0, dtype=_float(s.device), device=s.device)
        return z, z.clone()
    return torch.cat(aps), torch.cat(aucs)


def _scores(x: Any) -> torch.Tensor:
    """Scores keep float32 (sorting it is exact and cheaper); other dtypes become the working float."""
    t = x.detach() if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(np.asarray(x)))
    if t.dtype in (torch.float16, torch.bfloat16, torch.float32):
        return t.float()
    return t.to(_float(t.device))


def _ap_auc(s: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``s``, ``y``: [C, N] (class-major). Every quantity is evaluated at the last row of each run of tied
    scores (a threshold); ``tps`` is the true positives before the run starts."""
    c, n = s.shape
    dt = _float(s.device)
    nan = torch.full((c,), math.nan, dtype=dt, device=s.device)
    if n == 0:
        return nan, nan.clone()
    s_sorted, order = torch.sort(s, dim=1, descending=True)
    ys = torch.gather(y, 1, order).to(dt)
    pos = ys.sum(1)
    neg = n - pos
    change = s_sorted[:, 1:] != s_sorted[:, :-1]
    edge = torch.ones((c, 1), dtype=torch.bool, device=s.device)
    last = torch.cat([change, edge], 1)  # row i ends a run of equal scores
    first = torch.cat([edge, change], 1)  # row i starts one
    tp = torch.cumsum(ys, 1)
    zero = torch.zeros((), dtype=dt, device=s.device)
    tps = torch.cummax(torch.where(first, tp - ys, zero), 1).values  # tp is nondecreasing: carries the run's start
    rank = torch.arange(1, n + 1, dtype=dt, device=s.device)  # clips at or above this row
    run_tp = tp - tps

    # AP = sum over thresholds of (recall step) x precision = sum (run_tp / P) x tp / rank.
    ap = torch.where(last, run_tp * tp / rank, zero).sum(1) / pos
    ap = torch.where(pos > 0, ap, nan)

    # AUC = trapezoids of the ROC curve: each threshold adds run_fp x (tps + tp) / 2, over P x N.
    start = torch.cummax(torch.where(first, rank - 1, zero), 1).values
    run_fp = (rank - tp) - (start - tps)
    auc = torch.where(last, run_fp * (tps + tp), zero).sum(1) / (2 * pos * neg)
    auc = torch.where((pos > 0) & (neg > 0), auc, nan)
    return ap, auc


def d_prime(auc: torch.Tensor) -> torch.Tensor:
    """d' = sqrt(2) * Phi^-1(AUC) elementwise (inf at AUC 1, -inf at 0, NaN stays NaN)."""
    return torch.special.ndtri(auc) * math.sqrt(2.0)


def retrieval_ranks(queries: Any, candidates: Any) -> torch.Tensor:
    """1-based rank of each query's partner (same row) among all candidates by cosine similarity after
    mean-pooling over time ([N, T, D] or [N, D]); ties (to rounding) count against the query, so
    collapsed representations rank last. On the queries' device."""
    q = _pool_norm(as_tensor(queries))
    c = _pool_norm(as_tensor(candidates, q.device))
    sim = q @ c.T
    # A blocked matmul may round equal cosines differently from entry to entry; within a few ulps of the
    # partner's similarity counts as a tie (cosines are in [-1, 1], so the tolerance is absolute).
    own = torch.diagonal(sim).unsqueeze(1) - 64 * torch.finfo(sim.dtype).eps
    return (sim >= own).sum(1)


def _pool_norm(x: torch.Tensor) -> torch.Tensor:
    if x.ndim == 3:
        x = x.mean(1)
    return x / torch.linalg.vector_norm(x, dim=1, keepdim=True).clamp_min(1e-12)
