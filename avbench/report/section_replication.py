"""The report's "Replication" section: the same protocol run again (another sampler seed, another
data seed) into other results directories, compared with this report's rows.

Why a section of its own: the main table's intervals and calls count seeds and test clips within one
tuning; this section shows whether the ranking survives a fresh tuning (Kendall tau per column, the
rows whose order flips, the calls that hold in every replicate) and gives each row an interval that
counts the tuning's randomness too (``replication``'s hierarchical bootstrap). Replicate 0 is the
report's own results directory; its calls are the report's (the same ``Families``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from avbench.report import replication as rp
from avbench.report.blocks import Bullets, Heading, Para, Table
from avbench.report.builder import Builder
from avbench.report.cells import TITLES, pct
from avbench.report.compare import Families, comparable_groups, finite, merge_identical
from avbench.report.gather import RowInfo
from avbench.report.table import COLUMNS


@dataclass
class Replicate:
    """One replicate's rows: its label (R0, R1, ...), where they came from and its main rows."""

    label: str
    source: str
    infos: list[RowInfo]
    families: Families
    merged: dict[int, RowInfo]

    @property
    def main(self) -> list[RowInfo]:
        return [r for r in self.infos if not r.from_sweep and r.index not in self.merged]


def describe(infos: list[RowInfo]) -> str:
    """The seeds that make a replicate: its rows' sampler seeds (from their tuned files) and data seeds."""
    samplers = sorted({str(r.tuned.get("sampler_seed", 0)) for r in infos if r.tuned and "missing" not in r.tuned})
    data = sorted({r.params["data.seed"] for r in infos if "data.seed" in r.params})
    parts = []
    if samplers:
        parts.append("sampler seed " + ", ".join(samplers))
    if data:
        parts.append("data seed " + ", ".join(data))
    return "; ".join(parts) or "seeds not recorded"


def _calls(rep: Replicate, col: str) -> tuple[dict[rp.Key, dict[int, float]], dict[tuple[rp.Key, rp.Key], int]]:
    """One replicate's per-seed values (row key -> seed -> value) and its Holm-corrected calls (each
    unordered pair of keys once, sorted), computed as the report computes its pairwise matrices."""
    per_seed: dict[rp.Key, dict[int, float]] = {}
    calls: dict[tuple[rp.Key, rp.Key], int] = {}
    seen: set[rp.Key] = set()
    for g in comparable_groups(rep.main):
        have = [r for r in g if col in r.row.cells and finite(r.row.cells[col]["mean"])]
        for r in have:
            k = rp.row_key(r.row.name, r.row.protocol, r.row.primary)
            if k in seen:  # the same row name twice (two caches): the first only
                continue
            seen.add(k)
            per_seed[k] = dict(r.row.per_seed.get(col, {}))
        if len(have) < 2:
            continue
        by_key = {rp.row_key(r.row.name, r.row.protocol, r.row.primary): r for r in have}
        keys = sorted(by_key)
        for i, x in enumerate(keys):
            for y in keys[i + 1:]:
                calls[(x, y)] = rep.families.verdict(by_key[x], by_key[y], col, have).sign
    return per_seed, calls


def compute(reps: list[Replicate], n_boot: int = rp.N_BOOT) -> dict[str, rp.ColumnReplication]:
    out = {}
    for col in COLUMNS:
        got = [_calls(r, col) for r in reps]
        if any(not g[0] for g in got):
            continue
        c = rp.replicate_column(col, [g[0] for g in got], [g[1] for g in got], n_boot)
        if c.keys:
            out[col] = c
    return out


def make_replicates(rep: Builder, others: list[tuple[str, list[RowInfo]]]) -> list[Replicate]:
    first = Replicate("R0", "this report's results directory", rep.infos, rep.families, rep.merged)
    return [first] + [Replicate(f"R{i}", src, infos, Families(rep.n_boot), merge_identical(infos))
                      for i, (src, infos) in enumerate(others, start=1)]


def _pct(x: float) -> str:
    return "-" if x is None or not math.isfinite(x) else pct(x)


def _pair(p: tuple[rp.Key, rp.Key]) -> str:
    return f"{rp.key_text(p[0])} > {rp.key_text(p[1])}"


def _tau_outlook(c: rp.ColumnReplication) -> str:
    """What tau these spreads imply, and the spread a tau of TAU_TARGET needs."""
    stds = sorted((c.rows[k]["replicate_std"], rp.key_text(k)) for k in c.keys if math.isfinite(c.rows[k]["replicate_std"]))
    if not stds or not math.isfinite(c.expected_tau):
        return "Expected τ: needs two rows with a spread across replicates."
    median = stds[len(stds) // 2][0]
    need = (f"every row's std across replicates would have to be at most {_pct(c.std_needed)} points "
            if math.isfinite(c.std_needed) else "no spread reaches it (rows tie exactly) ")
    return (f"Expected τ between two fresh replicates, if each row's replicate mean is normal around its "
            f"mean over replicates with its std across replicates ({rp.TAU_DRAWS} simulated pairs): "
            f"{c.expected_tau:.2f}. For an expected τ of {rp.TAU_TARGET:g} with these means, {need}"
            f"(now: median {_pct(median)}, largest {_pct(stds[-1][0])} for {stds[-1][1]}).")


FEW_REPLICATES = 5  # below this, the report says its bootstrap over replicates is optimistic


def replication(rep: Builder, reps: list[Replicate]) -> dict[str, Any] | None:
    """Append the section; return what report.json carries (None without replicates)."""
    if len(reps) < 2:
        return None
    labels = [r.label for r in reps]
    rep.add(Heading(2, "Replication"))
    rep.add(Para("The same protocol run again with another tuning sampler seed and/or another data seed, each "
                 "into its own results directory (`avbench report --replicate DIR`, repeatable). Rows are "
                 "matched by strategy row name, protocol and metric; a column compares the rows present in "
                 "every replicate. Kendall's τ (tau-b, `scipy.stats.kendalltau`) compares two replicates' "
                 "orderings of the rows by mean: 1 the same order, 0 unrelated, -1 reversed. A *surviving* "
                 "call is one of the report's Holm-corrected calls (see How differences are called) made with "
                 "the same sign in every replicate."))
    rep.add(Bullets([f"{r.label}: {r.source} ({describe(r.infos)}; {len(r.main)} row(s))" for r in reps]))
    cols = rep.replication or compute(reps, rp.N_BOOT)
    summary: dict[str, Any] = {"replicates": [{"label": r.label, "source": r.source, "seeds": describe(r.infos)}
                                              for r in reps], "columns": {}}
    if not cols:
        rep.add(Para("No row is present in every replicate: nothing to compare."))
        rep.missing.append("replication: no row present in every replicate")
        return summary
    for col, c in cols.items():
        summary["columns"][col] = rp.column_json(c, labels)
        rep.add(Heading(3, f"{TITLES[col]} ({c.keys[0][2]})"))
        rep.add(Table(["replicates", "Kendall τ", "rows", "order flips"],
                      [[f"{labels[i]}-{labels[j]}", "-" if not math.isfinite(t) else f"{t:.2f}", len(c.keys),
                        "; ".join(f"{rp.key_text(x)} / {rp.key_text(y)}" for x, y in c.flips[(i, j)]) or "none"]
                       for (i, j), t in sorted(c.tau.items())]))
        if c.left_out:
            names = ", ".join(rp.key_text(k) for k in c.left_out)
            rep.add(Para(f"Left out of this column (not in every replicate): {names}."))
            rep.missing.append(f"replication, {TITLES[col]}: not in every replicate: {names}")
        rep.add(Para("Calls that hold in every replicate: " + (", ".join(_pair(p) for p in c.surviving) or "none")
                     + ". Calls made in some replicates only: "
                     + (", ".join(f"{rp.key_text(d['pair'][0])} vs {rp.key_text(d['pair'][1])} ("
                                  + ", ".join(f"{labels[i]} {'>' if s > 0 else '<' if s < 0 else '='}"
                                              for i, s in enumerate(d["signs"])) + ")" for d in c.partial)
                        or "none") + "."))
        body = []
        for k in sorted(c.keys, key=lambda k: -sum(m[k] for m in c.means)):
            v = c.rows[k]
            iv = v["interval"]
            body.append([rp.key_text(k)] + [_pct(m) for m in v["replicate_means"]]
                        + [_pct(v["replicate_std"]), _pct(v["seed_std"]),
                           f"{_pct(iv['mean'])} ({_pct(iv['ci_low'])}, {_pct(iv['ci_high'])})"])
        rep.add(Table(["row"] + [f"{x} mean" for x in labels]
                      + ["std across replicates", "std across seeds", "mean (95% over replicates and seeds)"], body))
        rep.add(Para(_tau_outlook(c)))
        called = [(p if h.sign > 0 else (p[1], p[0])) for p, h in sorted(c.hier.items()) if h.sign]
        rep.add(Para("Called across replicates (hierarchical bootstrap, Holm-corrected over this column's "
                     "pairs): " + (", ".join(_pair(p) for p in called) or "none") + "."))
    rep.add(Para("The std across replicates is the standard deviation of the replicates' means; the std across "
                 "seeds pools each replicate's standard deviation over its seeds. The last interval resamples "
                 "the replicates, then the seeds within each drawn replicate (4000 resamples), so it counts the "
                 "tuning's (and the data's) randomness as well as the seeds'. A difference is called across "
                 "replicates when the same two-stage bootstrap of the difference (the same replicates drawn for "
                 "both rows, seeds paired where both ran the same seeds) gives a Holm-adjusted two-sided "
                 "p-value below 0.05: it must hold across the replicates, not only across one replicate's seeds."))
    if len(reps) < FEW_REPLICATES:
        rep.add(Para(f"**Only {len(reps)} replicates.** A bootstrap over {len(reps)} replicates draws from "
                     f"{len(reps)} values, so it understates the spread between them (by a factor of "
                     f"{(len(reps) - 1) / len(reps):.2f} in variance for the mean) and its calls are optimistic; "
                     f"trust a call across replicates only where it also holds in every replicate (the lists "
                     f"above), and add replicates before citing the rest."))
        rep.missing.append(f"replication: only {len(reps)} replicates (calls across them are optimistic)")
    return summary
