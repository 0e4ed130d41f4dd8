"""``avbench sweep``: every grid point of one or more strategies into MLflow, resumable.

Axes (``--grid``, repeatable; the points are their Cartesian product)::

    --grid "s_dim=16,64,256,1024"                       one key
    --grid "n_specific,n_shared=6,0;3,3;0,6"            zipped keys: tuples split by ';'
    --grid "n_shared=0,3,6" --tie "n_specific=6-n_shared"   a key derived by arithmetic

Without ``--grid`` each strategy's configuration runs once per seed, recorded exactly as ``avbench
run`` records it (main rows, not sweep points); with ``--tuned`` each strategy starts from the
configuration ``avbench tune`` stored (as ``run --tuned``): the final runs of a tuned comparison.

Every (point, seed) is one job. ``--jobs N`` runs N at once on this machine (the cores divided
between them); ``--executor ray`` spreads them over a Ray cluster (``--address auto``). Finished seeds
are skipped, so rerunning the same command resumes it, whatever the executor; failed jobs are listed
at the end (exit code 1) without stopping the others; Ctrl-C cancels and marks running runs KILLED.
"""

from __future__ import annotations

import argparse

from avbench.train.recipe import RECIPES  # light: no torch


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sweep", help="run strategies over a parameter grid (resumable)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--strategy", required=True, help="comma-separated strategy names (avbench list)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--dataset", help="dataset card name")
    src.add_argument("--cache", help="path of a feature cache")
    p.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2 | K1,K2=A1,A2;B1,B2",
                   help="a swept axis; repeatable. None: each strategy's configuration once per seed, "
                        "recorded as avbench run records it")
    p.add_argument("--tie", action="append", default=[], metavar="KEY=EXPR",
                   help="a key computed from swept keys, e.g. n_specific=6-n_shared; repeatable")
    p.add_argument("--seeds", default="0", help="comma-separated integer seeds (default 0)")
    p.add_argument("--epochs", type=int, help="override the recipe's epochs")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="fixed settings for every point (as in avbench run)")
    p.add_argument("--recipe", default="default", choices=sorted(RECIPES),
                   help="named recipe for every point, before --set")
    p.add_argument("--preset", help="a named configuration of the strategy for every point, before --set and the grid")
    p.add_argument("--tuned", action="store_true",
                   help="start each strategy from its stored tuned configuration (avbench tune; as run --tuned); "
                        "--set and the grid still win")
    p.add_argument("--name", help="sweep name used by the report (default: the swept keys joined by '-')")
    p.add_argument("--results-dir", default="results")
    p.add_argument("--device", default="cpu")
    p.add_argument("--cache-root", help="where generated dataset caches live")
    p.add_argument("--dry-run", action="store_true", help="print the points and exit")
    p.add_argument("--no-save-model", action="store_true", help="do not log model weights to MLflow")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--output-json", help="write every point's status and summary here")
    from avbench import config_file
    from avbench.executor import options

    config_file.add_argument(p)  # --config FILE: the sweep's fields in YAML (avbench/config_file.py)
    options.add_arguments(p, "one point and seed")
    p.set_defaults(func=cmd_sweep)


def cmd_sweep(args: argparse.Namespace) -> int:
    import dataclasses

    from tabulate import tabulate

    from avbench import config as cfgmod
    from avbench import runner
    from avbench import sweep as sw
    from avbench.errors import UserError
    from avbench.executor import options
    from avbench.fsguard import check_file_options
    from avbench.report.console import fmt_mean_std

    strategies = [s.strip() for s in args.strategy.split(",") if s.strip()]
    if not strategies:
        raise UserError("--strategy is empty")
    check_file_options(output_json=args.output_json)  # a bad output path fails before anything trains
    grid = _grid(args)
    name = sw.check_name(args.name or sw.default_name(grid))
    points = grid.points()
    seeds = cfgmod.parse_seeds(args.seeds)
    print(f"sweep '{name}': {len(strategies)} strategy(ies) x {len(points)} point(s) x {len(seeds)} seed(s)")
    if args.dry_run:
        for s in strategies:
            for pt in points:
                print(f"  {s}: {sw.format_point(pt)}")
        return 0
    req = sw.SweepRequest(strategies=strategies, grid=grid, seeds=seeds, dataset=args.dataset,
                          cache=args.cache, epochs=args.epochs, overrides=cfgmod.parse_pairs(args.overrides),
                          results_dir=args.results_dir, device=args.device, name=name, cache_root=args.cache_root,
                          progress=not args.no_progress, save_model=not args.no_save_model,
                          recipe_name=args.recipe, preset=args.preset, tuned=args.tuned, **options.from_args(args))
    results = sw.run_sweep(req)  # prints one line per finished job under a single progress bar
    rows = []
    for r in results:
        s = (r.summary or {}).get("summary", {})
        primary = (r.summary or {}).get("primary_metric", "")
        rows.append([r.strategy, sw.format_point(r.point), r.status]
                    + [fmt_mean_std(s.get(f"{c}/{primary}")) for c in ("audio", "video", "fusion")])
    print()
    print(tabulate(rows, headers=["strategy", "point", "status", "Audio", "Video", "Fusion"], tablefmt="github"))
    failed = [r for r in results if r.status == "failed"]
    if args.output_json:
        runner.write_json(args.output_json, {"name": name, "points": [
            {"strategy": r.strategy, "point": r.point, "status": r.status, "error": r.error,
             "parent_run_id": (r.summary or {}).get("parent_run_id"),
             "summary": (r.summary or {}).get("summary"),
             "seeds": [dataclasses.asdict(s) for s in r.seeds]} for r in results]})
    if failed:
        print(f"\n{len(failed)} of {len(results)} point(s) failed:")
        for r in failed:
            print(f"  {r.strategy} {sw.format_point(r.point)}: {r.error}")
        return 1
    return 0


def _grid(args: argparse.Namespace) -> object:
    """The axes; none at all is a grid-less sweep (plain runs), which takes no --tie and no --name."""
    from avbench import sweep as sw
    from avbench.errors import UserError

    if args.grid:
        return sw.parse_grid(args.grid, args.tie)
    if args.tie or args.name:
        raise UserError(f"{'--tie' if args.tie else '--name'} needs --grid (without one, each strategy's "
                        "configuration runs once per seed as avbench run would record it)")
    return sw.Grid([])
