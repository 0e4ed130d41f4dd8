"""``avbench run``: train and evaluate one strategy on one dataset over seeds, log to MLflow, print
the Audio / Video / Fusion table."""

from __future__ import annotations

import argparse


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
    p.add_argument("--results-dir", default="results", help="MLflow sqlite DB, artifacts, checkpoints")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--protocol", default="standard", choices=["standard", "cross-modal"])
    p.add_argument("--train-modality", choices=["audio", "video"], help="with --protocol cross-modal")
    p.add_argument("--output-json", help="write the summary as JSON here")
    p.add_argument("--resume", action="store_true", help="continue from the last epoch checkpoint")
    p.add_argument("--skip-finished", action="store_true", help="skip seeds that already have a finished run")
    p.add_argument("--cache-root", help="where generated dataset caches live (default: user cache dir)")
    p.add_argument("--no-save-model", action="store_true", help="do not log model weights to MLflow")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    from avbench import config as cfgmod
    from avbench import runner
    from avbench.report.console import print_run_summary

    req = runner.RunRequest(
        strategy=args.strategy, dataset=args.dataset, cache=args.cache, seeds=runner.parse_seeds(args.seeds),
        epochs=args.epochs, overrides=cfgmod.parse_pairs(args.overrides), results_dir=args.results_dir,
        device=args.device, protocol=args.protocol, train_modality=args.train_modality, resume=args.resume,
        cache_root=args.cache_root, progress=not args.no_progress, skip_finished=args.skip_finished,
        save_model=not args.no_save_model)
    summary = runner.run(req)
    print_run_summary(summary)
    if args.output_json:
        runner.write_json(args.output_json, summary)
    return 0
