"""Does a report's ranking replicate? The numbers behind the report's "Replication" section.

Why: one tuning is one draw of the sampler's randomness (and, for a generated dataset, of the data).
The seeds of a row's final runs share that draw, so the spread over seeds and the Holm calls built on
it count seed and test-clip noise but not the randomness of the selection itself (issue 23: one
sampler seed alone moved a strategy's mean by as much as the gaps the report called). A *replicate*
is the whole protocol run again with another sampler seed and/or data seed, into its own results
directory; this module compares the replicates' rows without touching MLflow (``gather`` did):

- rows are matched across replicates by (strategy row name, protocol, metric);
- per column, Kendall's tau-b (``scipy.stats.kendalltau``) of the rows' means between every pair of
  replicates, and the pairs of rows whose order flips;
- which of the report's Holm-corrected calls hold, with the same sign, in every replicate;
- a hierarchical bootstrap over replicates, then seeds within each replicate: a row's interval that
  counts both kinds of randomness, and pairwise p-values (Holm-corrected per column) so a difference
  is called only when it holds across the replicates, not just across one replicate's seeds;
- the tau to expect between two fresh replicates given the rows' means and spreads (a normal model),
  and the spread every row would need for that tau to reach 0.9: whether a low tau is bad luck or
  what these spreads imply, and how much quieter the protocol must get.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from avbench.report import significance as sig

N_BOOT = 4000  # hierarchical bootstrap resamples (cheap: seed-level values only)

Key = tuple[str, str, str]  # (row name, protocol, primary metric)


def row_key(name: str, protocol: str, primary: str) -> Key:
    return (name, protocol, primary)


def key_text(k: Key) -> str:
    return k[0] + (f" ({k[1]})" if k[1] != "standard" else "")


def _sign(x: float) -> int:
    return 0 if x == 0 or not math.isfinite(x) else (1 if x > 0 else -1)


def kendall(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall's tau-b of two rankings given as values (scipy); nan with fewer than 2 rows or no spread."""
    from scipy.stats import kendalltau

    if len(a) < 2:
        return float("nan")
    return float(kendalltau(a, b).statistic)


def flips(a: Mapping[Key, float], b: Mapping[Key, float]) -> list[tuple[Key, Key]]:
    """Pairs of rows (present in both) ordered one way by ``a`` and the other way by ``b``, each pair
    once, written higher-in-``a`` first."""
    keys = sorted(set(a) & set(b))
    out = []
    for i, x in enumerate(keys):
        for y in keys[i + 1:]:
            sa, sb = _sign(a[x] - a[y]), _sign(b[x] - b[y])
            if sa * sb < 0:
                out.append((x, y) if sa > 0 else (y, x))
    return out


def surviving(calls: Sequence[Mapping[tuple[Key, Key], int]]) -> tuple[list[tuple[Key, Key]], list[dict[str, Any]]]:
    """Calls (pair -> +1 first higher, -1 lower, 0 not called; each unordered pair once, under the same
    key in every replicate) that hold with the same sign in every replicate, written higher first; and
    the calls made in some replicates only (pair, signs per replicate)."""
    pairs = sorted(set.intersection(*(set(c) for c in calls))) if calls else []
    keep, partial = [], []
    for p in pairs:
        signs = [c[p] for c in calls]
        if signs[0] != 0 and all(s == signs[0] for s in signs):
            keep.append(p if signs[0] > 0 else (p[1], p[0]))
        elif any(s != 0 for s in signs):
            partial.append({"pair": p, "signs": signs})
    return keep, partial


def _slot_means(values: Sequence[np.ndarray], n_boot: int, rng: np.random.Generator,
                pick: np.ndarray, shared: Sequence[np.ndarray] | None = None) -> np.ndarray:
    """[n_boot, R]: for each resample and slot, the mean over a resample of the seeds of the replicate
    ``pick`` put in that slot. ``shared``: per replicate, the seed resample indices to use (so two rows
    paired by seed use the same ones); else drawn here."""
    n_rep = len(values)
    out = np.empty((n_boot, pick.shape[1]))
    for k in range(pick.shape[1]):
        for r in range(n_rep):
            where = pick[:, k] == r
            if not where.any():
                continue
            v = values[r]
            idx = shared[r][k][where] if shared is not None else rng.integers(0, len(v), size=(int(where.sum()), len(v)))
            out[where, k] = v[idx].mean(axis=1)
    return out


def _draws(sizes: Sequence[int], slots: int, n_boot: int, rng: np.random.Generator) -> list[list[np.ndarray]]:
    """Per replicate and slot, [n_boot, n_seeds] seed resample indices."""
    return [[rng.integers(0, n, size=(n_boot, n)) for _ in range(slots)] for n in sizes]


def hierarchical_interval(values: Sequence[Sequence[float]], n_boot: int = N_BOOT, seed: int = 0,
                          level: float = sig.LEVEL) -> dict[str, float]:
    """A row's mean over replicates and its percentile interval from a two-stage bootstrap: draw the
    replicates with replacement, then each drawn replicate's seeds with replacement, and average the
    drawn replicates' seed means. ``values``: per replicate, its seeds' values (at least one each)."""
    vals = [np.asarray(v, dtype=np.float64) for v in values]
    if not vals or any(len(v) == 0 for v in vals):
        return {"mean": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"), "n_boot": 0}
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(vals), size=(n_boot, len(vals)))
    boots = _slot_means(vals, n_boot, rng, pick).mean(axis=1)
    lo, hi = np.quantile(boots, [(1 - level) / 2, (1 + level) / 2])
    return {"mean": float(np.mean([v.mean() for v in vals])), "ci_low": float(lo), "ci_high": float(hi),
            "n_boot": int(n_boot)}


def spreads(values: Sequence[Sequence[float]]) -> dict[str, float]:
    """Spread across replicates (std of the replicates' means) beside the spread across seeds (the
    pooled within-replicate std over seeds)."""
    means = [float(np.mean(v)) for v in values if len(v)]
    within = [float(np.var(v, ddof=1)) for v in values if len(v) > 1]
    return {"replicate_std": float(np.std(means, ddof=1)) if len(means) > 1 else float("nan"),
            "seed_std": math.sqrt(float(np.mean(within))) if within else float("nan"),
            "replicate_means": means}


def hierarchical_diff(a: Sequence[Mapping[int, float]], b: Sequence[Mapping[int, float]], n_boot: int = N_BOOT,
                      seed: int = 0, level: float = sig.LEVEL) -> dict[str, float] | None:
    """``mean(a) - mean(b)`` over replicates, by the two-stage bootstrap: the same replicates drawn for
    both rows (a replicate is one sampler seed / data seed for every row), then seeds within each,
    paired where both rows ran the same seeds. p: two-sided, the share of resampled differences on the
    far side of zero, doubled. None when a replicate lacks seeds on a side."""
    if len(a) != len(b) or not a or any(not x for x in a) or any(not y for y in b):
        return None
    rng = np.random.default_rng(seed)
    n_rep = len(a)
    pick = rng.integers(0, n_rep, size=(n_boot, n_rep))
    va = [np.array([x[s] for s in sorted(x)], dtype=np.float64) for x in a]
    vb = [np.array([y[s] for s in sorted(y)], dtype=np.float64) for y in b]
    paired = all(sorted(x) == sorted(y) for x, y in zip(a, b))
    if paired:
        idx = _draws([len(v) for v in va], n_rep, n_boot, rng)
        ma, mb = _slot_means(va, n_boot, rng, pick, idx), _slot_means(vb, n_boot, rng, pick, idx)
    else:
        ma, mb = _slot_means(va, n_boot, rng, pick), _slot_means(vb, n_boot, rng, pick)
    boots = (ma - mb).mean(axis=1)
    observed = float(np.mean([x.mean() for x in va]) - np.mean([y.mean() for y in vb]))
    lo, hi = np.quantile(boots, [(1 - level) / 2, (1 + level) / 2])
    p = min(1.0, 2 * min(float(np.mean(boots <= 0)), float(np.mean(boots >= 0))))
    return {"diff": observed, "ci_low": float(lo), "ci_high": float(hi), "p": p, "n_boot": int(n_boot),
            "paired_seeds": paired}


@dataclass
class HierCall:
    """A pair's verdict across replicates."""

    sign: int  # +1 first higher, -1 lower, 0 not called
    diff: float
    ci_low: float
    ci_high: float
    p: float | None
    p_adj: float | None


def hierarchical_family(items: Mapping[Key, Sequence[Mapping[int, float]]], n_boot: int = N_BOOT,
                        alpha: float = sig.ALPHA) -> dict[tuple[Key, Key], HierCall]:
    """Every unordered pair of ``items`` (key -> per replicate, seed -> value), each tested by the
    hierarchical bootstrap and Holm-corrected over the pairs of the family (one table column)."""
    keys = sorted(items)
    pairs = [(x, y) for i, x in enumerate(keys) for y in keys[i + 1:]]
    tests = [hierarchical_diff(items[x], items[y], n_boot=n_boot, seed=i) for i, (x, y) in enumerate(pairs)]
    adjusted = sig.holm([t["p"] if t else None for t in tests])
    out = {}
    for p, t, adj in zip(pairs, tests, adjusted):
        if t is None:
            out[p] = HierCall(0, float("nan"), float("nan"), float("nan"), None, None)
            continue
        called = adj is not None and adj < alpha
        out[p] = HierCall(_sign(t["diff"]) if called else 0, t["diff"], t["ci_low"], t["ci_high"], t["p"], adj)
    return out


@dataclass
class ColumnReplication:
    """One column's replication numbers (what the section prints and report.json carries)."""

    column: str
    keys: list[Key]  # rows present in every replicate with this column
    means: list[dict[Key, float]]  # per replicate
    tau: dict[tuple[int, int], float] = field(default_factory=dict)
    flips: dict[tuple[int, int], list[tuple[Key, Key]]] = field(default_factory=dict)
    calls: list[dict[tuple[Key, Key], int]] = field(default_factory=list)  # per replicate, the report's calls
    surviving: list[tuple[Key, Key]] = field(default_factory=list)
    partial: list[dict[str, Any]] = field(default_factory=list)
    hier: dict[tuple[Key, Key], HierCall] = field(default_factory=dict)
    rows: dict[Key, dict[str, Any]] = field(default_factory=dict)  # spreads and hierarchical interval
    left_out: list[Key] = field(default_factory=list)  # rows with this column in some replicates only
    expected_tau: float = float("nan")  # between two fresh replicates, with these rows' means and spreads
    std_needed: float = float("nan")  # the replicate std (every row) at which expected tau reaches TAU_TARGET


def replicate_column(column: str, per_seed: Sequence[Mapping[Key, Mapping[int, float]]],
                     calls: Sequence[Mapping[tuple[Key, Key], int]], n_boot: int = N_BOOT) -> ColumnReplication:
    """All replication numbers of one column. ``per_seed``: per replicate, row key -> seed -> value;
    ``calls``: per replicate, the report's Holm-corrected call of each unordered pair (sorted keys)."""
    keys = sorted(set.intersection(*(set(k for k, v in p.items() if v) for p in per_seed)))
    means = [{k: float(np.mean(list(p[k].values()))) for k in keys} for p in per_seed]
    out = ColumnReplication(column, keys, means)
    out.left_out = sorted(set().union(*(set(k for k, v in p.items() if v) for p in per_seed)) - set(keys))
    for i in range(len(per_seed)):
        for j in range(i + 1, len(per_seed)):
            out.tau[(i, j)] = kendall([means[i][k] for k in keys], [means[j][k] for k in keys])
            out.flips[(i, j)] = flips(means[i], means[j])
    wanted = {(x, y) for i, x in enumerate(keys) for y in keys[i + 1:]}
    out.calls = [{p: c.get(p, 0) for p in wanted} for c in calls]
    out.surviving, out.partial = surviving(out.calls)
    items = {k: [p[k] for p in per_seed] for k in keys}
    out.hier = hierarchical_family(items, n_boot)
    for k in keys:
        vals = [list(v.values()) for v in items[k]]
        out.rows[k] = {**spreads(vals), "interval": hierarchical_interval(vals, n_boot)}
    pooled = [float(np.mean(out.rows[k]["replicate_means"])) for k in keys]
    out.expected_tau = expected_tau(pooled, [out.rows[k]["replicate_std"] for k in keys])
    out.std_needed = std_for_tau(pooled)
    return out


TAU_TARGET = 0.9  # issue 23's bar for a ranking that replicates
TAU_DRAWS = 2000  # Monte Carlo pairs of replicates for expected_tau


def expected_tau(means: Sequence[float], std: Sequence[float] | float, draws: int = TAU_DRAWS, seed: int = 0) -> float:
    """Kendall's tau expected between two independent replicates when each row's replicate mean is
    normal around ``means`` with spread ``std`` (per row or one for all): what a measured tau is
    compared with, and what tells whether a target tau is reachable with such spreads."""
    mu = np.asarray(means, dtype=float)
    sd = np.broadcast_to(np.asarray(std, dtype=float), mu.shape)
    if mu.size < 2:
        return float("nan")
    rng = np.random.default_rng(seed)
    a = mu + rng.standard_normal((draws, mu.size)) * sd
    b = mu + rng.standard_normal((draws, mu.size)) * sd
    i, j = np.triu_indices(mu.size, 1)
    # continuous draws never tie, so tau-b is the mean product of the pairs' order signs, per draw
    return float(np.mean(np.sign(a[:, i] - a[:, j]) * np.sign(b[:, i] - b[:, j])))


def std_for_tau(means: Sequence[float], target: float = TAU_TARGET, draws: int = TAU_DRAWS, seed: int = 0) -> float:
    """The largest replicate std, the same for every row, at which ``expected_tau`` still reaches
    ``target`` (bisection on a log scale; the same random draws at every std, so the curve is smooth).
    nan with fewer than 2 rows or rows that tie exactly (no std reaches the target)."""
    mu = np.asarray(means, dtype=float)
    gaps = np.diff(np.sort(mu))
    if mu.size < 2 or not np.all(gaps > 0):
        return float("nan")
    lo, hi = float(gaps.min()) * 1e-3, float(np.ptp(mu)) * 10
    if expected_tau(mu, lo, draws, seed) < target:
        return float("nan")
    for _ in range(30):
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if expected_tau(mu, mid, draws, seed) >= target else (lo, mid)
    return lo


def column_json(c: ColumnReplication, labels: Sequence[str]) -> dict[str, Any]:
    """report.json's form of one column (keys written as row names)."""
    def pair(p: tuple[Key, Key]) -> list[str]:
        return [key_text(p[0]), key_text(p[1])]

    return {
        "rows": [key_text(k) for k in c.keys],
        "means": {labels[i]: {key_text(k): v for k, v in m.items()} for i, m in enumerate(c.means)},
        "kendall_tau": [{"a": labels[i], "b": labels[j], "tau": t} for (i, j), t in sorted(c.tau.items())],
        "flips": [{"a": labels[i], "b": labels[j], "pairs": [pair(p) for p in f]} for (i, j), f in sorted(c.flips.items())],
        "calls": {labels[i]: [pair(p if s > 0 else (p[1], p[0])) for p, s in sorted(cl.items()) if s]
                  for i, cl in enumerate(c.calls)},
        "left_out": [key_text(k) for k in c.left_out],
        "expected_tau": c.expected_tau,
        "replicate_std_for_tau": {"target": TAU_TARGET, "std": c.std_needed},
        "surviving_calls": [pair(p) for p in c.surviving],
        "calls_in_some_replicates": [{"pair": pair(d["pair"]), "signs": d["signs"]} for d in c.partial],
        "hierarchical_calls": [{"pair": pair(p), "sign": h.sign, "diff": h.diff, "ci_low": h.ci_low,
                                "ci_high": h.ci_high, "p": h.p, "p_adj": h.p_adj} for p, h in sorted(c.hier.items())],
        "row_spread": {key_text(k): {"replicate_means": v["replicate_means"], "replicate_std": v["replicate_std"],
                                     "seed_std": v["seed_std"], "hierarchical_ci": [v["interval"]["ci_low"],
                                                                                    v["interval"]["ci_high"]]}
                       for k, v in c.rows.items()},
    }
