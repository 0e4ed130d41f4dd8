"""``avbench run``: train and evaluate one strategy on one dataset over seeds, log to MLflow, print
the Audio / Video / Fusion table."""

from __future__ import annotations

import argparse

from avbench import config_file
from avbench.train.recipe import RECIPES  # light: no torch


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="train and evaluate a strategy over seeds",
                       description="Train and evaluate a strategy; every seed is a child run in MLflow.")
    p.add_argument("--strategy", required=True, help="registered name (avbench list) or package.module:Class")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--dataset", help="dataset card name (avbench list datasets)")
    src.add_argument("--cache", help="path of a feature cache")
    p.add_argument("--seeds", default="0", help="comma-separated integer seeds (default 0)")
    p.add_argument("--epochs", type=int, help="override the recipe's epochs")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="set a strategy, recipe (train.) or dataset (data.) field; repeatable")
    p.add_argument("--preset", help="a named configuration of the strategy (avbench show STRATEGY), before --set")
    p.add_argument("--tuned", nargs="?", const="auto", metavar="TUNED_JSON",
                   help="use the configuration avbench tune stored for this strategy and cache (or this file); --set wins")
    p.add_argument("--recipe", default="default", choices=sorted(RECIPES), help="named training recipe, applied "
                   "before --set: reference (the UAVM authors' training as their code runs it), cmg (vq_codes as CMG "
                   "trains it), scenic (mbt as Scenic trains it); docs/running.md 'Recipe differences'")
    p.add_argument("--init-from", metavar="PATH", help="start from these weights: an avbench model.pt or a "
                   "paper's released state dict (avbench.authors_checkpoint)")
    p.add_argument("--trust-checkpoint", action="append", default=[], metavar="PATH", help="your own legacy checkpoint that needs full unpickling (runs code in the file: never for files from others); repeatable")
    config_file.add_argument(p)  # --config FILE (avbench/config_file.py)
    p.add_argument("--results-dir", default="results", help="MLflow sqlite DB, artifacts, checkpoints")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--protocol", default="standard", choices=["standard", "cross-modal"])
    p.add_argument("--train-modality", choices=["audio", "video"], help="with --protocol cross-modal")
    p.add_argument("--output-json", help="write the summary as JSON here")
    p.add_argument("--resume", action="store_true", help="continue from the last epoch checkpoint")
    p.add_argument("--skip-finished", action="store_true",
                   help="(the default now) seeds that already have a finished run are skipped with a line")
    p.add_argument("--force", action="store_true", help="rerun seeds that already finished, replacing their runs")
    p.add_argument("--strict-tracking", action="store_true",
                   help="exit non-zero when MLflow cannot be reached (results are kept locally either way; "
                        "send them later with avbench sync)")
    p.add_argument("--cache-root", help="where generated dataset caches live (default: user cache dir)")
    p.add_argument("--no-save-model", action="store_true", help="do not log model weights to MLflow")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--profile", action="store_true", help="after the table, print where the run's wall time went "
                   "(start-up, cache, tracking, training steps, validation, test evaluation, artifacts); also "
                   "recorded under 'profile' in each seed's result.json and in --output-json")
    p.add_argument("--nproc", type=int, default=1, metavar="N",
                   help="data-parallel training on N local processes (DDP under torchrun; one per GPU with "
                        "--device cuda, gloo on CPU); for several nodes run torchrun -m avbench run directly")
    p.set_defaults(func=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    import os

    from avbench import config as cfgmod
    from avbench import log, results, runner
    from avbench import profile as prof
    from avbench.errors import UserError
    from avbench.report.console import print_run_summary

    if args.nproc < 1:
        raise UserError("--nproc must be at least 1")
    if args.nproc > 1 and int(os.environ.get("WORLD_SIZE", 1)) > 1:
        raise UserError("--nproc is for a single launch; under torchrun leave it out")

    from avbench.train.checkpoint import trust

    for path in args.trust_checkpoint:  # an explicit, per-file decision; never a fallback
        trust(path)
    req = runner.RunRequest(
        strategy=args.strategy, dataset=args.dataset, cache=args.cache, seeds=cfgmod.parse_seeds(args.seeds),
        epochs=args.epochs, overrides=cfgmod.parse_pairs(args.overrides), results_dir=args.results_dir,
        device=args.device, protocol=args.protocol, train_modality=args.train_modality, resume=args.resume,
        cache_root=args.cache_root, progress=not args.no_progress, skip_finished=args.skip_finished,
        save_model=not args.no_save_model, force=args.force, strict_tracking=args.strict_tracking,
        preset=args.preset, recipe_name=args.recipe, init_from=args.init_from)
    req.progress = log.progress_enabled(req.progress)  # bars only on a terminal unless --progress always
    if args.tuned:  # the configuration avbench tune stored (avbench/tune/store.py); --set still wins
        from avbench.tune import apply_tuned

        req = apply_tuned(req, args.tuned)
    if args.output_json:  # a path that cannot be written fails now, not after training
        from avbench.fsguard import check_file

        check_file(args.output_json, "--output-json")
    if args.nproc > 1:
        from avbench.train import distributed

        runner.resolve(req)  # bad input fails here, once, and a dataset cache is prepared before the workers start
        rc = distributed.launch(args.nproc, worker_args(args))
        return 0 if rc == 0 else (2 if rc == 2 else 1)
    if getattr(args, "profile", False):
        prof.begin()  # start-up until here (Python, imports, parsing) is read from the process's start time
    summary = runner.run(req)
    if int(os.environ.get("RANK", 0)) == 0:  # one table and one JSON file per run, from rank 0
        print_run_summary(summary)
        report = prof.end()
        if report is not None:
            print(prof.format_report(report))
            summary["profile"] = report
        if args.output_json:  # the summary and its resolved config (.config.yaml) beside it
            results.write_run_outputs(args.output_json, summary)
    return 0


def worker_args(args: argparse.Namespace) -> list[str]:
    """The ``run`` command line each torchrun worker gets: these arguments without ``--nproc``."""
    out = ["run", "--strategy", args.strategy]
    out += ["--dataset", args.dataset] if args.dataset else ["--cache", args.cache]
    out += ["--seeds", args.seeds, "--results-dir", args.results_dir, "--device", args.device,
            "--protocol", args.protocol]
    if args.epochs is not None:
        out += ["--epochs", str(args.epochs)]
    for item in args.overrides:
        out += ["--set", item]
    for flag, value in (("--train-modality", args.train_modality), ("--output-json", args.output_json),
                        ("--cache-root", args.cache_root), ("--preset", args.preset), ("--tuned", args.tuned),
                        ("--recipe", args.recipe), ("--init-from", args.init_from)):
        if value:
            out += [flag, value]
    for flag, on in (("--resume", args.resume), ("--skip-finished", args.skip_finished), ("--force", args.force),
                     ("--strict-tracking", args.strict_tracking),
                     ("--no-save-model", args.no_save_model), ("--no-progress", args.no_progress)):
        if on:
            out.append(flag)
    return out
