"""``avbench tune``: search each strategy's hyperparameters on the validation split with the same
budget of trials and training steps (avbench/tune/), and store the chosen configuration.

Trials are scored on ``--select`` (validation mAP by default), averaged over ``--trial-seeds``;
``--confirm N`` retrains the top N on fresh seeds and chooses on those; ``--replicates R`` runs the
whole selection with R sampler seeds; ``--cv K`` scores trials by K-fold cross-validation of the
training split instead of the hold-out. The summary says when the top trials cannot be told apart and
when a chosen value sits at the top of its range ("capped").

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
    seeds = p.add_mutually_exclusive_group()
    seeds.add_argument("--seeds", help="training seeds of every trial; its score is their mean (default 0)")
    seeds.add_argument("--trial-seeds", type=int, metavar="K", help="every trial trains seeds 0..K-1; its score "
                                                                    "is their mean, their spread its noise")
    from avbench.tune.select import DEFAULT_SELECT, RUN_LENGTHS, SAMPLERS, SELECT

    p.add_argument("--select", default=DEFAULT_SELECT, choices=list(SELECT),
                   help=f"the trial score: validation mAP, loss (lower is better) or accuracy (default "
                        f"{DEFAULT_SELECT}; docs/tuning-and-sweeps.md says why)")
    p.add_argument("--confirm", type=int, default=0, metavar="N",
                   help="retrain each strategy's top N trials on fresh seeds and choose on those (default 0: off)")
    p.add_argument("--confirm-seeds", type=int, default=2, metavar="M",
                   help="fresh seeds per confirmed trial (default 2)")
    p.add_argument("--cv", type=int, default=0, metavar="K",
                   help="score every trial by stratified K-fold cross-validation of the training split (each "
                        "fold validates once, each trial seed on each fold; K times the training) instead of "
                        "the validation hold-out: for small datasets whose hold-out cannot tell trials apart")
    p.add_argument("--replicates", type=int, default=1, metavar="R",
                   help="run the whole selection R times, sampler seeds --sampler-seed + 0..R-1, each stored")
    p.add_argument("--space", metavar="FILE", help="YAML/JSON search space: {key: {type, low, high, log}} for "
                                                   "every strategy, or {strategy: {...}}; replaces the declared one")
    p.add_argument("--run-length", choices=RUN_LENGTHS, default="searched",
                   help="searched: train.max_steps is searched as a share of the step budget (the declared "
                        "space); budget: it is not searched, every trial and the chosen configuration train "
                        "the whole budget (docs/tuning-and-sweeps.md says when to prefer it)")
    p.add_argument("--max-steps", type=int, metavar="S",
                   help="training steps per trial at most (default: the recipe's epochs over the training rows)")
    p.add_argument("--sampler", choices=SAMPLERS, default="tpe",
                   help="tpe: Optuna's TPE (random start-up until its 10th trial); sobol: trial n is point n of a "
                        "scrambled Sobol' sequence, which tries every 1/B of each range once in B = 2^m trials "
                        "(docs/tuning-and-sweeps.md says when to prefer it)")
    p.add_argument("--sampler-seed", type=int, default=0,
                   help="sampler seed (default 0); each strategy's own stream is derived from it and its name")
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
    if args.trial_seeds is not None and args.trial_seeds < 1:
        raise UserError("--trial-seeds must be at least 1")
    seeds = list(range(args.trial_seeds)) if args.trial_seeds else cfgmod.parse_seeds(args.seeds or "0")
    check_file_options(output_json=args.output_json)  # a bad output path fails before anything trains
    req = tune.TuneRequest(
        strategies=[s.strip() for s in args.strategy.split(",") if s.strip()], dataset=args.dataset,
        cache=args.cache, budget=args.budget, seeds=seeds, space_file=args.space, select=args.select,
        confirm=args.confirm, confirm_seeds=args.confirm_seeds, replicates=args.replicates, cv=args.cv,
        run_length=args.run_length, sampler=args.sampler,
        overrides=cfgmod.parse_pairs(args.overrides), max_steps=args.max_steps, sampler_seed=args.sampler_seed,
        prune=args.prune, results_dir=args.results_dir, cache_root=args.cache_root, device=args.device,
        progress=not args.no_progress, skip_tuned=args.skip_tuned, **options.from_args(args))
    out = tune.tune(req)
    b = out["budget"]
    confirm = (f", top {b['confirm']['trials']} confirmed on seeds {b['confirm']['seeds']}"
               if b["confirm"]["trials"] else "")
    print(f"tuned {len(out['strategies'])} strategies: {b['trials']} trials each, at most "
          f"{b['max_steps_per_trial']} steps per trial, seeds {b['seeds']}"
          + (f" on each of {b['cv_folds']} folds" if b["cv_folds"] else "") + f", chosen on {b['select']}{confirm}, "
          f"{b['sampler']}" + (f", {b['replicates']} replicates" if b["replicates"] > 1 else ""))
    for rep in out["replicates"]:
        if b["replicates"] > 1:
            print(f" replicate {rep['replicate']} (sampler seed {rep['sampler_seed']}):")
        for name, res in rep["strategies"].items():
            _print_result(name, res)
    if args.output_json:
        runner.write_json(args.output_json, out)
    if out["failed"]:
        print(f"\n{len(out['failed'])} strateg{'y' if len(out['failed']) == 1 else 'ies'} not tuned (no trial finished):")
        for name, why in out["failed"].items():
            print(f"  {name}: {why}")
        return 1
    return 0


def _print_result(name: str, res: dict) -> None:
    params = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in res["params"].items())
    score = (f"; {res['select']} {res['score']:.4f}" + (f" ± {res['score_se']:.4f}" if res.get("score_se") else "")
             if "select" in res else "")
    stage = " after confirmation" if (res.get("selection") or {}).get("stage") == "confirmation" else ""
    print(f"  {name}: trial {res['best_trial']}{stage}, validation {res['metric']} {100 * res['value']:.2f}{score} "
          f"({res['budget']['steps_trained']} steps trained)  {params}"
          f"{'  [tuned before; --skip-tuned]' if res.get('skipped') else ''}\n    -> {res['files'][1]}")
    if res.get("note"):
        print(f"    cannot be told apart: {res['note']}")
    for key, top in (res.get("capped") or {}).items():
        print(f"    capped: {key} = {res['params'].get(key)} is at the top of its range ({top}); "
              f"the search wanted more than it was allowed")
    for f in res.get("failed_trials", []):
        print(f"    failed {f}")
