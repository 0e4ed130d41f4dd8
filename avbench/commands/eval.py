"""``avbench eval``: evaluate saved or imported weights on a cache, without training.

``--checkpoint`` takes avbench's ``model.pt`` (an MLflow artifact of ``avbench run``) or a paper's
released state dict (the UAVM authors' ``.pth``, with or without DataParallel's ``module.`` prefix).
The Audio / Video / Fusion columns and metrics are ``run``'s, computed by the same code; the run is
logged to MLflow with kind ``eval``.
"""

from __future__ import annotations

import argparse

from avbench.train.recipe import RECIPES  # light: no torch


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate a saved or released checkpoint on a cache",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--strategy", required=True, help="registered name (avbench list) or package.module:Class")
    p.add_argument("--checkpoint", required=True, metavar="PATH", help="avbench model.pt or a released .pth")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--dataset", help="dataset card name (avbench list datasets)")
    src.add_argument("--cache", help="path of a feature cache")
    p.add_argument("--split", default="test", help="split to evaluate (default: the cache's test split)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="set a strategy field or train.* (amp, l2_norm, eval_batch_size, ...) as for run; repeatable")
    p.add_argument("--preset", help="a named configuration of the strategy, before --set")
    p.add_argument("--recipe", default="default", choices=sorted(RECIPES), help="named recipe, before --set")
    p.add_argument("--save-predictions", metavar="FILE.npz", help="write ids, labels and logits_<column> per clip")
    p.add_argument("--output-json", metavar="PATH", help="write the summary as JSON here")
    p.add_argument("--trust-checkpoint", action="append", default=[], metavar="PATH", help="your own legacy checkpoint that needs full unpickling (runs code in the file: never for files from others); repeatable")
    p.add_argument("--results-dir", default="results", help="MLflow sqlite DB and artifacts")
    p.add_argument("--no-track", action="store_true", help="do not log the evaluation to MLflow")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--cache-root", help="where generated dataset caches live (default: user cache dir)")
    p.add_argument("--no-progress", action="store_true", help="no progress output")
    p.set_defaults(func=cmd_eval)


def cmd_eval(args: argparse.Namespace) -> int:
    from avbench import config as cfgmod
    from avbench import evaluation, results
    from avbench.fsguard import check_file_options
    from avbench.report.console import print_eval_summary
    from avbench.train.checkpoint import trust

    for path in args.trust_checkpoint:  # an explicit, per-file decision; never a fallback
        trust(path)
    check_file_options(output_json=args.output_json, save_predictions=args.save_predictions)  # before any work
    req = evaluation.EvalRequest(
        strategy=args.strategy, checkpoint=args.checkpoint, dataset=args.dataset, cache=args.cache,
        split=args.split, overrides=cfgmod.parse_pairs(args.overrides), recipe_name=args.recipe,
        preset=args.preset, results_dir=args.results_dir, device=args.device, cache_root=args.cache_root,
        save_predictions=args.save_predictions, progress=not args.no_progress, track=not args.no_track)
    summary = evaluation.run_eval(req)
    print_eval_summary(summary)
    if args.output_json:
        results.write(args.output_json, results.finalize("eval", summary))
    return 0
