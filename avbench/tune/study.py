"""One strategy's tuning: its request, its Optuna study, its MLflow tuning parent, and its trials.

A trial trains the suggested configuration on every tuning seed over the fit rows (training rows minus
the validation hold-out) and is scored on the validation split; the test split is never opened. A
trial is an MLflow child run of kind "trial" under the strategy's parent of kind "tune". The same
``trial_record`` runs in this process (``--prune``, ``tune_one``) and as an executor job
(``trial_job``, avbench/tune/executor.py).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from avbench import config as cfgmod
from avbench.errors import UserError
from avbench.resolve import Resolved, RunRequest, resolve
from avbench.tracking import TAG_KIND, TAG_STRATEGY, Tracker
from avbench.train.engine import Engine, set_seed
from avbench.tune.space import suggest, text
from avbench.tune.store import write_tuned

log = logging.getLogger(__name__)


@dataclass
class TuneRequest:
    strategies: list[str]
    dataset: str | None = None
    cache: str | None = None
    budget: int = 20
    seeds: list[int] = field(default_factory=lambda: [0])
    space_file: str | None = None
    overrides: dict[str, str] = field(default_factory=dict)
    max_steps: int | None = None
    sampler_seed: int = 0
    prune: bool = False
    results_dir: str = "results"
    cache_root: str | None = None
    device: str = "cpu"
    progress: bool = True
    skip_tuned: bool = False  # a strategy with a stored tuned configuration for this cache is not tuned again
    executor: str = "local"
    jobs: int | None = None  # local: concurrent trials (default 1)
    address: str | None = None  # ray: cluster address (default: start a local one)
    threads_per_job: int | None = None  # local default: usable cores // jobs; ray default: 1
    gpus_per_job: float = 0.0


def run_request(req: TuneRequest, strategy: str, overrides: dict[str, str]) -> RunRequest:
    """The ``RunRequest`` a trial of ``strategy`` resolves (no progress bars; the tuning seeds)."""
    return RunRequest(strategy=strategy, dataset=req.dataset, cache=req.cache, overrides=overrides,
                      results_dir=req.results_dir, device=req.device, cache_root=req.cache_root,
                      progress=False, seeds=list(req.seeds))


def tune_one(req: TuneRequest, strategy: str, overrides: dict[str, str], space: Mapping[str, Any],
             dists: Mapping[str, Any], cap: int) -> dict[str, Any]:
    """In this process (``--prune``): ``study.optimize`` over the strategy's trials, one after another."""
    r0 = resolve(run_request(req, strategy, overrides))
    tracker = Tracker(req.results_dir)
    parent = tuning_parent(req, strategy, r0, tracker, overrides, space, cap)
    study = new_study(req)
    trials: list[dict[str, Any]] = []

    def objective(trial: Any) -> float:
        params = suggest(trial, dists)
        record = run_trial(req, strategy, {**overrides, **{k: text(v) for k, v in params.items()}},
                           trial, tracker, parent)
        trials.append({"number": trial.number, "params": params, **record})
        return record["value"]

    study.optimize(objective, n_trials=req.budget, catch=(RuntimeError, ValueError, FloatingPointError))
    return conclude(req, r0, study, trials, tracker, parent, overrides, space, cap)


def tuning_parent(req: TuneRequest, strategy: str, r0: Resolved, tracker: Tracker, overrides: dict[str, str],
                  space: Mapping[str, Any], cap: int) -> str:
    """The strategy's MLflow parent of kind "tune" (found again by its group, so a rerun joins it)."""
    key = r0.cache.manifest.key
    group = cfgmod.config_hash({"tune": strategy, "cache": key, "space": json.dumps(space, sort_keys=True, default=str)},
                               overrides, {"budget": req.budget, "cap": cap, "seeds": req.seeds,
                                           "sampler": req.sampler_seed, "prune": req.prune})
    parent = tracker.parent_run(r0.dataset, f"tune-{group}", f"tune-{r0.strategy_cls.name}",
                                {"strategy": r0.strategy_cls.name, "cache_key": key, "budget_trials": req.budget,
                                 "max_steps_per_trial": cap, "seeds": req.seeds, "space": space,
                                 "sampler_seed": req.sampler_seed, "pruning": req.prune,
                                 **{f"fixed.{k}": v for k, v in overrides.items()}},
                                {TAG_KIND: "tune", TAG_STRATEGY: r0.strategy_cls.name})
    return parent


def new_study(req: TuneRequest) -> Any:
    """One strategy's study: the seeded TPE sampler every strategy shares, median pruning with --prune."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=req.sampler_seed)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=2) if req.prune else optuna.pruners.NopPruner()
    return optuna.create_study(direction="maximize", sampler=sampler, pruner=pruner)


def conclude(req: TuneRequest, r0: Resolved, study: Any, trials: list[dict[str, Any]], tracker: Tracker, parent: str,
             overrides: dict[str, str], space: Mapping[str, Any], cap: int) -> dict[str, Any]:
    """The best trial as the stored result (json + yaml) and on the tuning parent; UserError if none finished."""
    import optuna

    key = r0.cache.manifest.key
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not done:
        raise UserError(f"tune {r0.strategy_cls.name}: no trial finished "
                        f"(see the trial runs under MLflow parent {parent})")
    trials = sorted(trials, key=lambda t: t["number"])
    best = study.best_trial
    result = {"strategy": r0.strategy_cls.name, "dataset": r0.dataset, "cache_key": key,
              "cache": str(r0.cache.root), "metric": trials[0].get("metric", ""), "value": best.value,
              "best_trial": best.number, "params": dict(best.params),
              "overrides": {**overrides, **{k: text(v) for k, v in best.params.items()}},
              "budget": {"trials": req.budget, "max_steps_per_trial": cap,
                         "steps_trained": int(sum(t.get("steps", 0) for t in trials)),
                         "finished": len(done), "seeds": req.seeds},
              "validation": r0.cache.validation.record, "space": space, "trials": trials,
              "tuning_parent_run": parent}
    paths = write_tuned(req.results_dir, req, result)
    result["files"] = [str(p) for p in paths]
    tracker.log_metrics(parent, {"best_value": best.value, "steps_trained": result["budget"]["steps_trained"]})
    tracker.log_params(parent, {f"best.{k}": v for k, v in best.params.items()})
    tracker.log_json(parent, "tuned.json", result)
    tracker.finish(parent)  # a rerun finds it again by its group and replays its trials
    return result


def run_trial(req: TuneRequest, strategy: str, overrides: dict[str, str], trial: Any, tracker: Tracker,
              parent: str) -> dict[str, Any]:
    """In this process (``--prune``): one trial, its validation curve reported into the study."""
    record = trial_record(req, strategy, overrides, trial.number, dict(trial.params), tracker, parent,
                          callback=_pruning_callback(trial) if req.prune else None)
    if req.progress:
        log.info("tune %s trial %d: val %s %.4f (%d steps) %s", strategy, trial.number, record["metric"],
                 record["value"], record["steps"], {k: overrides[k] for k in trial.params})
    return record


def trial_job(req: TuneRequest, strategy: str, overrides: dict[str, str], number: int, params: dict[str, Any],
              parent: str) -> dict[str, Any]:
    """A job on the executor (module level, plain arguments, so it pickles): one trial, in a worker."""
    return trial_record(req, strategy, overrides, number, params, Tracker(req.results_dir), parent)


def trial_record(req: TuneRequest, strategy: str, overrides: dict[str, str], number: int, params: dict[str, Any],
                 tracker: Tracker, parent: str, callback: Any = None) -> dict[str, Any]:
    """Train the trial's configuration on every tuning seed (the fit rows); score it on the validation split.

    The trial is an MLflow child of the tuning parent; it ends FAILED if training raises, KILLED if it
    is interrupted (Ctrl-C, a cancelled job) or pruned."""
    import optuna

    r = resolve(run_request(req, strategy, overrides))
    recipe = dataclasses.replace(r.recipe, eval_every_epoch=False, validation="holdout")
    child = tracker.start_child(parent, number, f"{r.strategy_cls.name}-trial{number}",
                                {**params, "trial": number}, {TAG_KIND: "trial"})
    values, steps, curves, metric = [], 0, [], ""
    try:
        for i, seed in enumerate(req.seeds):
            set_seed(seed)
            model = r.strategy_cls(r.strategy_cfg, r.cache.features, r.cache.task)
            engine = Engine(model, r.cache, recipe, seed=seed, device=req.device, progress=False,
                            evaluate_on="val")
            if callback is not None and i == 0:
                engine.validator.callback = callback
            fit = engine.fit()
            metric = fit.validation.get("metric") or next(iter(fit.final.metrics))
            values.append(float(fit.final.metrics[metric]))
            steps += int(fit.validation.get("steps", 0))
            curves.append({"seed": seed, "converged": fit.validation.get("converged"),
                           "curve": fit.validation.get("curve", [])})
    except (optuna.TrialPruned, KeyboardInterrupt):
        tracker.finish(child, "KILLED")
        raise
    except BaseException:
        tracker.finish(child, "FAILED")
        raise
    value = float(np.mean(values))
    tracker.log_metrics(child, {f"val/{metric}": value, "steps": steps})
    tracker.log_json(child, "trial.json", {"overrides": overrides, "values": values, "validation": curves})
    tracker.finish(child)
    return {"value": value, "values": values, "metric": metric, "steps": steps, "run_id": child,
            "converged": all(c["converged"] for c in curves)}


def _pruning_callback(trial: Any) -> Any:
    import optuna

    def report(step: int, value: float) -> None:
        trial.report(value, step)
        if trial.should_prune():
            raise optuna.TrialPruned()

    return report
