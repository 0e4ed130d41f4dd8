"""``avbench table --dataset NAME``: the comparison table from MLflow (Markdown, LaTeX or CSV).

The table is data and goes to stdout (``> table.tex`` holds only the table); notes go to stderr.
CSV cells are numbers (mean, std, n and the 95% interval per column, in percent); LaTeX is a booktabs
tabular with the best entry of each column in bold and the report's significance marks.
"""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("table", help="print the comparison table of a dataset's runs",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True)
    p.add_argument("--format", default="md", choices=["md", "latex", "csv"])
    p.add_argument("--results-dir", default="results")
    p.add_argument("--no-paired", action="store_true",
                   help="do not read per-clip predictions: significance from Welch's t-test over seeds only (faster)")
    p.set_defaults(func=cmd_table)


def cmd_table(args: argparse.Namespace) -> int:
    import sys

    from avbench import log
    from avbench.errors import UserError
    from avbench.report.table import NOTES, render_table
    from avbench.tracking import Tracker

    tracker = Tracker(args.results_dir)
    infos, marks, notes = table_rows(tracker, args.dataset, paired=not args.no_paired)
    if not infos:
        raise UserError(f"no finished runs for dataset '{args.dataset}' in {args.results_dir} "
                        f"(run 'avbench run --dataset {args.dataset} ...' first)")
    sys.stdout.write(render_table([r.row for r in infos], args.format, marks))
    if args.format == "md":
        sys.stdout.write("\n")
    logger = log.get("table")  # notes on stderr, silenced by -q
    logger.info(NOTES)
    for n in notes:
        logger.info(n)
    return 0


def table_rows(tracker, dataset: str, paired: bool = True):
    """The rows shown (identical configurations merged), their marks by (position, column), notes."""
    from avbench import results
    from avbench.report import document as doc

    infos = doc.gather(tracker, dataset, predictions=paired, analyses=False)
    merged = doc.merge_identical(infos)
    shown = sorted([r for r in infos if r.index not in merged],
                   key=lambda r: (r.row.protocol, r.row.strategy, r.row.name, sorted(r.row.config.items())))
    pos = {r.index: i for i, r in enumerate(shown)}
    marks: dict[tuple[int, str], str] = {}
    notes = [f"{r.short} {r.label} has the same resolved configuration as {k.short} {k.label}: shown once"
             for r in infos for d, k in merged.items() if r.index == d]
    for g in doc.comparable_groups(shown):
        chance = doc.chance_levels(g)
        for (index, col), mark in doc.best_marks(g, None).items():
            marks[(pos[index], col)] = marks.get((pos[index], col), "") + mark
        for r in g:
            for col in doc.COLUMNS:
                if results.not_above_chance(r.row.cells.get(col) or {}, chance.get(col)):
                    marks[(pos[r.index], col)] = marks.get((pos[r.index], col), "") + "°"
    return shown, marks, notes
