"""Cross-modal retrieval (A->V, V->A) on a stratified subset, as in UAVM Fig. 4 and CAV-MAE.

Queries and candidates are mean-pooled over time, L2-normalised, and ranked by cosine similarity;
clip i's correct match is its own partner. R@k is the share of queries whose partner ranks within k;
it is stored as ``R_at{k}`` (MLflow's spelling, used everywhere avbench writes results).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from avbench.metrics import ranking


def stratified_subset(labels: np.ndarray, per_class: int = 5, seed: int = 0) -> np.ndarray:
    """Up to ``per_class`` clips per class (by first label), deterministic in ``seed``; sorted indices."""
    rng = np.random.default_rng(seed)
    primary = np.asarray(labels).argmax(axis=1)
    chosen = []
    for c in np.unique(primary):
        idx = np.flatnonzero(primary == c)
        chosen.append(rng.choice(idx, size=min(per_class, len(idx)), replace=False))
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, np.int64)


def ranks(queries: Any, candidates: Any) -> np.ndarray:
    """1-based rank of each query's partner among all candidates; ties count against the query
    (collapsed representations, where every candidate scores the same, rank last, not first).
    Computed in torch on the queries' device (``avbench.metrics.ranking``)."""
    return ranking.retrieval_ranks(queries, candidates).cpu().numpy()


def retrieval_metrics(audio: Any, video: Any) -> dict[str, float]:
    """``audio``/``video``: [N, T, D] or [N, D] paired representations (same row = same clip); numpy or torch."""
    out: dict[str, float] = {}
    a = ranking.as_tensor(audio)
    v = ranking.as_tensor(video, a.device)
    for name, q, c in (("a2v", a, v), ("v2a", v, a)):
        r = ranking.retrieval_ranks(q, c)
        for k in (1, 5, 10):
            out[f"{name}_R_at{k}"] = float((r <= k).double().mean())
        out[f"{name}_medr"] = float(torch.quantile(r.double(), 0.5))  # numpy's median (mean of the middle two)
    return out
