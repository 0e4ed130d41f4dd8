"""When may a report call two results different?

The UAVM reviewers asked that two results be called different only when their confidence intervals
do not overlap. That test is conservative (two 95% intervals can overlap while the difference is
clear) and needs at least two seeds per row, so a second, paired test is offered beside it: a
bootstrap over test clips, seed-matched. For every resample of the test clips (the same resample for
both systems and every seed) the metric difference is averaged over the seeds both systems share;
the difference is called when the central 95% of those resampled differences excludes zero.

Multiple comparisons: a table of k rows makes k(k-1)/2 comparisons per column, so uncorrected
tests would call some differences by chance alone. Every pair of one table's column (a *family*) gets
a p-value: the seed-matched paired bootstrap's where both rows have per-clip predictions of shared
seeds (two-sided, from the bootstrap standard error, so its resolution does not depend on the
number of resamples), else Welch's t-test over the seeds (2+ seeds a side). Holm's step-down method
adjusts the family's p-values, and a difference is *called* only when the adjusted p-value is below
0.05: the family-wise error rate (the chance of calling any difference that is not there) is at
most 5% per table column. The mark also says whether the two rows' 95% seed intervals overlap
(the UAVM reviewers' criterion): ≫ called and apart, > called though the intervals overlap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

LEVEL = 0.95
ALPHA = 0.05  # family-wise error rate per table column (Holm)


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
    p = _normal_p(observed, float(np.std(boots, ddof=1)))
    return {"diff": observed, "ci_low": float(lo), "ci_high": float(hi), "p": float(p), "seeds": seeds,
            "n_boot": int(n_boot), "significant": bool(lo > 0 or hi < 0)}


def _normal_p(diff: float, se: float) -> float:
    """Two-sided p-value of ``diff`` against 0 with standard error ``se`` (normal approximation)."""
    from scipy.stats import norm

    if not math.isfinite(diff) or not math.isfinite(se):
        return float("nan")
    if se <= 0:
        return 1.0 if diff == 0 else 0.0
    return float(min(1.0, 2 * norm.sf(abs(diff) / se)))


def welch_p(a: Mapping[str, float], b: Mapping[str, float]) -> float | None:
    """Welch's t-test p-value from two ``mean_std_ci`` summaries; None with fewer than 2 seeds a side."""
    from scipy.stats import ttest_ind_from_stats

    if a.get("n", 0) < 2 or b.get("n", 0) < 2:
        return None
    if a["std"] == 0 and b["std"] == 0:  # no spread over seeds: the difference is exactly what it is
        return 1.0 if a["mean"] == b["mean"] else 0.0
    return float(ttest_ind_from_stats(a["mean"], a["std"], a["n"], b["mean"], b["std"], b["n"], equal_var=False).pvalue)


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjusted p-values (None entries are left out of the family and stay None).

    Sorted ascending, the i-th of m p-values (0-based) becomes max over j <= i of (m - j) * p_(j),
    capped at 1; rejecting where the adjusted p-value is below alpha controls the family-wise error
    rate at alpha under any dependence between the tests (Holm 1979)."""
    idx = [i for i, p in enumerate(pvalues) if p is not None and math.isfinite(p)]
    m = len(idx)
    out: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(sorted(idx, key=lambda i: pvalues[i])):
        running = max(running, min(1.0, (m - rank) * float(pvalues[i])))
        out[i] = running
    return out


@dataclass
class Verdict:
    """How row A compares with row B on one column."""

    sign: int  # +1 A higher, -1 A lower, 0 not called
    by: str  # "bootstrap" or "t-test" (the test behind the p-value), "" (no p-value) or "n/a"
    diff: float  # mean(A) - mean(B)
    boot: dict[str, float] | None = None
    p: float | None = None  # the pair's own p-value
    p_adj: float | None = None  # Holm-adjusted over the family
    apart: bool | None = None  # the two 95% seed intervals do not overlap (None: undefined)

    @property
    def mark(self) -> str:
        if self.by == "n/a":
            return "n/a"
        if self.sign == 0:
            return "="
        sym = ">" if self.sign > 0 else "<"
        return sym * 2 if self.apart else sym


def pair_test(stats_a: Mapping[str, float], stats_b: Mapping[str, float],
              scores_a: Mapping[int, np.ndarray] | None = None, scores_b: Mapping[int, np.ndarray] | None = None,
              labels: np.ndarray | None = None, primary: str = "acc",
              n_boot: int | None = None) -> tuple[float | None, str, dict[str, float] | None]:
    """(p-value, test, bootstrap result) of one pair: the paired bootstrap where possible, else Welch."""
    boot = None
    if scores_a and scores_b and labels is not None:
        boot = paired_bootstrap(scores_a, scores_b, labels, primary, n_boot=n_boot)
    if boot is not None:
        return boot["p"], "bootstrap", boot
    p = welch_p(stats_a, stats_b)
    return (p, "t-test", None) if p is not None else (None, "n/a", None)


def compare_family(items: Mapping[Any, tuple[Mapping[str, float], Mapping[int, np.ndarray] | None, Any]],
                   labels: np.ndarray | None = None, primary: str = "acc", n_boot: int | None = None,
                   alpha: float = ALPHA) -> dict[tuple[Any, Any], Verdict]:
    """Every ordered pair of ``items`` (key -> (seed stats, per-clip scores or None, test-clip ids)),
    Holm-corrected over the unordered pairs. Scores are paired only between rows with equal ids."""
    keys = list(items)
    pairs = [(a, b) for i, a in enumerate(keys) for b in keys[i + 1:]]
    tests = []
    for a, b in pairs:
        (sa, ca, ia), (sb, cb, ib) = items[a], items[b]
        paired = ia is not None and ia == ib
        tests.append(pair_test(sa, sb, ca if paired else None, cb if paired else None,
                               labels if paired else None, primary, n_boot))
    adjusted = holm([t[0] for t in tests])
    out: dict[tuple[Any, Any], Verdict] = {}
    for (a, b), (p, by, boot), p_adj in zip(pairs, tests, adjusted):
        sa, sb = items[a][0], items[b][0]
        diff = float(sa.get("mean", float("nan")) - sb.get("mean", float("nan")))
        overlap = ci_overlap(sa, sb)
        apart = None if overlap is None else not overlap
        called = p_adj is not None and p_adj < alpha
        d = boot["diff"] if boot is not None else diff
        sign = (1 if d > 0 else -1) if called and d != 0 else 0
        v = Verdict(sign, by, diff, boot, p, p_adj, apart)
        out[(a, b)] = v
        out[(b, a)] = Verdict(-sign, by, -diff, boot, p, p_adj, apart)
    return out


def compare(stats_a: Mapping[str, float], stats_b: Mapping[str, float],
            scores_a: Mapping[int, np.ndarray] | None = None, scores_b: Mapping[int, np.ndarray] | None = None,
            labels: np.ndarray | None = None, primary: str = "acc", n_boot: int | None = None) -> Verdict:
    """One pair alone (a family of one: no correction)."""
    ids = "paired" if scores_a and scores_b else None
    fam = compare_family({"a": (stats_a, scores_a, ids), "b": (stats_b, scores_b, ids)}, labels, primary, n_boot)
    return fam[("a", "b")]


LEGEND = [
    ("≫ / ≪", "row higher / lower than column: called after Holm's correction over every pair of this table "
              "column, and the two rows' 95% confidence intervals over seeds do not overlap"),
    ("> / <", "row higher / lower: called after Holm's correction, though the 95% seed intervals overlap "
              "(the seed-matched paired bootstrap over test clips is the more powerful test)"),
    ("=", "no difference called: the Holm-adjusted p-value is 0.05 or more"),
    ("n/a", "no test possible: fewer than 2 seeds on a side and no shared seed with per-clip predictions"),
]


def pretty(mark: str) -> str:
    return {">>": "≫", "<<": "≪"}.get(mark, mark)
