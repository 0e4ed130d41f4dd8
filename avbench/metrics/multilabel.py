"""Multi-label prediction sets and their F1 (paper 003, Table 2).

Paper 003 turns a model trained with single labels into a multi-label predictor: each of the five
event heads votes its argmax, and the *union* of those labels is the predicted set (1 to 5 labels,
as many as the heads disagree on). Its baseline is a single-head model ("Naive AV") that predicts its
top-K classes for a fixed K = 1..5. Both are compared by the F1 of the predicted set against the
multi-hot ground truth.

The paper does not say which F1 average it reports; ``multilabel_f1_comparison`` reports the
per-clip (``samples``) average as the headline, the quantity that matches "how good is the set
predicted for a video", and the ``micro`` average beside it. Both come from scikit-learn.

Everything here works on numpy arrays or torch tensors and returns numpy / plain Python values.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

import numpy as np

AVERAGES = ("samples", "micro", "macro")


def _np(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x)


def union_of_argmax(head_logits: Mapping[str, Any] | Sequence[Any] | np.ndarray) -> np.ndarray:
    """The union of the heads' argmax labels: ``[N, C]`` bool.

    ``head_logits`` is ``{name: [N, C]}``, a list of ``[N, C]`` arrays, or one ``[H, N, C]`` array.
    """
    if isinstance(head_logits, Mapping):
        arrays = [_np(v) for v in head_logits.values()]
    elif isinstance(head_logits, np.ndarray) and head_logits.ndim == 3:
        arrays = list(head_logits)
    else:
        arrays = [_np(v) for v in head_logits]
    if not arrays:
        raise ValueError("union_of_argmax needs at least one head")
    n, c = arrays[0].shape
    out = np.zeros((n, c), dtype=bool)
    for a in arrays:
        if a.shape != (n, c):
            raise ValueError(f"head logits differ in shape: {a.shape} vs {(n, c)}")
        out[np.arange(n), a.argmax(axis=1)] = True
    return out


def top_k_sets(scores: Any, k: int) -> np.ndarray:
    """The naive multi-label set: each row's ``k`` highest-scoring classes, ``[N, C]`` bool."""
    s = _np(scores)
    n, c = s.shape
    if not 1 <= k <= c:
        raise ValueError(f"k must be in 1..{c}, got {k}")
    idx = np.argsort(-s, axis=1, kind="stable")[:, :k]
    out = np.zeros((n, c), dtype=bool)
    np.put_along_axis(out, idx, True, axis=1)
    return out


def set_f1(pred: Any, labels: Any, average: str = "samples") -> float:
    """F1 of predicted label sets ``[N, C]`` (bool) against multi-hot ``labels`` ``[N, C]``.

    ``average``: ``samples`` (per clip, then mean), ``micro`` (over all clip x class cells) or
    ``macro`` (per class, then mean). Empty sets count as F1 0 rather than raising.
    """
    if average not in AVERAGES:
        raise ValueError(f"average must be one of {AVERAGES}, got {average!r}")
    p = _np(pred).astype(bool)
    y = _np(labels) > 0
    if p.shape != y.shape:
        raise ValueError(f"prediction {p.shape} and labels {y.shape} differ in shape")
    from sklearn.metrics import f1_score  # here, not at import: only strategies with heads use it (issue 27)

    return float(f1_score(y, p, average=average, zero_division=0))


def multilabel_f1_comparison(union_pred: Any, naive_scores: Any, labels: Any,
                             ks: Iterable[int] = (1, 2, 3, 4, 5),
                             averages: Sequence[str] = ("samples", "micro")) -> dict[str, Any]:
    """Paper 003 Table 2: F1 of the union prediction vs naive top-K sets for each K.

    Returns ``{"union": {avg: f1}, "top_k": {K: {avg: f1}}, "union_mean_size": float,
    "label_mean_size": float}``. ``naive_scores`` are the baseline's ``[N, C]`` logits or probabilities.
    """
    y = _np(labels) > 0
    u = _np(union_pred).astype(bool)
    s = _np(naive_scores)
    ks = [k for k in ks if k <= y.shape[1]]
    return {
        "union": {a: set_f1(u, y, a) for a in averages},
        "top_k": {k: {a: set_f1(top_k_sets(s, k), y, a) for a in averages} for k in ks},
        "union_mean_size": float(u.sum(axis=1).mean()) if len(u) else 0.0,
        "label_mean_size": float(y.sum(axis=1).mean()) if len(y) else 0.0,
    }


def comparison_table(result: Mapping[str, Any], average: str = "samples", fmt: str = "github") -> str:
    """A one-row table in the layout of paper 003 Table 2 (Ours | Top-1 .. Top-K)."""
    from tabulate import tabulate

    headers = ["union (ours)"] + [f"top-{k}" for k in result["top_k"]]
    row = [result["union"][average]] + [v[average] for v in result["top_k"].values()]
    return tabulate([row], headers=headers, tablefmt=fmt, floatfmt=".3f")


def head_union_metrics(head_logits: Mapping[str, Any], labels: Any) -> dict[str, float]:
    """What a run reports for a strategy with named heads: paper 003 Table 2's set prediction.

    ``{"heads/union_f1": samples-average F1, "heads/union_f1_micro": micro F1, "heads/union_size":
    mean set size}`` of the union of the heads' argmax against the multi-hot labels (on a
    single-label task the F1 shows what the extra labels cost: a correct set of size s scores
    2 / (s + 1)). Empty without at least two heads or without clips.
    """
    if len(head_logits) < 2:
        return {}
    y = _np(labels) > 0
    if y.size == 0:
        return {}
    union = union_of_argmax(head_logits)
    return {"heads/union_f1": set_f1(union, y, "samples"), "heads/union_f1_micro": set_f1(union, y, "micro"),
            "heads/union_size": float(union.sum(axis=1).mean())}
