"""The report's Sweeps section: for every ``avbench sweep``, the primary metric against the swept key
(one line per strategy and other swept values, mean with error bars over seeds), the last-layer
analyses against it, and the points' table.
"""

from __future__ import annotations

import functools
import re
from typing import Any

import numpy as np

from avbench.report import plots
from avbench.report.blocks import Heading, Para, Table
from avbench.report.builder import Builder
from avbench.report.cells import TITLES, cell
from avbench.report.compare import is_number
from avbench.report.gather import RowInfo
from avbench.report.section_analyses import _last_layer
from avbench.report.table import COLUMNS


def sweeps(rep: Builder) -> None:
    """Per sweep: its figure (metric against the x key, one line per strategy and other swept values), last-layer analyses against x, and its table."""
    rep.add(Heading(2, "Sweeps"))
    names = sorted({n for r in rep.infos for n in r.sweeps})
    if not names:
        rep.add(Para("No sweep in MLflow for this dataset."))
        rep.missing.append(f"no sweep: run e.g. `avbench sweep --strategy uavm --dataset {rep.dataset} "
                            f"--grid \"s_dim=16,32,64,128\" --seeds 0,1,2`")
        return
    for name in names:
        members = [r for r in rep.infos if name in r.sweeps]
        x_key = members[0].sweeps[name].get("x", "")
        axes = members[0].sweeps[name].get("axes", [x_key])
        others = [a for a in axes if a != x_key]
        rep.add(Heading(3, f"Sweep `{name}`"))
        rep.add(Para(f"x axis: `{x_key}`" + (f"; other swept keys: {', '.join(f'`{o}`' for o in others)}"
                                               if others else "") + f"; {len(members)} point(s)."))
        xs = [r.sweeps[name]["point"].get(x_key, "") for r in members]
        numeric = all(is_number(x) for x in xs)
        lines: dict[str, list[RowInfo]] = {}
        for r in members:
            key = r.row.strategy + "".join(f", {o}={r.sweeps[name]['point'].get(o)}" for o in others
                                       if not _derived(o, x_key, members, name))
            lines.setdefault(key, []).append(r)

        def xval(r: RowInfo, name: str = name, x_key: str = x_key, numeric: bool = numeric) -> Any:
            v = r.sweeps[name]["point"].get(x_key, "")
            return float(v) if numeric else v

        fx = [float(x) for x in xs] if numeric else []
        log_x = numeric and min(fx) > 0 and max(fx) / min(fx) >= 8
        groups = []
        for col in COLUMNS:
            series = []
            for label, rs in sorted(lines.items()):
                rs = sorted([r for r in rs if col in r.row.cells],
                            key=lambda r: xval(r) if numeric else str(xval(r)))
                if rs:
                    series.append(plots.Series(label, [xval(r) for r in rs], [r.row.cells[col]["mean"] for r in rs],
                                               [r.row.cells[col]["std"] for r in rs]))
            if series:
                groups.append((TITLES[col], series))
        primary = members[0].row.primary
        chance = rep.chance_of(members[0]).get("fusion")
        if groups:
            rep.figure(f"sweep_{_slug(name)}",
                        f"Sweep {name}: {primary} (%) against {x_key}, mean ± std over seeds; dotted: chance",
                        functools.partial(plots.panels, groups, xlabel=f"{x_key} (swept value)", ylabel=f"{primary} (%)",
                                          categorical=not numeric, percent=True, log_x=log_x, hline=chance))
        agroups = _sweep_analysis_groups(rep, lines, xval, numeric)
        if agroups:
            rep.figure(f"sweep_{_slug(name)}_analyses",
                        f"Sweep {name}: last-layer analyses against {x_key} (UAVM Figs. 3A, 4 left and 5 left)",
                        functools.partial(plots.panels, agroups, xlabel=f"{x_key} (swept value)", ylabel="score (%)",
                                          categorical=not numeric, percent=True, log_x=log_x))
        body = []
        for r in sorted(members, key=lambda r: (r.row.name, str(sorted(r.sweeps[name]["point"].items())))):
            body.append([r.short, r.row.name, ", ".join(f"{k}={v}" for k, v in r.sweeps[name]["point"].items()),
                         len(r.seeds)] + [cell(r.row.cells.get(c), r.row.primary) for c in COLUMNS])
        rep.add(Table(["#", "strategy", "point", "seeds", "Audio", "Video", "Fusion"], body))


def _sweep_analysis_groups(rep: Builder, lines: dict[str, list[RowInfo]], xval, numeric: bool) -> list:
    """Last-layer probe, retrieval and attention MAE of each sweep line against x."""
    specs = [("probe", "modality probe, last layer", lambda res: _last_layer(res, "acc"), True, "%"),
             ("retrieval", "A→V R@1, last layer", lambda res: _last_layer(res, "a2v_R@1", skip=("logits",)), True,
              "%"),
             ("attention", "attention MAE A vs V, last layer", lambda res: _last_layer(res, "mae"), False,
              "MAE (attention weight)")]
    groups = []
    for what, title, get, percent, unit in specs:
        series = []
        for label, rs in sorted(lines.items()):
            pts = []
            for r in rs:
                vals = [v for v in (get(res) for res in r.analyses.get(what, [])) if v is not None]
                if vals:
                    sd = float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0
                    pts.append((xval(r), float(np.mean(vals)), sd))
            pts.sort(key=lambda t: t[0] if numeric else str(t[0]))
            if pts:
                series.append(plots.Series(label, [p[0] for p in pts], [p[1] for p in pts], [p[2] for p in pts]))
        if series:
            groups.append((title, series, percent, unit))
    return groups


def _derived(key: str, x_key: str, members: list[RowInfo], name: str) -> bool:
    """A swept key determined by the x key (a tie or a zipped partner): not a separate line."""
    seen: dict[str, str] = {}
    for r in members:
        pt = r.sweeps[name]["point"]
        x, v = str(pt.get(x_key)), str(pt.get(key))
        if seen.setdefault(x, v) != v:
            return False
    return True



def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_\-]+", "_", s)

