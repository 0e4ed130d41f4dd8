"""``avbench table --dataset NAME``: the comparison table from MLflow (Markdown, LaTeX or CSV)."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("table", help="print the comparison table of a dataset's runs")
    p.add_argument("--dataset", required=True)
    p.add_argument("--format", default="md", choices=["md", "latex", "csv"])
    p.add_argument("--results-dir", default="results")
    p.set_defaults(func=cmd_table)


def cmd_table(args: argparse.Namespace) -> int:
    from avbench.errors import UserError
    from avbench.report.table import collect_rows, render_table
    from avbench.tracking import Tracker

    rows = collect_rows(Tracker(args.results_dir), args.dataset)
    if not rows:
        raise UserError(f"no finished runs for dataset '{args.dataset}' in {args.results_dir} "
                        f"(run 'avbench run --dataset {args.dataset} ...' first)")
    print(render_table(rows, args.format))
    print(f"\nmean ± std over seeds of each row's primary metric (%); 'seeds' counts finished seed runs")
    return 0
