"""``avbench tune``: the same hyperparameter search, on the validation split, for every strategy.

A comparison is fair only if every strategy gets the same chance: the UAVM paper "tune[s]
hyper-parameters to ensure a fair comparison", and a harness must make that tuning equal and
automatic. So every strategy named in one ``avbench tune`` gets

* the same number of trials (``--budget``) of a seeded Optuna TPE sampler, or (``--sampler sobol``)
  of a scrambled Sobol' net that covers each parameter's range evenly (avbench/tune/sobol.py); each
  strategy's sampler seed is derived from ``--sampler-seed`` and the strategy's name (a stable hash),
  so strategies do not share their random start-up trials, and a rerun draws the same ones,
* the same score (``--select``: validation mAP by default, or loss or accuracy; avbench/tune/select.py),
  averaged over the same trial seeds (``--trial-seeds K``), and the same confirmation stage
  (``--confirm N``: the top N trials retrained on fresh seeds, the choice made on those),
* the same training-step budget: every trial trains at most ``--max-steps`` optimizer steps (default:
  the recipe's epochs over the training rows), and ``train.max_steps`` is searched as a share of it;
  a space that asks for more is refused,
* the same data: training rows minus the cache's validation split, scored on the validation split
  (avbench/cache/validation.py). The test split is never opened.

Each strategy declares what to search in ``Strategy.search_space`` (default: lr, weight decay and the
run length; see ``avbench.api.default_space``); ``--space FILE`` (YAML or JSON) replaces it, either one mapping for
every strategy or one per strategy name. Trials train with a step-defined cosine schedule unless
``--set train.schedule=...`` says otherwise. Every trial is an MLflow child run under one tuning parent
per strategy (kind "tune"/"trial", so tables and reports never mistake them for results). The best
configuration is written to ``<results>/tuned/<dataset>-<cache key>/<strategy>.json`` and ``.yaml``:
``avbench run --tuned`` finds it, ``avbench run --config FILE.yaml`` reads it. A tuning whose top trials
cannot be told apart (an exact tie, or within their seeds' noise) says so; a chosen value at the top
of its range is reported "capped".

``--replicates R`` runs the whole selection R times with sampler seeds ``--sampler-seed`` + 0 .. R-1
(each replicate its own tuning parent, tagged with its replicate and sampler seed, and its own
stored choice), so the tuning's own randomness can be counted.

Trials run on the executor (``--executor local|ray``, ``--jobs N``; avbench/tune/executor.py): a
strategy's trials stay sequential (trial k+1 is asked only after trial k is told), and trials of
different strategies run at once. Each study then sees the same history whatever the executor, so the
tuned result does not depend on ``--jobs`` (given the same threads per job). ``--prune`` needs the
trial's validation curve reported into the study while it trains, which a job in another process
cannot do, so pruned tuning runs in this process, one trial at a time.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from avbench.errors import UserError
from avbench.resolve import resolve, split_overrides
from avbench.tune import executor, store
from avbench.tune.select import RUN_LENGTHS, SAMPLER_NAMES, SAMPLERS, check_select, is_balanced
from avbench.tune.space import FIXED, STEPS_KEY, distributions, load_space_file, step_cap
from avbench.tune.study import TuneRequest, confirm_seeds, run_request, tune_one

log = logging.getLogger(__name__)


def check_request(req: TuneRequest) -> None:
    """Mistakes in the request itself, before any cache is opened."""
    if req.budget < 1:
        raise UserError("--budget must be at least 1 trial")
    if len(set(req.strategies)) != len(req.strategies) or not req.strategies:
        raise UserError("--strategy needs one or more distinct names")
    check_select(req.select)
    if req.confirm < 0 or req.confirm > req.budget:
        raise UserError(f"--confirm {req.confirm}: between 0 and the budget ({req.budget} trials)")
    if req.confirm and req.confirm_seeds < 1:
        raise UserError("--confirm-seeds must be at least 1")
    if req.replicates < 1:
        raise UserError("--replicates must be at least 1")
    if req.cv == 1 or req.cv < 0:
        raise UserError(f"--cv {req.cv}: cross-validation needs at least 2 folds (0: the validation hold-out)")
    if req.sampler not in SAMPLERS:
        raise UserError(f"--sampler {req.sampler}: one of {', '.join(SAMPLERS)}")
    if req.sampler == "sobol" and not is_balanced(req.budget):
        log.warning("--sampler sobol with --budget %d: Sobol' points cover each parameter's range evenly "
                    "only in groups of a power of two (4, 8, 16, ...)", req.budget)
    if req.run_length not in RUN_LENGTHS:
        raise UserError(f"--run-length {req.run_length}: one of {', '.join(RUN_LENGTHS)}")
    if req.prune and (req.executor != "local" or (req.jobs or 1) > 1):
        raise UserError("--prune runs trials in this process (the pruner reads each trial's validation curve "
                        "while it trains), so it takes neither --jobs above 1 nor --executor ray")


def run_length_space(space: dict[str, Any], run_length: str) -> dict[str, Any]:
    """The space a tuning searches: with ``budget`` the run length is taken out of it, so every trial
    trains the whole step budget (``distributions`` pins ``train.max_steps`` to it)."""
    return space if run_length == "searched" else {k: v for k, v in space.items() if k != STEPS_KEY}


def tune(req: TuneRequest) -> dict[str, Any]:
    """Tune every strategy with the same budget; returns ``{"strategies": {name: result}, "failed": {...}}``.

    A strategy whose trials all failed is listed under "failed" (the others are still tuned)."""
    check_request(req)
    overrides = {**FIXED, **req.overrides}
    files = load_space_file(req.space_file, req.strategies) if req.space_file else {}
    resolved = {}
    for s in req.strategies:  # every input checked before anything trains
        resolved[s] = resolve(run_request(req, s, overrides))
    first = resolved[req.strategies[0]]
    cap = req.max_steps or step_cap(first.recipe, first.cache)
    spaces = {}
    for s, r in resolved.items():
        space = run_length_space(files.get(s) or r.strategy_cls.search_space(r.recipe), req.run_length)
        spaces[s] = (space, distributions(space, cap, f"search space of {s}"))
        for key in space:  # a key the strategy, recipe or dataset does not have fails now, not in trial 3
            split_overrides({key: "0"}, {f.name for f in dataclasses.fields(r.strategy_cls.Config)},
                            {f.name for f in dataclasses.fields(type(r.recipe))}, set())
    out: dict[str, Any] = {"budget": {"trials": req.budget, "max_steps_per_trial": cap, "seeds": req.seeds,
                                      "sampler": f"{SAMPLER_NAMES[req.sampler]} seed {req.sampler_seed} "
                                                 f"(one stream per strategy)",
                                      "pruning": req.prune, "select": req.select, "cv_folds": req.cv,
                                      "run_length": req.run_length,
                                      "confirm": {"trials": req.confirm,
                                                  "seeds": confirm_seeds(req) if req.confirm else []},
                                      "replicates": req.replicates},
                           "strategies": {}, "failed": {}, "replicates": []}
    for rep in range(req.replicates):
        rreq = dataclasses.replace(req, sampler_seed=req.sampler_seed + rep, replicate=rep)
        done = _tune_replicate(rreq, resolved, overrides, spaces, cap)
        out["replicates"].append({"replicate": rep, "sampler_seed": rreq.sampler_seed, **done})
    out["strategies"] = out["replicates"][0]["strategies"]
    out["failed"] = {s: why for r in out["replicates"] for s, why in r["failed"].items()}
    if req.replicates > 1:
        for s in out["strategies"]:
            mine = [r["strategies"][s] for r in out["replicates"] if s in r["strategies"]]
            store.record_replicates(mine)
            out["strategies"][s]["replicates"] = store.replicate_summary(mine)
    return out


def _tune_replicate(req: TuneRequest, resolved: dict[str, Any], overrides: dict[str, str],
                    spaces: dict[str, Any], cap: int) -> dict[str, Any]:
    """One whole selection (one sampler seed): ``{"strategies": {name: result}, "failed": {...}}``."""
    out: dict[str, Any] = {"strategies": {}, "failed": {}}
    todo = []
    for s in req.strategies:
        kept = store.stored(req.results_dir, resolved[s], req.replicate) if req.skip_tuned else None
        if kept is not None:
            out["strategies"][s] = kept
        else:
            todo.append(s)
    if req.prune:
        for s in todo:
            try:
                out["strategies"][s] = tune_one(req, s, overrides, spaces[s][0], spaces[s][1], cap)
            except UserError as e:
                out["failed"][s] = str(e)
    elif todo:
        tuned, failed = executor.tune_all(req, todo, overrides, {s: spaces[s] for s in todo}, cap)
        out["strategies"].update(tuned)
        out["failed"].update(failed)
    out["strategies"] = {s: out["strategies"][s] for s in req.strategies if s in out["strategies"]}
    return out
