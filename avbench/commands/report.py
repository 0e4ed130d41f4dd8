"""``avbench report --dataset NAME --out DIR``: the comparison report (Markdown + self-contained HTML).

Writes ``DIR/report.md`` with ``DIR/figures/*.png`` (and ``.pdf``/``.svg`` beside each), ``DIR/report.json`` (the results contract) and ``DIR/report.html`` with the figures inlined:
the comparison table with significance marks, sweeps, representation analyses, robustness, event
types, accuracy against cost, and a list of what is missing.

With ``--replicate DIR`` (repeatable) the report adds a Replication section: DIR is another results
directory of the same protocol run with another tuning sampler seed and/or data seed (the report's
own ``--results-dir`` is replicate R0); per column, Kendall's tau between every pair of replicates,
the rows whose order flips, the calls that hold in every replicate, and per row the spread across
replicates beside the spread across seeds (docs/reports.md, "Replication").
"""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="write the comparison report of a dataset (Markdown + HTML)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True)
    p.add_argument("--out", required=True, help="output directory (report.md, report.html, figures/)")
    p.add_argument("--results-dir", default="results")
    p.add_argument("--bootstrap", type=int, default=None,
                   help="paired-bootstrap resamples (default 2000 for accuracy, 200 for mAP)")
    p.add_argument("--replicate", action="append", default=[], metavar="DIR",
                   help="another results directory of the same protocol (another sampler or data seed); "
                        "repeatable: adds the Replication section")
    p.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    from avbench import log
    from avbench.analysis.loading import open_tracker
    from avbench.errors import UserError
    from avbench.report.document import build_report

    if args.bootstrap is not None and args.bootstrap < 100:
        raise UserError("--bootstrap must be at least 100")
    from avbench.fsguard import check_dir

    check_dir(args.out, "--out")  # a read-only or wrong --out fails now, in one line (avbench.fsguard)
    from pathlib import Path

    replicates = []
    for d in args.replicate:
        if not Path(d).is_dir():
            raise UserError(f"--replicate {d}: no such results directory")
        if Path(d).resolve() == Path(args.results_dir).resolve():
            raise UserError(f"--replicate {d} is the --results-dir itself (replicate R0)")
        replicates.append((d, open_tracker(d)))
    res = build_report(open_tracker(args.results_dir), args.dataset, args.out, n_boot=args.bootstrap,
                       command=f"avbench report --dataset {args.dataset} --out DIR"
                       + " --replicate DIR" * len(replicates), replicates=replicates)
    logger = log.get("report")
    logger.info(f"wrote {res.markdown}, {res.html} and report.json ({len(res.figures)} figure(s), each also as "
                f"PDF and SVG)")
    if res.missing:
        logger.info("missing pieces:\n" + "\n".join(f"  - {m}" for m in res.missing))
    return 0
