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

from avbench.metrics.stats import mean_std_ci
from avbench.tracking import TAG_KIND, Tracker, metric_name

COLUMNS = ("audio", "video", "fusion")


@dataclass
class TableRow:
    name: str
    strategy: str
    config: dict[str, str]
    protocol: str
    primary: str
    cells: dict[str, dict[str, float]]  # column -> mean_std_ci of the primary metric
    extra: dict[str, dict[str, float]] = field(default_factory=dict)  # params, throughput
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
        for key in ("parameters", "train_clips_per_s", "eval_clips_per_s"):
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


def _cell(s: dict[str, float] | None) -> str:
    if not s or not math.isfinite(s.get("mean", float("nan"))):
        return "-"
    return f"{100 * s['mean']:.2f}" if s["n"] == 1 else f"{100 * s['mean']:.2f} ± {100 * s['std']:.2f}"


def render_table(rows: list[TableRow], fmt: str = "md") -> str:
    from tabulate import tabulate

    headers = ["strategy", "config", "protocol", "metric", "Audio", "Video", "Fusion", "seeds", "params"]
    body = []
    for r in rows:
        params = r.extra.get("parameters", {}).get("mean")
        body.append([r.name, config_label(r, rows), r.protocol, r.primary] + [_cell(r.cells.get(c)) for c in COLUMNS]
                    + [r.seeds, f"{params / 1e6:.2f}M" if params else "-"])
    if fmt == "csv":
        out = io.StringIO()
        w = csv.writer(out)
        w.writerow(headers)
        w.writerows(body)
        return out.getvalue()
    if fmt == "latex":
        return tabulate(body, headers=headers, tablefmt="latex_booktabs").replace("±", r"$\pm$")
    return tabulate(body, headers=headers, tablefmt="github")
