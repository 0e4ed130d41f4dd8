"""Cross-modal retrieval (A->V, V->A) on a stratified subset, as in UAVM Fig. 4 and CAV-MAE.

Queries and candidates are mean-pooled over time, L2-normalised, and ranked by cosine similarity;
clip i's correct match is its own partner. R@k is the share of queries whose partner ranks within k;
it is stored as ``R_at{k}`` (MLflow's spelling, used everywhere avbench writes results).
"""

from __future__ import annotations

import numpy as np


def stratified_subset(labels: np.ndarray, per_class: int = 5, seed: int = 0) -> np.ndarray:
    """Up to ``per_class`` clips per class (by first label), deterministic in ``seed``; sorted indices."""
    rng = np.random.default_rng(seed)
    primary = np.asarray(labels).argmax(axis=1)
    chosen = []
    for c in np.unique(primary):
        idx = np.flatnonzero(primary == c)
        chosen.append(rng.choice(idx, size=min(per_class, len(idx)), replace=False))
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, np.int64)


def _pool_norm(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 3:
        x = x.mean(axis=1)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def ranks(queries: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """1-based rank of each query's partner among all candidates; ties count against the query
    (collapsed representations, where every candidate scores the same, rank last, not first)."""
    sim = _pool_norm(queries) @ _pool_norm(candidates).T
    own = np.diag(sim)[:, None]
    return (sim >= own).sum(axis=1)


def retrieval_metrics(audio: np.ndarray, video: np.ndarray) -> dict[str, float]:
    """``audio``/``video``: [N, T, D] or [N, D] paired representations (same row = same clip)."""
    out: dict[str, float] = {}
    for name, q, c in (("a2v", audio, video), ("v2a", video, audio)):
        r = ranks(q, c)
        for k in (1, 5, 10):
            out[f"{name}_R_at{k}"] = float((r <= k).mean())
        out[f"{name}_medr"] = float(np.median(r))
    return out
