"""Report sections about the comparison itself: the settings every row shares, the main table (and
the sweep points' table), how differences are called, chance levels, convergence, and the pairwise
matrices. Each section is a function of the report being built (``builder.Builder``).
"""

from __future__ import annotations

from avbench import results
from avbench.report import significance as sig
from avbench.report.blocks import Bullets, Heading, Para, Table
from avbench.report.builder import Builder
from avbench.report.cells import (
    TITLES,
    cell,
    configured,
    converged,
    converged_count,
    params_text,
    pct,
    rate,
    round_value,
    tuned_summary,
    tuned_values,
)
from avbench.report.compare import best_marks, comparable_groups, finite
from avbench.report.gather import RowInfo
from avbench.report.table import COLUMNS, config_label


def settings(rep: Builder) -> None:
    """The recipe and data settings of the runs: shared values once, varying keys named (numbers rounded
    to 3 significant digits; a key some rows tuned says so, the values are then per row in "How each row
    was configured")."""
    keys = sorted({k for r in rep.infos for k in r.params if k.startswith(("train.", "data."))})
    tuned_keys = {k for r in rep.infos if r.tuned and "missing" not in r.tuned for k in (r.tuned.get("overrides") or {})}
    shared, varying = [], []
    for k in keys:
        vals = {r.params.get(k, "-") for r in rep.infos}
        (shared if len(vals) == 1 else varying).append((k, sorted(vals)))
    if shared:
        rep.add(Para("Settings shared by every row: " + ", ".join(f"`{k}={round_value(v[0])}`" for k, v in shared)
                     + "."))
    if varying:
        rep.add(Para("Settings that differ between rows: " + ", ".join(
            f"`{k}` ({', '.join(dict.fromkeys(round_value(x) for x in v))}"
            + ("; tuned per row" if k in tuned_keys else "") + ")" for k, v in varying) + "."))


def configuration(rep: Builder) -> None:
    """How each row was configured, in words: tuned (budget, best validation score, the chosen values),
    a sweep point, fields set away from the strategy's defaults, or its defaults."""
    rep.add(Heading(3, "How each row was configured"))
    rep.add(Para("Tuned rows started from the configuration `avbench tune` chose on the validation split "
                 "(the same trial budget for every strategy; values rounded to 3 significant digits). "
                 "Other rows ran their strategy's defaults with the fields listed set (by `--set`, a preset, "
                 "a config file or the dataset card); a sweep's rows differ by the swept point. Each row "
                 "names its training recipe (`--recipe`: `default` is the harness's shared one, "
                 "`reference`/`cmg`/`scenic` the authors' own)."))
    lines = []
    for r in rep.shown(rep.infos):
        parts = []
        if r.tuned:
            parts.append(tuned_summary(r.tuned) + (f"; chosen: {tuned_values(r.tuned)}" if tuned_values(r.tuned)
                                                   else ""))
        for name, sw in sorted(r.sweeps.items()):
            parts.append(f"sweep `{name}` point " + ", ".join(f"{k}={v}" for k, v in sw.get("point", {}).items()))
        fields = rep.set_fields(r)
        if fields is None:
            parts.append("model fields unknown (its strategy cannot be loaded here)")
        elif fields:
            parts.append("set away from the defaults: " + ", ".join(f"{k}={round_value(v)}"
                                                                   for k, v in fields.items()))
        elif not r.tuned:
            parts.append("its strategy's defaults")
        parts.append(f"recipe `{r.params.get('recipe') or 'unrecorded'}`")
        lines.append(f"{r.short} {r.label}: " + "; ".join(parts))
    rep.add(Bullets(lines))


def comparison(rep: Builder) -> None:
    """The main table, the sweep points' table, how differences are called, chance, convergence, merged rows and the pairwise matrices."""
    main = rep.shown([r for r in rep.infos if not r.from_sweep])
    swept = rep.shown([r for r in rep.infos if r.from_sweep])
    rep.add(Heading(2, "Comparison"))
    rep.add(Para("Primary metric of each row in % on the test split: mean ± std over seeds, then the 95% "
                  "t-interval of the mean over seeds in parentheses. Parameters and throughput (clips/s, "
                  "training and inference) are means over seeds; throughput depends on the machine and its "
                  "load and is the only part of this report that changes when it is regenerated."))
    if rep.replication:
        rep.add(Para("⟨low, high⟩ after a cell: the row's 95% interval over the replicates and their seeds "
                     "(a two-stage bootstrap; see [Replication](#replication)), which also counts the "
                     "randomness of the tuning and the data; the interval before it counts this results "
                     "directory's seeds only. With few seeds the bootstrap interval can be narrower than the "
                     "t-interval where the replicates agree; it widens where they disagree."))
    _table(rep, main, "Main rows")
    if swept:
        rep.add(Heading(3, "Sweep points"))
        rep.add(Para("Rows created by `avbench sweep` (plotted in [Sweeps](#sweeps))."))
        _table(rep, swept, "")
    configuration(rep)
    rep.add(Heading(3, "How differences are called"))
    rep.add(Para("Multiple comparisons are controlled: within one table column (rows on the same test split, "
                  "protocol and metric), every pair of rows gets a p-value, from a seed-matched paired bootstrap "
                  "over test clips where both rows have per-clip predictions of shared seeds (2000 resamples for "
                  "accuracy, 200 otherwise; two-sided, from the bootstrap standard error), else from Welch's "
                  "t-test over seeds. Holm's step-down method adjusts the p-values of all pairs of that table "
                  "column, and a difference is called only when its adjusted p-value is below 0.05, so the "
                  "chance of calling any difference that is not there is at most 5% per table column."))
    rep.add(Para("In the tables: ★ is the column's best row among rows on the same test split and protocol; "
                  "† marks a row called below the best whose 95% interval over seeds does not overlap the "
                  "best's; ‡ marks a row called below the best although the intervals overlap. No mark: no "
                  "difference from the best is called. ° marks a cell not above chance (see below). In the "
                  "pairwise matrices below, the cell in row i, column j compares row i with row j:"))
    rep.add(Bullets([f"`{m}`: {t}" for m, t in sig.LEGEND]))
    chance_section(rep)
    convergence_section(rep)
    if rep.merged:
        rep.add(Para("Rows whose resolved configurations are identical (same model after the strategy "
                      "resolves its defaults, same recipe, data, cache and protocol) are shown once:"))
        by_index = {r.index: r for r in rep.infos}
        rep.add(Bullets([f"{by_index[d].short} {by_index[d].label} is {k.short} {k.label}"
                          for d, k in sorted(rep.merged.items())]))
    for col in COLUMNS:
        _pairwise(rep, main, col)


def chance_section(rep: Builder) -> None:
    """The chance level of each table and every cell that is not above it, said in words."""
    rep.add(Heading(3, "Chance level"))
    lines, flagged = [], []
    for g in comparable_groups(rep.shown(rep.infos)):
        ch = rep.chance_of(g[0])
        have = {c: v for c, v in ch.items() if v is not None}
        if not have:
            lines.append(f"{g[0].row.primary}, {g[0].row.protocol}: unknown (no per-clip predictions and no "
                         f"class count recorded)")
            continue
        lines.append(f"{g[0].row.primary} ({g[0].row.protocol}): " + ", ".join(
            f"{TITLES[c]} {pct(v)}%" for c, v in have.items()))
        for r in g:
            cols = [TITLES[c] for c in COLUMNS if results.not_above_chance(r.row.cells.get(c) or {}, have.get(c))]
            if cols:
                flagged.append(f"{r.short} {r.label}: {', '.join(cols)}")
    rep.add(Para("What a classifier that knows nothing scores on the test split: for accuracy, always "
                  "predicting the most frequent test class (1/C with balanced classes); for mAP, the mean "
                  "class prevalence; 0.5 for mAUC. It is the dotted line in the figures. A cell is marked ° "
                  "when it is not shown to be above chance: the lower end of its 95% interval over seeds "
                  "(its value, with one seed) is at or below the chance level."))
    rep.add(Bullets(lines))
    if flagged:
        rep.add(Para("**Not above chance** (these rows learned nothing the test can see, in these columns):"))
        rep.add(Bullets(flagged))
        rep.missing += [f"not above chance: {f}" for f in flagged]


def convergence_section(rep: Builder) -> None:
    """Which rows stopped while their validation metric was still rising, said in words."""
    rep.add(Heading(3, "Convergence"))
    rep.add(Para("The converged column counts the seeds whose training had converged, of the seeds whose curve "
                  "could be judged: each run records its validation mAP at evenly spaced steps, and a run is "
                  "*not converged* when that metric still rose over the last 20% of its learning-rate integral "
                  "(least-squares rise above 0.01 and above two standard errors), or when it is not above the "
                  "validation split's chance level (*not learning*); a curve of fewer than 4 points is not "
                  "judged (docs: \"A fair comparison protocol\"). With `train.validation=train-on-all` the "
                  "curve is measured on training clips. A row with a seed not converged (⚠) may rank below "
                  "what its strategy can reach with more steps."))
    late = []
    for r in rep.shown(rep.infos):
        got = converged_count(r.row.extra.get("converged"))
        if got is not None and got[0] < got[1]:
            late.append(f"{r.short} {r.label}: {got[1] - got[0]} of {got[1]} seed(s) not converged")
    if late:
        rep.add(Bullets(late))
        rep.missing += [f"not converged: {x}" for x in late]
    else:
        rep.add(Para("Every seed of every row with a recorded validation curve converged."))


def _table(rep: Builder, rows: list[RowInfo], _title: str) -> None:
    """One comparison table: a row per parent run, cells with their significance and chance marks."""
    if not rows:
        rep.add(Para("(no rows)"))
        return
    marks: dict[tuple[int, str], str] = {}
    for g in comparable_groups(rows):
        marks.update(best_marks(g, rep.n_boot, rep.families))
    body = []
    for r in rows:
        t = r.row
        chance = rep.chance_of(r)
        cells = [cell(t.cells.get(c), t.primary) + marks.get((r.index, c), "")
                 + ("°" if results.not_above_chance(t.cells.get(c) or {}, chance.get(c)) else "")
                 + _over_replicates(rep, r, c) for c in COLUMNS]
        sweep = next(iter(sorted(r.sweeps)), None) if r.from_sweep else None
        body.append([r.short, t.name, config_label(t, [x.row for x in rep.infos]) or "-",
                     configured(r.tuned, sweep, rep.set_fields(r), r.params.get("recipe")),
                     t.protocol, t.primary, len(r.seeds)] + cells
                    + [converged(t.extra.get("converged")), params_text(t.extra.get("parameters")),
                       rate(t.extra.get("train_clips_per_s")),
                       rate(t.extra.get("eval_clips_per_s")), r.group])
    rep.add(Table(["#", "strategy", "config", "configured", "protocol", "metric", "seeds", "Audio", "Video", "Fusion",
                    "converged", "params", "train clips/s", "infer clips/s", "group"], body))


def _over_replicates(rep: Builder, r: RowInfo, col: str) -> str:
    """`` ⟨low, high⟩``: the row's interval over replicates and seeds, where replicates were given."""
    c = rep.replication.get(col)
    key = (r.row.name, r.row.protocol, r.row.primary)
    twins = [x for x in rep.shown(rep.infos) if not x.from_sweep and (x.row.name, x.row.protocol, x.row.primary) == key]
    if c is None or r.from_sweep or len(twins) != 1:  # a name on two caches: replicates matched the first only
        return ""
    got = c.rows.get(key)
    if not got:
        return ""
    iv = got["interval"]
    return f" ⟨{pct(iv['ci_low'])}, {pct(iv['ci_high'])}⟩"


def _pairwise(rep: Builder, rows: list[RowInfo], col: str) -> None:
    """Per comparable group, the matrix of Holm-corrected verdicts of every pair of rows in column ``col``."""
    for g in comparable_groups(rows):
        have = [r for r in g if col in r.row.cells and finite(r.row.cells[col]["mean"])]
        if len(have) < 2:
            continue
        body = []
        for a in have:
            line = [f"{a.short} {a.label}"]
            for b in have:
                line.append("" if a is b else sig.pretty(rep.families.verdict(a, b, col, have).mark))
            body.append(line)
        proto = g[0].row.protocol
        suffix = f" ({proto})" if proto != "standard" else ""
        rep.add(Heading(4, f"Pairwise: {TITLES[col]} {g[0].row.primary}{suffix}"))
        rep.add(Table(["row vs column"] + [r.short for r in have], body))
        if any(rep.families.verdict(a, b, col, have).mark == "n/a" for a in have for b in have if a is not b):
            rep.missing.append(f"some {TITLES[col]} comparisons are n/a: rows with fewer than 2 seeds and no "
                                f"shared seed with per-clip predictions")
