"""``avbench tune``: search each strategy's hyperparameters on the validation split with the same
budget of trials and training steps (avbench/tune.py), and store the best configuration.

Trials run on the executor like a sweep's jobs (``--executor local|ray``, ``--jobs N``): trials of
different strategies at once, each strategy's one after another, so the result does not depend on
``--jobs``. ``--prune`` runs in this process, one trial at a time."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tune", help="equal-budget hyperparameter search on the validation split",
                       description="Tune every strategy with the same number of Optuna TPE trials and the same "
                                   "per-trial step budget, scored on the cache's validation split (the test "
                                   "split is never read). The best configuration is stored for avbench run --tuned.")
    p.add_argument("--strategy", required=True, help="one or more strategies, comma-separated")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--dataset", help="dataset card name")
    src.add_argument("--cache", help="path of a feature cache")
    p.add_argument("--budget", type=int, required=True, metavar="N", help="trials per strategy (the same for all)")
    p.add_argument("--seeds", default="0", help="training seeds per trial; the score is their mean (default 0)")
    p.add_argument("--space", metavar="FILE", help="YAML/JSON search space: {key: {type, low, high, log}} for "
                                                   "every strategy, or {strategy: {...}}; replaces the declared one")
    p.add_argument("--max-steps", type=int, metavar="S",
                   help="training steps per trial at most (default: the recipe's epochs over the training rows)")
    p.add_argument("--sampler-seed", type=int, default=0, help="TPE sampler seed (default 0)")
    p.add_argument("--prune", action="store_true",
                   help="median pruning on the validation curve (in this process: not with --jobs > 1 or ray)")
    p.add_argument("--skip-tuned", action="store_true",
                   help="leave out strategies that already have a stored tuned configuration for this cache")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="a fixed strategy, recipe (train.) or dataset (data.) setting for every trial")
    p.add_argument("--results-dir", default="results", help="MLflow store and tuned/ configurations")
    p.add_argument("--cache-root", help="where generated dataset caches live")
    p.add_argument("--device", default="cpu")
    p.add_argument("--output-json", help="write the tuning summary here")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (a line per trial instead)")
    from avbench.executor import options

    options.add_arguments(p, "one trial")
    p.set_defaults(func=cmd_tune)


def cmd_tune(args: argparse.Namespace) -> int:
    from avbench import config as cfgmod
    from avbench import runner, tune
    from avbench.errors import UserError
    from avbench.executor import options
    from avbench.fsguard import check_file_options

    if args.max_steps is not None and args.max_steps < 1:
        raise UserError("--max-steps must be at least 1")
    check_file_options(output_json=args.output_json)  # a bad output path fails before anything trains
    req = tune.TuneRequest(
        strategies=[s.strip() for s in args.strategy.split(",") if s.strip()], dataset=args.dataset,
        cache=args.cache, budget=args.budget, seeds=cfgmod.parse_seeds(args.seeds), space_file=args.space,
        overrides=cfgmod.parse_pairs(args.overrides), max_steps=args.max_steps, sampler_seed=args.sampler_seed,
        prune=args.prune, results_dir=args.results_dir, cache_root=args.cache_root, device=args.device,
        progress=not args.no_progress, skip_tuned=args.skip_tuned, **options.from_args(args))
    out = tune.tune(req)
    b = out["budget"]
    print(f"tuned {len(out['strategies'])} strategies: {b['trials']} trials each, at most "
          f"{b['max_steps_per_trial']} steps per trial, seeds {b['seeds']}, {b['sampler']}")
    for name, res in out["strategies"].items():
        params = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in res["params"].items())
        print(f"  {name}: best validation {res['metric']} {100 * res['value']:.2f} (trial {res['best_trial']}; "
              f"{res['budget']['steps_trained']} steps trained)  {params}"
              f"{'  [tuned before; --skip-tuned]' if res.get('skipped') else ''}\n    -> {res['files'][1]}")
        for f in res.get("failed_trials", []):
            print(f"    failed {f}")
    if args.output_json:
        runner.write_json(args.output_json, out)
    if out["failed"]:
        print(f"\n{len(out['failed'])} strateg{'y' if len(out['failed']) == 1 else 'ies'} not tuned (no trial finished):")
        for name, why in out["failed"].items():
            print(f"  {name}: {why}")
        return 1
    return 0
