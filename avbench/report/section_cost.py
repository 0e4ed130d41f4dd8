"""The report's closing sections: accuracy against cost (throughput, parameters) and the list of
everything missing (strategies without runs, one-seed rows, skipped columns, analyses not run).
"""

from __future__ import annotations

import math

from avbench.report import plots
from avbench.report.blocks import Bullets, Heading, Para
from avbench.report.builder import Builder
from avbench.report.cells import TITLES
from avbench.report.gather import ANALYSES
from avbench.report.table import COLUMNS


def efficiency(rep: Builder) -> None:
    """Fused primary metric against training and inference throughput and parameter count."""
    rep.add(Heading(2, "Accuracy against cost"))
    rows = rep.shown([r for r in rep.infos if not r.from_sweep and "fusion" in r.row.cells])
    if not rows:
        rep.add(Para("No row with a fused column."))
        return
    primary = rows[0].row.primary
    for key, name, log_x in (("train_clips_per_s", "training throughput (clips/s)", True),
                             ("eval_clips_per_s", "inference throughput (clips/s)", True),
                             ("parameters", "parameters (count)", True)):
        pts = [plots.Point(f"{r.short} {r.label}", r.row.extra[key]["mean"], r.row.cells["fusion"]["mean"],
                           yerr=r.row.cells["fusion"]["std"] if r.row.cells["fusion"]["n"] > 1 else 0.0)
               for r in rows if key in r.row.extra and math.isfinite(r.row.extra[key]["mean"])]
        if pts:
            rep.figure(f"cost_{key}", f"Fused {primary} against {name} (main rows, mean ± std over seeds)",
                        lambda p, pts=pts, name=name, log_x=log_x: plots.scatter(
                            pts, p, xlabel=name, ylabel=f"fused {primary} (%)", log_x=log_x,
                            hline=rep.chance_of(rows[0]).get("fusion")))


def missing_section(rep: Builder) -> None:
    """Everything the report could not show, said in one list."""
    from avbench import registry

    have = {r.row.strategy for r in rep.infos}
    absent = [n for n in registry.strategies.names() if n not in have]
    if absent:
        rep.missing.append(f"registered strategies without a finished run on {rep.dataset}: {', '.join(absent)}")
    for r in rep.infos:
        if len(r.seeds) < 2:
            rep.missing.append(f"{r.short} {r.label}: {len(r.seeds)} seed, so no confidence interval")
        for col, why in sorted(r.skipped_columns.items()):
            if col in COLUMNS:
                rep.missing.append(f"{r.short} {r.label}: no {TITLES[col]} column ({why})")
    for what in ANALYSES:
        notrun = [r for r in rep.infos if r.analysis_state.get(what) == "missing"]
        if notrun and len(notrun) == len(rep.infos):
            rep.missing.append(f"{what}: not run for any row "
                                f"(`avbench analyze --dataset {rep.dataset} --what {what}`)")
        elif notrun:
            rep.missing.append(f"{what}: not run for {', '.join(f'{r.short} {r.label}' for r in notrun)}")
    rep.add(Heading(2, "Missing pieces"))
    if rep.missing:
        rep.add(Bullets(sorted(dict.fromkeys(rep.missing), key=rep.missing.index)))
    else:
        rep.add(Para("Nothing missing."))
