"""``avbench report``: one dataset's comparison as Markdown and as a self-contained HTML page.

Everything comes from MLflow: the comparison rows (parent runs, their finished seeds), the per-clip
predictions of every seed (for the paired bootstrap), the analyses ``avbench analyze`` logged, and
the sweeps ``avbench sweep`` recorded. The report is built as a list of blocks and rendered twice:
Markdown next to PNG files in ``figures/``, and HTML with the same PNGs inlined as base64, so the
page can be mailed or attached on its own.

Regeneration is deterministic up to timing: rows, seeds and layers are sorted, no run ids, paths or
dates are printed, bootstrap and t-SNE are seeded, and PNGs carry no timestamp. Throughput numbers
(and the two plots that use them) change from one training to the next.

What is missing is said, never dropped: strategies without runs, rows with one seed, analyses not run
or skipped (with the strategy's reason), columns a strategy does not evaluate, and sweeps.

The parts, each a module of ``avbench.report``: ``blocks`` (the block model and its Markdown/HTML
renderers), ``gather`` (rows from MLflow), ``cells`` (how numbers are written), ``compare`` (which rows
are compared, Holm families, chance levels, identical rows), ``builder`` (the report in the making)
and the sections (``section_comparison``, ``section_replication`` with ``replication``'s numbers,
``section_sweeps``, ``section_analyses``, ``section_robustness``, ``section_cost``). This module puts
them in order; other results directories given as replicates are gathered here too.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from avbench import results
from avbench.errors import UserError
from avbench.report import (
    section_analyses,
    section_comparison,
    section_cost,
    section_replication,
    section_robustness,
    section_sweeps,
)
from avbench.report.blocks import Heading, Para, to_html, to_markdown
from avbench.report.builder import Builder
from avbench.report.cells import converged_json
from avbench.report.compare import (  # noqa: F401 -- the names avbench table uses
    best_marks,
    chance_levels,
    comparable_groups,
    merge_identical,
)
from avbench.report.gather import RowInfo, gather  # noqa: F401
from avbench.report.section_robustness import class_match_line  # noqa: F401
from avbench.report.table import COLUMNS


@dataclass
class ReportResult:
    markdown: Path
    html: Path
    figures: list[Path]
    missing: list[str]
    summary: dict[str, Any]


def provenance_warnings(infos: list[RowInfo], out_dir: Path | None = None) -> list[str]:
    """Loud lines when the report or its runs came from uncommitted code (its numbers then cannot be
    traced to a commit), or when runs of different commits are compared. The report's own output
    directory does not count: regenerating a committed report rewrites it before this is asked."""
    from avbench import provenance

    out = []
    here = provenance.source(ignore=(str(out_dir),) if out_dir is not None else ())
    if here["dirty"]:
        out.append(f"**Warning: this report was made from uncommitted code** (avbench {str(here['commit'])[:12]} "
                   f"with local changes): regenerate it from a clean checkout before publishing it.")
    dirty = [f"{r.short} {r.label}" for r in infos if r.git_dirty]
    if dirty:
        out.append(f"**Warning: {len(dirty)} row(s) ran uncommitted code** (their results cannot be traced to "
                   f"a commit): {', '.join(dirty)}.")
    commits = sorted({r.git_commit[:12] for r in infos if r.git_commit})
    if len(commits) > 1:
        out.append(f"Rows ran {len(commits)} different avbench commits ({', '.join(commits)}): compare them "
                   f"knowing that the code changed between them.")
    return out


def _tuned_json(tuned: dict[str, Any] | None) -> dict[str, Any] | None:
    """What report.json says about a tuned row: budget, metric, best validation value, chosen values."""
    if not tuned:
        return None
    keys = ("budget", "metric", "value", "select", "score", "params", "overrides", "missing")
    return {k: tuned[k] for k in keys if k in tuned}


def build_report(tracker: Any, dataset: str, out: str | Path, *, n_boot: int | None = None,
                 command: str | None = None, replicates: list[tuple[str, Any]] | None = None) -> ReportResult:
    """``replicates``: (what to call it, tracker) of other results directories of the same protocol run
    with another sampler seed and/or data seed; with any, the report has a Replication section."""
    import avbench

    out = Path(out)
    infos = gather(tracker, dataset)
    if not infos:
        raise UserError(f"no finished runs for dataset '{dataset}' in {tracker.uri} "
                        f"(run 'avbench run --dataset {dataset} ...' first)")
    others = []
    for source, other in replicates or []:
        got = gather(other, dataset, analyses=False)
        if not got:
            raise UserError(f"no finished runs for dataset '{dataset}' in replicate {source} ({other.uri})")
        others.append((source, got))
    figs = out / "figures"
    if figs.exists():
        shutil.rmtree(figs)
    figs.mkdir(parents=True)
    b = Builder(out, dataset, infos, n_boot)
    title = f"avbench report: {dataset}"
    b.add(Heading(1, title))
    b.add(Para(f"Generated by avbench {avbench.__version__} from the MLflow runs of dataset `{dataset}`"
               + (f" with `{command}`" if command else "") + f": {len(infos)} row(s), "
               f"{sum(len(r.seeds) for r in infos)} finished seed run(s)."))
    for line in provenance_warnings(infos, out):
        b.add(Para(line))
        b.missing.append(line.replace("**", ""))
    b.add(Para("Contents: [Comparison](#comparison) · "
               + ("[Replication](#replication) · " if others else "") + "[Sweeps](#sweeps) · "
               "[Representation analyses](#representation-analyses-uavm-figs-3-5) · [Robustness](#robustness) · "
               "[Event types](#event-types) · [Accuracy against cost](#accuracy-against-cost) · "
               "[Missing pieces](#missing-pieces)"))
    section_comparison.settings(b)
    reps = section_replication.make_replicates(b, others)
    if len(reps) > 1:  # before the comparison: its table shows each row's interval over replicates too
        b.replication = section_replication.compute(reps)
    section_comparison.comparison(b)
    replicated = section_replication.replication(b, reps)
    section_sweeps.sweeps(b)
    section_analyses.analyses(b)
    section_robustness.robustness(b)
    section_robustness.event_types(b)
    section_cost.efficiency(b)
    section_cost.missing_section(b)
    md = out / "report.md"
    md.write_text(to_markdown(b.blocks))
    page = out / "report.html"
    page.write_text(to_html(b.blocks, out, title))
    summary = {"dataset": dataset, "rows": [
        {"index": r.index, "strategy": r.row.strategy, "label": r.label, "group": r.group, "protocol": r.row.protocol,
         "seeds": r.seeds, "primary": r.row.primary, "from_sweep": r.from_sweep,
         "cells": {c: r.row.cells[c] for c in r.row.cells}, "analyses": r.analysis_state,
         "converged": converged_json(r.row.extra.get("converged")), "git_commit": r.git_commit,
         "git_dirty": r.git_dirty, "tuned": _tuned_json(r.tuned)} for r in infos],
        "missing": list(dict.fromkeys(b.missing)), "figures": [str(p.relative_to(out)) for p in b.figures],
        "merged": {str(k): v.index for k, v in b.merged.items()}}
    if replicated is not None:
        summary["replication"] = replicated
    for row in summary["rows"]:
        info = next(r for r in infos if r.index == row["index"])
        row["chance"] = b.chance_of(info)
        row["not_above_chance"] = [c for c in COLUMNS if results.not_above_chance(info.row.cells.get(c) or {},
                                                                                  row["chance"].get(c))]
    summary = results.finalize("report", summary, dirty_ignore=(str(out),))  # the results contract: report.json
    results.write(out / "report.json", summary)
    return ReportResult(md, page, b.figures, summary["missing"], summary)
