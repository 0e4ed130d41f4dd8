"""``avbench sync --results-dir DIR``: send the local results MLflow has not seen, idempotently.

Runs finished while the tracking server was down (or killed before they could say so) are complete
under ``DIR/runs``; this replays them to the tracking URI ($MLFLOW_TRACKING_URI, else the sqlite
store in DIR). Sending twice adds nothing: each seed's record says what MLflow already holds. Runs
left RUNNING by processes that no longer exist are marked KILLED.
"""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sync", help="send locally kept results to MLflow (after a tracking outage)",
                       description="Replay results kept under RESULTS_DIR/runs to the tracking URI; idempotent.")
    p.add_argument("--results-dir", default="results", help="the results directory of the runs")
    p.set_defaults(func=cmd_sync)


def cmd_sync(args: argparse.Namespace) -> int:
    from pathlib import Path

    from avbench.errors import UserError
    from avbench.publish import sync
    from avbench.tracking import Tracker

    if not (Path(args.results_dir) / "runs").is_dir():
        raise UserError(f"{args.results_dir}: no local results (no runs/ folder) to send")
    out = sync(args.results_dir, Tracker(args.results_dir))
    print(f"sent {out['sent']} seed run(s) to {out['uri']}; {out['already']} were already there; "
          f"{out['reaped']} left RUNNING by dead processes marked KILLED")
    return 0
