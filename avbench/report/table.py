"""Comparison tables from MLflow: one row per strategy and config, columns like UAVM Table I.

Rows come from parent runs (one per strategy + config + cache + recipe + protocol); their children
are re-read so the mean, std and seed count reflect exactly the finished seeds.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from typing import Any

from avbench import results
from avbench.api import COLUMNS  # the evaluation columns, in order
from avbench.metrics.stats import mean_std_ci
from avbench.tracking import TAG_KIND, Tracker, metric_name


@dataclass
class TableRow:
    name: str
    strategy: str
    config: dict[str, str]
    protocol: str
    primary: str
    cells: dict[str, dict[str, float]]  # column -> mean_std_ci of the primary metric
    extra: dict[str, dict[str, float]] = field(default_factory=dict)  # params, throughput, converged (0/1 per seed)
    seeds: int = 0
    parent_run_id: str = ""
    per_seed: dict[str, dict[int, float]] = field(default_factory=dict)  # column -> seed -> value


def collect_rows(tracker: Tracker, dataset: str) -> list[TableRow]:
    exp = tracker.experiment_id(dataset, create=False)
    if exp is None:
        return []
    parents = tracker.client.search_runs([exp], filter_string=f"tags.`{TAG_KIND}` = 'parent'", max_results=10000)
    rows = []
    for p in parents:
        children = tracker.children(p.info.run_id)
        if not children:
            continue
        params = p.data.params
        primary = params.get("primary_metric", "acc")
        cells, per_seed = {}, {}
        for col in COLUMNS:
            key = metric_name(f"{col}/{primary}")
            vals = {int(c.data.tags.get("avbench.seed", -1)): c.data.metrics[key] for c in children if key in c.data.metrics}
            if vals:
                cells[col] = mean_std_ci(list(vals.values()))
                per_seed[col] = vals
        extra = {}
        for key in ("parameters", "train_clips_per_s", "eval_clips_per_s", "converged"):
            vals = [c.data.metrics[key] for c in children if key in c.data.metrics]
            if vals:
                extra[key] = mean_std_ci(vals)
        config = {k[len("model."):]: v for k, v in params.items() if k.startswith("model.")}
        rows.append(TableRow(name=p.info.run_name or params.get("strategy", "?"), strategy=params.get("strategy", "?"),
                             config=config, protocol=params.get("protocol", "standard"), primary=primary,
                             cells=cells, extra=extra, seeds=len(children), parent_run_id=p.info.run_id,
                             per_seed=per_seed))
    rows.sort(key=lambda r: (r.protocol, r.strategy, r.name, sorted(r.config.items())))
    return rows


def config_label(row: TableRow, rows: list[TableRow]) -> str:
    """Only the config fields that differ between rows of the same strategy."""
    same = [r for r in rows if r.strategy == row.strategy]
    varying = sorted({k for r in same for k in r.config if len({s.config.get(k) for s in same}) > 1})
    return ", ".join(f"{k}={row.config.get(k)}" for k in varying)


def format_count(n: float | None) -> str:
    """A parameter count at any size, three significant digits: 812, 2.7k, 27.1k, 2.41M, 1.3G."""
    if n is None or not math.isfinite(n):
        return "-"
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.3g}{unit}"
    return f"{n:.0f}"


def _cell(s: dict[str, float] | None, mark: str = "") -> str:
    if not s or not math.isfinite(s.get("mean", float("nan"))):
        return "-"
    text = f"{100 * s['mean']:.2f}" if s["n"] == 1 else f"{100 * s['mean']:.2f} ± {100 * s['std']:.2f}"
    return text + mark


HEADERS = ["strategy", "config", "protocol", "metric", "Audio", "Video", "Fusion", "seeds", "params"]
NOTES = ("mean ± std over seeds of each row's primary metric (%); 'seeds' counts finished seed runs. "
         "★ best in its column (rows with the same protocol and metric); † / ‡ below the best, called after "
         "Holm's correction over every pair of rows in the column († the 95% seed intervals are also apart); "
         "° not above chance.")


def render_table(rows: list[TableRow], fmt: str = "md", marks: dict[tuple[int, str], str] | None = None) -> str:
    """The table as Markdown, LaTeX (booktabs) or CSV. ``marks``: (row position, column) -> marks
    (★ best, † / ‡ called below the best, ° not above chance), from ``avbench.report.document``."""
    marks = marks or {}
    if fmt == "csv":
        return _csv(rows)
    if fmt == "latex":
        return _latex(rows, marks)
    from tabulate import tabulate

    body = []
    for i, r in enumerate(rows):
        params = r.extra.get("parameters", {}).get("mean")
        body.append([r.name, config_label(r, rows), r.protocol, r.primary]
                    + [_cell(r.cells.get(c), marks.get((i, c), "")) for c in COLUMNS]
                    + [r.seeds, format_count(params)])
    return tabulate(body, headers=HEADERS, tablefmt="github")


def _csv(rows: list[TableRow]) -> str:
    """Numbers, not strings: per column mean, std, n and the 95% interval over seeds, in percent."""
    head = ["strategy", "config", "protocol", "metric", "unit"]
    for c in COLUMNS:
        head += [f"{c}_{k}" for k in ("mean", "std", "n", "ci_low", "ci_high")]
    head += ["seeds", "parameters"]
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(head)
    for r in rows:
        line: list[Any] = [r.name, config_label(r, rows), r.protocol, r.primary, "%"]
        for c in COLUMNS:
            s = dict(r.cells.get(c) or {})
            if s:  # a t-interval over 2-3 seeds can leave the metric's range: clipped to it
                s["ci_low"], s["ci_high"] = results.clip_interval(s, r.primary)
            for k in ("mean", "std", "n", "ci_low", "ci_high"):
                v = s.get(k)
                if v is None or (isinstance(v, float) and not math.isfinite(v)):
                    line.append("")
                else:
                    line.append(int(v) if k == "n" else round(100 * float(v), 6))
        params = r.extra.get("parameters", {}).get("mean")
        line += [r.seeds, int(round(params)) if params is not None and math.isfinite(params) else ""]
        w.writerow(line)
    return out.getvalue()


_LATEX_ESCAPE = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                 "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_ESCAPE.get(ch, ch) for ch in str(text))


def _latex_cell(s: dict[str, float] | None, mark: str, bold: bool = False) -> str:
    if not s or not math.isfinite(s.get("mean", float("nan"))):
        return "--"
    num = f"{100 * s['mean']:.2f}"
    if bold:
        num = rf"\textbf{{{num}}}"
    sups = "".join(t for m, t in (("†", r"\dagger"), ("‡", r"\ddagger"), ("°", r"\circ")) if m in mark)
    text = num if s["n"] == 1 else rf"{num} $\pm$ {100 * s['std']:.2f}"
    return text + (f"$^{{{sups}}}$" if sups else "")


LATEX_HEADERS = ["strategy", "config", "protocol", "metric", r"Audio (\%)", r"Video (\%)", r"Fusion (\%)", "seeds",
                 "params (count)"]


def bold_cells(rows: list[TableRow], marks: dict[tuple[int, str], str]) -> set[tuple[int, str]]:
    """The cells to set in bold: a column's best (★) only where the report's test calls at least one
    row of the same protocol and metric below it (†/‡), and never a cell not above chance (°)."""
    out = set()
    for (i, col), mark in marks.items():
        if "★" not in mark or "°" in mark:
            continue
        key = (rows[i].protocol, rows[i].primary)
        if any(("†" in m or "‡" in m) and c == col and (rows[j].protocol, rows[j].primary) == key
               for (j, c), m in marks.items()):
            out.add((i, col))
    return out


def _latex(rows: list[TableRow], marks: dict[tuple[int, str], str]) -> str:
    """A booktabs tabular scaled to the column width (``\\resizebox``, graphicx): a column's best entry
    in bold only where a difference from it is called, significance marks as superscripts, units in
    the headers."""
    bold = bold_cells(rows, marks)
    lines = [r"% avbench table: needs \usepackage{booktabs} and \usepackage{graphicx}",
             r"% bold: the column's best where the report's test calls a difference from it (Holm-corrected);",
             r"% $^\dagger$/$^\ddagger$: called below the best (95% seed intervals apart / overlapping);"
             r" $^\circ$: not above chance",
             r"\resizebox{\columnwidth}{!}{%",
             r"\begin{tabular}{llll" + "r" * len(COLUMNS) + "rr}", r"\toprule",
             " & ".join(LATEX_HEADERS) + r" \\", r"\midrule"]
    for i, r in enumerate(rows):
        params = r.extra.get("parameters", {}).get("mean")
        cells = [latex_escape(r.name), latex_escape(config_label(r, rows)), latex_escape(r.protocol),
                 latex_escape(r.primary)]
        cells += [_latex_cell(r.cells.get(c), marks.get((i, c), ""), (i, c) in bold) for c in COLUMNS]
        cells += [str(r.seeds), latex_escape(format_count(params))]
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}}"]
    return "\n".join(lines) + "\n"
