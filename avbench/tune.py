"""``avbench tune``: the same hyperparameter search, on the validation split, for every strategy.

A comparison is fair only if every strategy gets the same chance: the UAVM paper "tune[s]
hyper-parameters to ensure a fair comparison", and a harness must make that tuning equal and
automatic. So every strategy named in one ``avbench tune`` gets

* the same number of trials (``--budget``) of a seeded Optuna TPE sampler (the same sampler seed),
* the same training-step budget: every trial trains at most ``--max-steps`` optimizer steps (default:
  the recipe's epochs over the training rows), and ``train.max_steps`` is searched as a share of it;
  a space that asks for more is refused,
* the same data: training rows minus the cache's validation split, scored on the validation split
  (avbench/cache/validation.py). The test split is never opened.

Each strategy declares what to search in ``Strategy.search_space`` (default: lr, weight decay and the
run length; see ``default_space``); ``--space FILE`` (YAML or JSON) replaces it, either one mapping for
every strategy or one per strategy name. Trials train with a step-defined cosine schedule unless
``--set train.schedule=...`` says otherwise. Every trial is an MLflow child run under one tuning parent
per strategy (kind "tune"/"trial", so tables and reports never mistake them for results). The best
configuration is written to ``<results>/tuned/<dataset>-<cache key>/<strategy>.json`` and ``.yaml``:
``avbench run --tuned`` finds it, ``avbench run --config FILE.yaml`` reads it.

Trials run on the executor (``--executor local|ray``, ``--jobs N``; avbench/tune_executor.py): a
strategy's trials stay sequential (trial k+1 is asked only after trial k is told), and trials of
different strategies run at once. Each study then sees the same history whatever the executor, so the
tuned result does not depend on ``--jobs`` (given the same threads per job). ``--prune`` needs the
trial's validation curve reported into the study while it trains, which a job in another process
cannot do, so pruned tuning runs in this process, one trial at a time.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from avbench.errors import UserError

STEPS_KEY = "train.max_steps"
FIXED = {"train.schedule": "cosine"}  # trials use a step-defined schedule unless --set says otherwise
TYPES = ("float", "int", "categorical", "steps")
log = logging.getLogger(__name__)


def default_space(recipe: Any) -> dict[str, dict[str, Any]]:
    """lr over two decades around the recipe's, weight decay, and the run length (a share of the budget)."""
    return {"train.lr": {"type": "float", "low": recipe.lr / 10, "high": recipe.lr * 10, "log": True},
            "train.weight_decay": {"type": "float", "low": 1e-7, "high": 1e-2, "log": True},
            STEPS_KEY: {"type": "steps", "low": 0.25, "high": 1.0}}


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


# --- search spaces ------------------------------------------------------------------------------
def load_space_file(path: str | Path, strategies: list[str]) -> dict[str, dict[str, Any]]:
    """``{strategy: space}`` from a YAML/JSON file holding one space, or one per strategy name."""
    import yaml

    p = Path(path).expanduser()
    if not p.is_file():
        raise UserError(f"--space {path}: no such file")
    try:
        data = yaml.safe_load(p.read_text())  # JSON is YAML
    except yaml.YAMLError as e:
        raise UserError(f"--space {path}: not valid YAML/JSON ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict) or not data:
        raise UserError(f"--space {path}: expected a mapping of --set keys to search ranges")
    if set(data) <= set(strategies):
        return {s: data[s] for s in data}
    return {s: data for s in strategies}


def distributions(space: Mapping[str, Any], cap: int, where: str) -> dict[str, Any]:
    """Optuna distributions for a space; the step budget ``cap`` bounds ``train.max_steps``."""
    import optuna.distributions as od

    out = {}
    for key, spec in space.items():
        if not isinstance(spec, Mapping) or spec.get("type") not in TYPES:
            raise UserError(f"{where}: '{key}' needs a mapping with type one of {', '.join(TYPES)}")
        kind = spec["type"]
        try:
            if kind == "categorical":
                out[key] = od.CategoricalDistribution(list(spec["choices"]))
                continue
            low, high, logscale = spec["low"], spec["high"], bool(spec.get("log", False))
            if kind == "steps":
                if not 0 < low <= high <= 1:
                    raise UserError(f"{where}: '{key}' type steps takes shares of the budget in (0, 1]")
                low, high, kind, logscale = max(1, round(low * cap)), max(1, round(high * cap)), "int", True
            if key == STEPS_KEY and high > cap:
                raise UserError(f"{where}: {key} up to {high} exceeds the step budget of {cap} per trial "
                                f"(the same for every strategy; raise --max-steps for all of them)")
            out[key] = (od.IntDistribution(int(low), int(high), log=logscale) if kind == "int"
                        else od.FloatDistribution(float(low), float(high), log=logscale))
        except KeyError as e:
            raise UserError(f"{where}: '{key}' is missing {e}") from None
        except ValueError as e:
            raise UserError(f"{where}: '{key}': {e}") from None
    if STEPS_KEY not in out:  # every trial still trains the same fixed number of steps
        out[STEPS_KEY] = od.IntDistribution(cap, cap)
    return out


def suggest(trial: Any, dists: Mapping[str, Any]) -> dict[str, Any]:
    import optuna.distributions as od

    out = {}
    for key, d in dists.items():
        if isinstance(d, od.CategoricalDistribution):
            out[key] = trial.suggest_categorical(key, d.choices)
        elif isinstance(d, od.IntDistribution):
            out[key] = trial.suggest_int(key, d.low, d.high, log=d.log)
        else:
            out[key] = trial.suggest_float(key, d.low, d.high, log=d.log)
    return out


# --- the search ---------------------------------------------------------------------------------
def step_cap(recipe: Any, cache: Any) -> int:
    """The default per-trial step budget: the recipe's epochs over the rows tuning trains on."""
    if recipe.max_steps > 0:
        return int(recipe.max_steps)
    per_epoch = len(cache.fit_rows()) // recipe.batch_size if recipe.drop_last else \
        math.ceil(len(cache.fit_rows()) / recipe.batch_size)
    return max(1, recipe.epochs * max(1, per_epoch))


def check_request(req: TuneRequest) -> None:
    """Mistakes in the request itself, before any cache is opened."""
    if req.budget < 1:
        raise UserError("--budget must be at least 1 trial")
    if len(set(req.strategies)) != len(req.strategies) or not req.strategies:
        raise UserError("--strategy needs one or more distinct names")
    if req.prune and (req.executor != "local" or (req.jobs or 1) > 1):
        raise UserError("--prune runs trials in this process (the pruner reads each trial's validation curve "
                        "while it trains), so it takes neither --jobs above 1 nor --executor ray")


def tune(req: TuneRequest) -> dict[str, Any]:
    """Tune every strategy with the same budget; returns ``{"strategies": {name: result}, "failed": {...}}``.

    A strategy whose trials all failed is listed under "failed" (the others are still tuned)."""
    from avbench import runner

    check_request(req)
    overrides = {**FIXED, **req.overrides}
    files = load_space_file(req.space_file, req.strategies) if req.space_file else {}
    resolved = {}
    for s in req.strategies:  # every input checked before anything trains
        resolved[s] = runner.resolve(_run_request(req, s, overrides))
    first = resolved[req.strategies[0]]
    cap = req.max_steps or step_cap(first.recipe, first.cache)
    spaces = {}
    for s, r in resolved.items():
        space = files.get(s) or r.strategy_cls.search_space(r.recipe)
        spaces[s] = (space, distributions(space, cap, f"search space of {s}"))
        for key in space:  # a key the strategy, recipe or dataset does not have fails now, not in trial 3
            runner.split_overrides({key: "0"}, {f.name for f in dataclasses.fields(r.strategy_cls.Config)},
                                   {f.name for f in dataclasses.fields(type(r.recipe))}, set())
    out: dict[str, Any] = {"budget": {"trials": req.budget, "max_steps_per_trial": cap, "seeds": req.seeds,
                                      "sampler": f"TPE seed {req.sampler_seed}", "pruning": req.prune},
                           "strategies": {}, "failed": {}}
    todo = []
    for s in req.strategies:
        stored = _stored(req, resolved[s]) if req.skip_tuned else None
        if stored is not None:
            out["strategies"][s] = stored
        else:
            todo.append(s)
    if req.prune:
        for s in todo:
            try:
                out["strategies"][s] = tune_one(req, s, overrides, spaces[s][0], spaces[s][1], cap)
            except UserError as e:
                out["failed"][s] = str(e)
    elif todo:
        from avbench import tune_executor

        tuned, failed = tune_executor.tune_all(req, todo, overrides, {s: spaces[s] for s in todo}, cap)
        out["strategies"].update(tuned)
        out["failed"].update(failed)
    out["strategies"] = {s: out["strategies"][s] for s in req.strategies if s in out["strategies"]}
    return out


def _stored(req: TuneRequest, r: Any) -> dict[str, Any] | None:
    """The tuned result already stored for this strategy and cache (``--skip-tuned``), or None."""
    path = tuned_file(req.results_dir, r)
    if not path.is_file():
        return None
    try:
        result = json.loads(path.read_text())
    except json.JSONDecodeError:
        log.warning("%s is not valid JSON: tuning %s again", path, r.strategy_cls.name)
        return None
    log.info("tuned already: %s (%s)", r.strategy_cls.name, path)
    return {**result, "skipped": True, "files": [str(path), str(path.with_suffix(".yaml"))]}


def _run_request(req: TuneRequest, strategy: str, overrides: dict[str, str]) -> Any:
    from avbench import runner

    return runner.RunRequest(strategy=strategy, dataset=req.dataset, cache=req.cache, overrides=overrides,
                             results_dir=req.results_dir, device=req.device, cache_root=req.cache_root,
                             progress=False, seeds=list(req.seeds))


def tune_one(req: TuneRequest, strategy: str, overrides: dict[str, str], space: Mapping[str, Any],
             dists: Mapping[str, Any], cap: int) -> dict[str, Any]:
    """In this process (``--prune``): ``study.optimize`` over the strategy's trials, one after another."""
    from avbench import runner
    from avbench.tracking import Tracker

    r0 = runner.resolve(_run_request(req, strategy, overrides))
    tracker = Tracker(req.results_dir)
    parent = tuning_parent(req, strategy, r0, tracker, overrides, space, cap)
    study = new_study(req)
    trials: list[dict[str, Any]] = []

    def objective(trial: Any) -> float:
        params = suggest(trial, dists)
        record = run_trial(req, strategy, {**overrides, **{k: _text(v) for k, v in params.items()}},
                           trial, tracker, parent)
        trials.append({"number": trial.number, "params": params, **record})
        return record["value"]

    study.optimize(objective, n_trials=req.budget, catch=(RuntimeError, ValueError, FloatingPointError))
    return conclude(req, r0, study, trials, tracker, parent, overrides, space, cap)


def tuning_parent(req: TuneRequest, strategy: str, r0: Any, tracker: Any, overrides: dict[str, str],
                  space: Mapping[str, Any], cap: int) -> str:
    """The strategy's MLflow parent of kind "tune" (found again by its group, so a rerun joins it)."""
    from avbench import config as cfgmod
    from avbench.tracking import TAG_KIND, TAG_STRATEGY

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


def conclude(req: TuneRequest, r0: Any, study: Any, trials: list[dict[str, Any]], tracker: Any, parent: str,
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
              "overrides": {**overrides, **{k: _text(v) for k, v in best.params.items()}},
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


def run_trial(req: TuneRequest, strategy: str, overrides: dict[str, str], trial: Any, tracker: Any,
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
    from avbench.tracking import Tracker

    return trial_record(req, strategy, overrides, number, params, Tracker(req.results_dir), parent)


def trial_record(req: TuneRequest, strategy: str, overrides: dict[str, str], number: int, params: dict[str, Any],
                 tracker: Any, parent: str, callback: Any = None) -> dict[str, Any]:
    """Train the trial's configuration on every tuning seed (the fit rows); score it on the validation split.

    The trial is an MLflow child of the tuning parent; it ends FAILED if training raises, KILLED if it
    is interrupted (Ctrl-C, a cancelled job) or pruned."""
    import numpy as np
    import optuna

    from avbench import runner
    from avbench.tracking import TAG_KIND
    from avbench.train.engine import Engine, set_seed

    r = runner.resolve(_run_request(req, strategy, overrides))
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


def _text(v: Any) -> str:
    return repr(v) if isinstance(v, float) else str(v)


# --- the stored result and `avbench run --tuned` ------------------------------------------------
def tuned_dir(results_dir: str | Path, dataset: str, cache_key: str) -> Path:
    return Path(results_dir) / "tuned" / f"{dataset}-{cache_key[:12]}"


def tuned_file(results_dir: str | Path, r: Any) -> Path:
    """Where the tuned configuration of a resolved run's strategy and cache is stored (``<strategy>.json``)."""
    return tuned_dir(results_dir, r.dataset, r.cache.manifest.key) / f"{r.strategy_cls.name}.json"


def write_tuned(results_dir: str | Path, req: TuneRequest, result: dict[str, Any]) -> list[Path]:
    """``<strategy>.json`` (everything) and ``<strategy>.yaml`` (a config file for ``run --config``)."""
    import yaml

    from avbench.cache.format import write_json_atomic

    d = tuned_dir(results_dir, result["dataset"], result["cache_key"])
    d.mkdir(parents=True, exist_ok=True)
    jpath = d / f"{result['strategy']}.json"
    write_json_atomic(jpath, result)
    config: dict[str, Any] = {"strategy": result["strategy"]}
    config.update({"dataset": req.dataset} if req.dataset else {"cache": req.cache})
    for k, v in result["overrides"].items():
        prefix, _, rest = k.partition(".")
        section, name = (prefix, rest) if rest and prefix in ("model", "train", "data") else ("set", k)
        config.setdefault(section, {})[name] = _plain(v)
    ypath = d / f"{result['strategy']}.yaml"
    ypath.write_text(f"# tuned by avbench tune ({result['budget']['trials']} trials, "
                     f"best validation {result['metric']} {result['value']:.4f}); use: avbench run --config {ypath.name}\n"
                     + yaml.safe_dump(config, sort_keys=True))
    return [jpath, ypath]


def _plain(v: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(v)
    except yaml.YAMLError:
        return v


def apply_tuned(req: Any, which: str) -> Any:
    """``req`` (a RunRequest) with a tuned configuration under its own ``--set`` (which win).

    ``which`` is a ``tuned.json`` path, or "auto": the file ``avbench tune`` wrote for this strategy
    and this cache under the request's results directory."""
    from avbench import runner

    if which == "auto":
        r = runner.resolve(req)
        path = tuned_file(req.results_dir, r)
        if not path.exists():
            raise UserError(f"--tuned: no tuned configuration for {r.strategy_cls.name} on this cache ({path}); "
                            f"run avbench tune --strategy {req.strategy} first")
    else:
        path = Path(which).expanduser()
        if not path.is_file():
            raise UserError(f"--tuned {which}: no such file")
    try:
        tuned = json.loads(path.read_text())
        over = {k: v for k, v in tuned["overrides"].items() if not k.startswith("data.")}
    except (json.JSONDecodeError, KeyError, AttributeError) as e:
        raise UserError(f"--tuned {path}: not a tuned configuration ({e})") from None
    # The tag names the file absolutely, so run and sweep (which resolves --results-dir) record the same.
    return dataclasses.replace(req, overrides={**over, **req.overrides},
                               extra_tags={**req.extra_tags, "avbench.tuned": str(path.resolve())})
