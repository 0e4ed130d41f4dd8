"""When may a report call two results different?

The UAVM reviewers asked that two results be called different only when their confidence intervals
do not overlap. That test is conservative (two 95% intervals can overlap while the difference is
clear) and needs at least two seeds per row, so a second, paired test is offered beside it: a
bootstrap over test clips, seed-matched. For every resample of the test clips (the same resample for
both systems and every seed) the metric difference is averaged over the seeds both systems share;
the difference is called when the central 95% of those resampled differences excludes zero.

A difference is *called* when either test says so; the mark records which one did. Comparisons are
uncorrected for multiplicity: with many rows, some bootstrap-only calls are expected by chance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np

LEVEL = 0.95


def ci_overlap(a: Mapping[str, float], b: Mapping[str, float]) -> bool | None:
    """Whether two ``mean_std_ci`` intervals overlap; None when either is undefined (fewer than 2 seeds)."""
    vals = [a.get("ci_low"), a.get("ci_high"), b.get("ci_low"), b.get("ci_high")]
    if any(v is None or not math.isfinite(v) for v in vals):
        return None
    return not (a["ci_high"] < b["ci_low"] or b["ci_high"] < a["ci_low"])


def _correct(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per clip: 1 when the top-scored class is a true label (the ``acc`` metric, clip by clip)."""
    top = np.asarray(scores).argmax(axis=1)
    return (np.asarray(labels)[np.arange(len(top)), top] > 0).astype(np.float64)


def mean_ap(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mean over classes with positives of scikit-learn's average precision (step-wise, ties grouped
    by threshold), in plain numpy: the bootstrap calls it thousands of times and sklearn's input
    checks dominate at that rate. ``tests/test_report.py`` holds it equal to the metrics module's."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels) > 0
    aps = []
    for j in range(s.shape[1]):
        yj = y[:, j]
        pos = int(yj.sum())
        if pos == 0:
            continue
        order = np.argsort(-s[:, j], kind="mergesort")
        sj, yo = s[order, j], yj[order]
        last = np.r_[np.flatnonzero(np.diff(sj)), len(sj) - 1]  # last index of each distinct score
        tps = np.cumsum(yo)[last]
        precision = tps / (last + 1)
        recall = tps / pos
        aps.append(float(np.sum(np.diff(np.r_[0.0, recall]) * precision)))
    return float(np.mean(aps)) if aps else float("nan")


def metric_fn(primary: str) -> Callable[[np.ndarray, np.ndarray], float]:
    from avbench.metrics.classification import classification_metrics

    if primary == "acc":
        return lambda s, y: float(_correct(s, y).mean())
    if primary == "mAP":
        return mean_ap
    return lambda s, y: classification_metrics(s, y)[primary]


def paired_bootstrap(a: Mapping[int, np.ndarray], b: Mapping[int, np.ndarray], labels: np.ndarray,
                     primary: str = "acc", n_boot: int | None = None, seed: int = 0,
                     level: float = LEVEL) -> dict[str, float] | None:
    """Seed-matched paired bootstrap of ``metric(a) - metric(b)`` over test clips.

    ``a``/``b``: seed -> per-clip scores ``[N, C]`` on the same clips in the same order; ``labels``
    ``[N, C]``. Returns the observed mean difference, the percentile interval, a two-sided p-value
    and the seeds used; None when the two share no seed.
    """
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return None
    labels = np.asarray(labels)
    n = labels.shape[0]
    rng = np.random.default_rng(seed)
    if primary == "acc":
        n_boot = n_boot or 2000
        d = np.mean([_correct(a[s], labels) - _correct(b[s], labels) for s in seeds], axis=0)  # [N]
        observed = float(d.mean())
        boots = np.empty(n_boot)
        for i in range(0, n_boot, 250):  # chunks bound the [chunk, N] index matrix
            k = min(250, n_boot - i)
            boots[i:i + k] = d[rng.integers(0, n, size=(k, n))].mean(axis=1)
    else:
        n_boot = n_boot or 200
        f = metric_fn(primary)
        observed = float(np.mean([f(a[s], labels) - f(b[s], labels) for s in seeds]))
        boots = np.empty(n_boot)
        for i in range(n_boot):
            idx = rng.integers(0, n, size=n)
            boots[i] = np.mean([f(a[s][idx], labels[idx]) - f(b[s][idx], labels[idx]) for s in seeds])
    lo, hi = np.quantile(boots, [(1 - level) / 2, (1 + level) / 2])
    p = min(1.0, 2 * min((np.sum(boots <= 0) + 1) / (n_boot + 1), (np.sum(boots >= 0) + 1) / (n_boot + 1)))
    return {"diff": observed, "ci_low": float(lo), "ci_high": float(hi), "p": float(p), "seeds": seeds,
            "n_boot": int(n_boot), "significant": bool(lo > 0 or hi < 0)}


@dataclass
class Verdict:
    """How row A compares with row B on one column."""

    sign: int  # +1 A higher, -1 A lower, 0 not called
    by: str  # "ci", "bootstrap", "" (not called) or "n/a" (no test possible)
    diff: float  # mean(A) - mean(B)
    boot: dict[str, float] | None = None

    @property
    def mark(self) -> str:
        if self.by == "n/a":
            return "n/a"
        if self.sign == 0:
            return "="
        sym = ">" if self.sign > 0 else "<"
        return sym * 2 if self.by == "ci" else sym


def compare(stats_a: Mapping[str, float], stats_b: Mapping[str, float],
            scores_a: Mapping[int, np.ndarray] | None = None, scores_b: Mapping[int, np.ndarray] | None = None,
            labels: np.ndarray | None = None, primary: str = "acc", n_boot: int | None = None) -> Verdict:
    """CI non-overlap first; else the paired bootstrap when per-clip scores of shared seeds exist."""
    diff = float(stats_a.get("mean", float("nan")) - stats_b.get("mean", float("nan")))
    overlap = ci_overlap(stats_a, stats_b)
    if overlap is False:
        return Verdict(1 if diff > 0 else -1, "ci", diff)
    boot = None
    if scores_a and scores_b and labels is not None:
        boot = paired_bootstrap(scores_a, scores_b, labels, primary, n_boot=n_boot)
    if boot is not None:
        if boot["significant"]:
            return Verdict(1 if boot["diff"] > 0 else -1, "bootstrap", diff, boot)
        return Verdict(0, "", diff, boot)
    if overlap is None:
        return Verdict(0, "n/a", diff)
    return Verdict(0, "", diff)


LEGEND = [
    ("≫ / ≪", "row higher / lower than column; the two rows' 95% confidence intervals over seeds do not overlap"),
    ("> / <", "row higher / lower; the intervals overlap (or are undefined) but a seed-matched paired bootstrap "
              "over test clips puts the difference's 95% interval away from zero"),
    ("=", "no difference called: intervals overlap and the paired bootstrap interval contains zero"),
    ("n/a", "no test possible: fewer than 2 seeds on a side and no shared seed with per-clip predictions"),
]


def pretty(mark: str) -> str:
    return {">>": "≫", "<<": "≪"}.get(mark, mark)
