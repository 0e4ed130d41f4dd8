"""One strategy's tuning: its request, its Optuna study, its MLflow tuning parent, and its trials.

Over 400 lines because a trial's life (suggest, train per seed, score, record in Optuna and MLflow,
resume) is one story; selection rules are in select.py, the search space in space.py, storage in store.py.

A trial trains the suggested configuration on every trial seed over the fit rows (training rows minus
the validation hold-out) and is scored on the validation split; the test split is never opened. Each
seed's validation accuracy, mAP and loss (cross-entropy of the strategy's logits; BCE for multilabel)
is recorded, and the trial's score is the mean of the one ``--select`` names (avbench/tune/select.py).
A trial is an MLflow child run of kind "trial" under the strategy's parent of kind "tune", tagged with
the seeds it trained, with the cache as its dataset input and every resolved setting as a param. The
confirmation stage (``--confirm N``) retrains the top N trials on fresh seeds as runs of kind
"confirm". The same ``trial_record`` runs in this process (``--prune``, ``tune_one``) and as an
executor job (``trial_job``, avbench/tune/executor.py).

The study lives in an Optuna journal file next to the results (``<results>/optuna.journal``), named
``<strategy>-<group>``, so ``optuna-dashboard`` and ``optuna.visualization`` open it and a rerun
continues it (``load_if_exists``). Each trial's sampler is seeded from the strategy's own seed stream
and the trial's number (``select.trial_sampler_seed``; with ``--sampler sobol`` the trial's number is
its point of the strategy's sequence): what a resumed study suggests depends only on its stored
history, never on a sampler's in-memory state. Each trial's record (all seeds' scores) is a
study user attribute ``record.<n>``, each confirmation's ``confirm.<n>``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

import avbench.tune.select as sel
from avbench import config as cfgmod
from avbench.cache.validation import cross_validation
from avbench.errors import UserError
from avbench.resolve import Resolved, RunRequest, resolve
from avbench.tracking import TAG_KIND, TAG_STRATEGY, Tracker, signals_deferred
from avbench.train.engine import Engine, set_seed
from avbench.tune.space import suggest, text
from avbench.tune.store import write_tuned

log = logging.getLogger(__name__)

TAG_TRIAL = "avbench.tune.trial"  # the trial number a trial or confirmation run trained
TAG_REPLICATE = "avbench.tune.replicate"  # which of --replicates R a tuning parent is
TAG_SAMPLER_SEED = "avbench.tune.sampler_seed"  # the replicate's sampler seed (before the per-strategy stream)
JOURNAL = "optuna.journal"


@dataclass
class TuneRequest:
    strategies: list[str]
    dataset: str | None = None
    cache: str | None = None
    budget: int = 20
    seeds: list[int] = field(default_factory=lambda: [0])  # every trial trains these seeds; its score is the mean
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
    select: str = sel.DEFAULT_SELECT  # the trial score: val_mAP (default), val_loss (negated) or val_acc
    confirm: int = 0  # the top N trials retrained on fresh seeds; the choice is made on those
    confirm_seeds: int = 2  # fresh seeds per confirmed trial
    replicates: int = 1  # the whole selection R times, sampler seeds sampler_seed + 0 .. R-1
    replicate: int = 0  # which replicate this request runs (set by the driver)
    run_length: str = "searched"  # "budget": train.max_steps is not searched, every trial trains the whole budget
    sampler: str = "tpe"  # "sobol": trial n is point n of the strategy's scrambled Sobol' sequence (tune/sobol.py)
    cv: int = 0  # K >= 2: every trial trains once per stratified fold of the training split (0: the hold-out)


def confirm_seeds(req: TuneRequest) -> list[int]:
    """The confirmation stage's fresh seeds: after every trial seed, so none was seen in the trials."""
    start = max(req.seeds) + 1
    return list(range(start, start + req.confirm_seeds))


def trial_validations(req: TuneRequest, cache: Any) -> list[Any]:
    """What a trial validates on: the cache's validation split (``[None]``), or its ``--cv`` folds."""
    if not req.cv:
        return [None]
    if cache.validation.official:
        raise UserError(f"--cv {req.cv}: {cache.root} has an official validation split "
                        f"('{cache.validation.split}'); tune on it without --cv")
    try:
        return cross_validation(cache.train_split(), req.cv)
    except ValueError as e:
        raise UserError(f"--cv {req.cv}: {e}") from None


def validation_record(req: TuneRequest, cache: Any) -> dict[str, Any]:
    """The validation a tuning chose on, as stored with its result: the split's record, or the folds'."""
    if not req.cv:
        return cache.validation.record
    folds = [v.record for v in trial_validations(req, cache)]
    return {"source": "cv", "method": folds[0]["method"], "k": req.cv, "seed": folds[0]["seed"], "folds": folds}


def run_request(req: TuneRequest, strategy: str, overrides: dict[str, str]) -> RunRequest:
    """The ``RunRequest`` a trial of ``strategy`` resolves (no progress bars; the tuning seeds)."""
    return RunRequest(strategy=strategy, dataset=req.dataset, cache=req.cache, overrides=overrides,
                      results_dir=req.results_dir, device=req.device, cache_root=req.cache_root,
                      progress=False, seeds=list(req.seeds))


def tune_one(req: TuneRequest, strategy: str, overrides: dict[str, str], space: Mapping[str, Any],
             dists: Mapping[str, Any], cap: int) -> dict[str, Any]:
    """In this process (``--prune``): the strategy's trials one after another, then the confirmation."""
    r0 = resolve(run_request(req, strategy, overrides))
    tracker = Tracker(req.results_dir)
    group = tuning_group(req, strategy, r0, overrides, space, cap)
    parent = tuning_parent(req, strategy, r0, tracker, overrides, space, cap, group)
    study = new_study(req, strategy, group)
    state = resume_state(study)
    for number, params in state.pending:  # trials an interrupted run left RUNNING
        record = recover(tracker, parent, "trial", number)
        if record is not None:
            tell(study, req, number, params, record)
            state.trials.append({"number": number, "params": params, **record})
        else:
            _in_process(req, strategy, overrides, study, tracker, parent, number, params, state)
    while len(study.trials) < req.budget:
        trial, params = ask(study, req, strategy, dists)
        _in_process(req, strategy, overrides, study, tracker, parent, trial.number, params, state, trial)
    for t in sel.top(state.trials, req.select, req.confirm):  # the confirmation stage, in this process
        key = f"confirm.{t['number']}"
        if key not in study.user_attrs:
            over = {**overrides, **{k: text(v) for k, v in t["params"].items()}}
            rec = recover(tracker, parent, "confirm", t["number"]) or trial_record(
                req, strategy, over, t["number"], t["params"], tracker, parent, seeds=confirm_seeds(req),
                kind="confirm")
            remember(study, key, {"number": t["number"], "params": t["params"], **rec})
    return conclude(req, r0, study, state.trials, tracker, parent, overrides, space, cap, dists=dists,
                    confirmed=confirmed_records(study, state.trials, req), failures=state.failures)


def _in_process(req: TuneRequest, strategy: str, overrides: dict[str, str], study: Any, tracker: Tracker,
                parent: str, number: int, params: dict[str, Any], state: "ResumeState", trial: Any = None) -> None:
    import optuna
    from optuna.trial import TrialState

    over = {**overrides, **{k: text(v) for k, v in params.items()}}
    try:
        record = trial_record(req, strategy, over, number, params, tracker, parent,
                              callback=_pruning_callback(trial) if (req.prune and trial is not None) else None)
    except optuna.TrialPruned:
        with signals_deferred():
            study.tell(number, state=TrialState.PRUNED)
        return
    except (RuntimeError, ValueError, FloatingPointError) as e:
        fail(study, number, f"{type(e).__name__}: {e}")
        state.failures.append(f"trial {number}: {type(e).__name__}: {e}")
        return
    tell(study, req, number, params, record)
    state.trials.append({"number": number, "params": params, **record})
    if req.progress:
        log.info("tune %s trial %d: val %s %.4f, score %s %.4f (%d steps) %s", strategy, number, record["metric"],
                 record["value"], req.select, sel.score(record, req.select), record["steps"], params)


@dataclass
class ResumeState:
    """What a study already holds: finished trial records, failures, and trials left RUNNING."""

    trials: list[dict[str, Any]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    pending: list[tuple[int, dict[str, Any]]] = field(default_factory=list)


def resume_state(study: Any) -> ResumeState:
    """A reopened study's trials: COMPLETE ones come back with their records (nothing trains again),
    FAIL ones as failures, RUNNING ones (an interrupted run's) to be trained again with the same
    number and parameters, so the history ends up exactly as an uninterrupted run's."""
    from optuna.trial import TrialState

    state = ResumeState()
    attrs = study.user_attrs
    for t in study.get_trials(deepcopy=False):
        if t.state == TrialState.COMPLETE and f"record.{t.number}" in attrs:
            state.trials.append(attrs[f"record.{t.number}"])
        elif t.state == TrialState.FAIL:
            state.failures.append(f"trial {t.number}: {attrs.get(f'error.{t.number}', 'failed')} (in an earlier run)")
        elif t.state == TrialState.RUNNING:
            state.pending.append((t.number, dict(t.params)))
    if state.trials or state.failures:
        log.info("tune %s: %d trial(s) from an earlier run reused", study.study_name, len(state.trials))
    return state


def recover(tracker: Tracker, parent: str, kind: str, number: int) -> dict[str, Any] | None:
    """The record of a trial (or confirmation) run that finished after the driver last wrote the study
    (Ctrl-C between a job's end and its tell): found in MLflow, so it is not trained again."""
    from avbench.analysis.loading import download_artifact

    for run in tracker.children(parent, finished_only=False):
        tags = run.data.tags
        if (run.info.status == "FINISHED" and tags.get(TAG_KIND) == kind and tags.get(TAG_TRIAL) == str(number)):
            try:
                saved = json.loads(download_artifact(tracker, run.info.run_id, "trial.json").read_text())
            except (FileNotFoundError, json.JSONDecodeError):
                continue
            if "record" in saved:
                return saved["record"]
    return None


def confirmed_records(study: Any, trials: list[dict[str, Any]], req: TuneRequest) -> list[dict[str, Any]]:
    """The confirmation records of the top ``--confirm`` trials that the study holds."""
    attrs = study.user_attrs
    return [attrs[f"confirm.{t['number']}"] for t in sel.top(trials, req.select, req.confirm)
            if f"confirm.{t['number']}" in attrs]


def tuning_group(req: TuneRequest, strategy: str, r0: Resolved, overrides: dict[str, str],
                 space: Mapping[str, Any], cap: int) -> str:
    """The hash that names a tuning: its MLflow parent's group and its Optuna study's name."""
    return cfgmod.config_hash({"tune": strategy, "cache": r0.cache.manifest.key,
                               "space": json.dumps(space, sort_keys=True, default=str)},
                              overrides, {"budget": req.budget, "cap": cap, "seeds": req.seeds,
                                          "sampler": req.sampler_seed, "prune": req.prune, "select": req.select,
                                          "confirm": req.confirm, "confirm_seeds": req.confirm_seeds,
                                          **({"cv": req.cv} if req.cv else {}),
                                          **({"sampler_kind": req.sampler} if req.sampler != "tpe" else {})})
    # (keys only when not the default, so earlier tunings keep their groups)


def full_params(r: Resolved) -> dict[str, Any]:
    """Every resolved setting (strategy config, recipe, dataset knobs) as MLflow params."""
    out: dict[str, Any] = {"strategy": r.strategy_cls.name, "dataset": r.dataset, "cache": str(r.cache.root),
                           "cache_key": r.cache.manifest.key}
    out.update({f"model.{k}": v for k, v in dataclasses.asdict(r.strategy_cfg).items()})
    out.update({f"train.{k}": v for k, v in dataclasses.asdict(r.recipe).items()})
    if r.knobs is not None:
        out.update({f"data.{k}": v for k, v in dataclasses.asdict(r.knobs).items()})
    return out


def log_cache_input(tracker: Tracker, run_id: str, r: Resolved) -> None:
    """The feature cache as the run's dataset input, as ``avbench run`` logs it."""
    m = r.cache.manifest
    tracker.log_dataset(run_id, r.dataset, m.key, str(r.cache.root),
                        {"task": m.task, "classes": m.num_classes, "steps": m.num_steps, "audio_dim": m.audio_dim,
                         "video_dim": m.video_dim, "splits": {k: v.get("size") for k, v in m.splits.items()},
                         "validation": r.cache.validation.record}, contexts=("train", "validation"))


def tuning_parent(req: TuneRequest, strategy: str, r0: Resolved, tracker: Tracker, overrides: dict[str, str],
                  space: Mapping[str, Any], cap: int, group: str | None = None) -> str:
    """The strategy's MLflow parent of kind "tune" (found again by its group, so a rerun joins it)."""
    group = group or tuning_group(req, strategy, r0, overrides, space, cap)
    sseed = sel.strategy_seed(req.sampler_seed, r0.strategy_cls.name)
    parent = tracker.parent_run(r0.dataset, f"tune-{group}", f"tune-{r0.strategy_cls.name}",
                                {**full_params(r0), "budget_trials": req.budget,
                                 "max_steps_per_trial": cap, "seeds": req.seeds, "space": space,
                                 "sampler_seed": req.sampler_seed, "strategy_sampler_seed": sseed,
                                 "replicate": req.replicate, "select": req.select, "confirm_trials": req.confirm,
                                 "confirm_seeds": confirm_seeds(req) if req.confirm else [], "pruning": req.prune,
                                 "cv_folds": req.cv, "run_length": req.run_length, "sampler": req.sampler,
                                 "study": f"{study_storage_path(req.results_dir)}::{r0.strategy_cls.name}-{group}",
                                 **{f"fixed.{k}": v for k, v in overrides.items()}},
                                {TAG_KIND: "tune", TAG_STRATEGY: r0.strategy_cls.name,
                                 TAG_REPLICATE: str(req.replicate), TAG_SAMPLER_SEED: str(req.sampler_seed)})
    log_cache_input(tracker, parent, r0)
    return parent


def study_storage_path(results_dir: str | Path) -> Path:
    return Path(results_dir).resolve() / JOURNAL


def storage(results_dir: str | Path) -> Any:
    """The Optuna journal storage of a results directory (one file, every study of every tuning)."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    path = study_storage_path(results_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(path)))


def new_study(req: TuneRequest, strategy: str, group: str) -> Any:
    """The strategy's study in the results' journal, created or reopened (``load_if_exists``)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sseed = sel.strategy_seed(req.sampler_seed, strategy)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=2) if req.prune else optuna.pruners.NopPruner()
    with signals_deferred():
        study = optuna.create_study(storage=storage(req.results_dir), study_name=f"{strategy}-{group}",
                                    direction="maximize", sampler=optuna.samplers.TPESampler(seed=sseed),
                                    pruner=pruner, load_if_exists=True)
        if "strategy" not in study.user_attrs:
            for k, v in {"strategy": strategy, "select": req.select, "sampler_seed": req.sampler_seed,
                         "strategy_sampler_seed": sseed, "replicate": req.replicate, "seeds": req.seeds}.items():
                study.set_user_attr(k, v)
    return study


def trial_sampler(req: TuneRequest, strategy: str, dists: Mapping[str, Any], number: int) -> Any:
    """The sampler that proposes trial ``number``: TPE seeded by the strategy's stream and the trial's
    number, or (``--sampler sobol``) the strategy's Sobol' sequence, whose point ``number`` it is."""
    sseed = sel.strategy_seed(req.sampler_seed, strategy)
    if req.sampler == "sobol":
        from avbench.tune.sobol import SobolSampler

        return SobolSampler(dists, sseed)
    import optuna

    return optuna.samplers.TPESampler(seed=sel.trial_sampler_seed(sseed, number))


def ask(study: Any, req: TuneRequest, strategy: str, dists: Mapping[str, Any]) -> tuple[Any, dict[str, Any]]:
    """The next trial and its suggested parameters (``trial_sampler``). Asking and every suggestion
    write the journal, so Ctrl-C waits for all of them
    (an interrupt inside a journal write leaves its lock file behind and ends the run with a
    FileNotFoundError instead of exit 130)."""
    with signals_deferred():
        study.sampler = trial_sampler(req, strategy, dists, len(study.get_trials(deepcopy=False)))
        trial = study.ask()
        return trial, suggest(trial, dists)


def tell(study: Any, req: TuneRequest, number: int, params: dict[str, Any], record: dict[str, Any]) -> None:
    """The trial's record into the study (user attribute ``record.<n>``), then its score."""
    with signals_deferred():
        study.set_user_attr(f"record.{number}", {"number": number, "params": params, **record})
        study.tell(number, sel.score(record, req.select))  # a NaN score is told as a failed trial by Optuna itself


def fail(study: Any, number: int, error: str, key: str = "error") -> None:
    """A failed trial (``key`` "error") into the study, or a failed confirmation's note."""
    from optuna.trial import TrialState

    with signals_deferred():
        study.set_user_attr(f"{key}.{number}", error)
        if key == "error":
            study.tell(number, state=TrialState.FAIL)


def remember(study: Any, key: str, value: Any) -> None:
    """A study user attribute, written whole even if Ctrl-C arrives meanwhile."""
    with signals_deferred():
        study.set_user_attr(key, value)


def conclude(req: TuneRequest, r0: Resolved, study: Any, trials: list[dict[str, Any]], tracker: Tracker, parent: str,
             overrides: dict[str, str], space: Mapping[str, Any], cap: int, *, dists: Mapping[str, Any] | None = None,
             confirmed: list[dict[str, Any]] | None = None, failures: list[str] | None = None) -> dict[str, Any]:
    """The chosen trial as the stored result (json + yaml) and on the tuning parent; UserError if none finished.

    Without a confirmation stage the choice is ``select.choose`` over the trials; with one, over the
    confirmed trials' fresh-seed records."""
    key = r0.cache.manifest.key
    trials = sorted(trials, key=lambda t: t["number"])
    if not trials:
        raise UserError(f"tune {r0.strategy_cls.name}: no trial finished "
                        f"(see the trial runs under MLflow parent {parent})")
    confirmed = list(confirmed or [])
    stage = "confirmation" if confirmed else "trials"
    choice = sel.choose(confirmed or trials, req.select)
    if choice["best"] is None:
        raise UserError(f"tune {r0.strategy_cls.name}: no trial has a finite {req.select} "
                        f"(see the trial runs under MLflow parent {parent})")
    best = next(t for t in trials if t["number"] == choice["best"])
    capped = sel.capped(best["params"], dists or {})
    result = {"strategy": r0.strategy_cls.name, "dataset": r0.dataset, "cache_key": key,
              "cache": str(r0.cache.root), "metric": best.get("metric", ""), "value": best["value"],
              "select": req.select, "score": choice["score"], "score_se": choice["noise"],
              "selection": {**choice, "stage": stage}, "indistinct": bool(choice["note"]), "note": choice["note"],
              "capped": capped, "best_trial": best["number"], "params": dict(best["params"]),
              "overrides": {**overrides, **{k: text(v) for k, v in best["params"].items()}},
              "budget": {"trials": req.budget, "max_steps_per_trial": cap,
                         "steps_trained": int(sum(t.get("steps", 0) for t in trials + confirmed)),
                         "finished": len(trials), "seeds": req.seeds, "run_length": req.run_length,
                         "sampler": req.sampler,
                         "confirm": {"trials": req.confirm, "seeds": confirm_seeds(req) if req.confirm else []}},
              "replicate": req.replicate, "sampler_seed": req.sampler_seed,
              "strategy_sampler_seed": sel.strategy_seed(req.sampler_seed, r0.strategy_cls.name),
              "study": {"storage": str(study_storage_path(req.results_dir)), "name": study.study_name},
              "validation": validation_record(req, r0.cache), "space": space, "trials": trials,
              "confirmation": confirmed, "tuning_parent_run": parent}
    if failures is not None:
        result["failed_trials"] = list(failures)
    paths = write_tuned(req.results_dir, req, result)
    result["files"] = [str(p) for p in paths]
    tracker.log_metrics(parent, {"best_value": best["value"], "best_score": choice["score"],
                                 "steps_trained": result["budget"]["steps_trained"]})
    tracker.log_params(parent, {f"best.{k}": v for k, v in best["params"].items()})
    tracker.client.set_tag(parent, "avbench.tune.indistinct", str(bool(choice["note"])).lower())
    if capped:
        tracker.client.set_tag(parent, "avbench.tune.capped", ",".join(sorted(capped)))
    tracker.log_json(parent, "tuned.json", result)
    tracker.finish(parent)  # a rerun finds it again by its group and its study in the journal
    return result


def trial_job(req: TuneRequest, strategy: str, overrides: dict[str, str], number: int, params: dict[str, Any],
              parent: str, seeds: list[int] | None = None, kind: str = "trial") -> dict[str, Any]:
    """A job on the executor (module level, plain arguments, so it pickles): one trial, in a worker."""
    return trial_record(req, strategy, overrides, number, params, Tracker(req.results_dir), parent,
                        seeds=seeds, kind=kind)


def _column_scores(fit: Any, metric: str, multilabel: bool) -> dict[str, float]:
    """Validation accuracy, mAP and loss of the metric's column (``fusion`` for ``fusion/acc``)."""
    col = metric.split("/")[0] if "/" in metric else next(iter(fit.final.logits))
    return sel.validation_scores(fit.final.logits[col], fit.final.labels, multilabel)


def trial_record(req: TuneRequest, strategy: str, overrides: dict[str, str], number: int, params: dict[str, Any],
                 tracker: Tracker, parent: str, callback: Any = None, seeds: list[int] | None = None,
                 kind: str = "trial") -> dict[str, Any]:
    """Train the trial's configuration on every seed (the fit rows); score it on the validation split
    (with ``--cv K``: on every fold, each seed; the score is the mean over folds and seeds).

    The run is an MLflow child of the tuning parent, tagged with the seeds it trained; it ends FAILED
    if training raises, KILLED if it is interrupted (Ctrl-C, a cancelled job) or pruned."""
    import optuna

    seeds = list(req.seeds if seeds is None else seeds)
    r = resolve(run_request(req, strategy, overrides))
    recipe = dataclasses.replace(r.recipe, eval_every_epoch=False, validation="holdout")
    seed_tag = ",".join(str(s) for s in seeds)
    child = tracker.start_child(parent, seed_tag, f"{r.strategy_cls.name}-{kind}{number}",  # type: ignore[arg-type]
                                {**full_params(dataclasses.replace(r, recipe=recipe)), **params, "trial": number,
                                 "seeds": seed_tag, "select": req.select},
                                {TAG_KIND: kind, TAG_TRIAL: str(number), TAG_STRATEGY: r.strategy_cls.name})
    log_cache_input(tracker, child, r)
    folds = trial_validations(req, r.cache)
    values, steps, curves, metric, clips = [], 0, [], "", 0
    scores: dict[str, list[float]] = {"acc": [], "mAP": [], "loss": []}
    try:
        for i, (fold, seed) in enumerate((f, s) for f in folds for s in seeds):
            with r.cache.using_validation(fold) if fold is not None else contextlib.nullcontext():
                fit = _fit_one(req, r, recipe, seed, callback if i == 0 else None)
            metric = fit.validation.get("metric") or next(iter(fit.final.metrics))
            values.append(float(fit.final.metrics[metric]))
            for k, v in _column_scores(fit, metric, r.cache.task.multilabel).items():
                scores[k].append(v)
            clips = int(len(fit.final.labels))
            steps += int(fit.validation.get("steps", 0))
            curves.append({"seed": seed, "fold": None if fold is None else fold.record["fold"],
                           "converged": fit.validation.get("converged"),
                           "status": fit.validation.get("status"), "curve": fit.validation.get("curve", [])})
    except (optuna.TrialPruned, KeyboardInterrupt):
        tracker.finish(child, "KILLED")
        raise
    except BaseException:
        tracker.finish(child, "FAILED")
        raise
    if folds[0] is not None:  # every training clip validated once, in its fold
        clips = sum(len(f.rows) for f in folds)
    value = float(np.mean(values))
    record = {"value": value, "values": values, "metric": metric, "scores": scores, "seeds": seeds,
              "val_clips": clips, "steps": steps, "run_id": child, "kind": kind,
              "converged": all(c["converged"] is True for c in curves),
              "status": [c["status"] for c in curves]}
    col = metric.split("/")[0] if "/" in metric else metric
    tracker.log_metrics(child, {f"val/{metric}": value, **{f"val/{col}/{k}": float(np.mean(v)) for k, v in scores.items()},
                                f"score/{req.select}": sel.score(record, req.select), "steps": steps})
    tracker.log_json(child, "trial.json", {"overrides": overrides, "values": values, "scores": scores,
                                           "seeds": seeds, "validation": curves, "record": record,
                                           "folds": [f.record for f in folds if f is not None]})
    tracker.finish(child)
    return record


def _fit_one(req: TuneRequest, r: Resolved, recipe: Any, seed: int, callback: Any) -> Any:
    """One seed of a trial, validated on the cache's current validation split."""
    set_seed(seed)
    model = r.strategy_cls(r.strategy_cfg, r.cache.features, r.cache.task)
    engine = Engine(model, r.cache, recipe, seed=seed, device=req.device, progress=False, evaluate_on="val")
    if callback is not None:
        engine.validator.callback = callback
    return engine.fit()


def _pruning_callback(trial: Any) -> Any:
    import optuna

    def report(step: int, value: float) -> None:
        with signals_deferred():  # a journal write
            trial.report(value, step)
        if trial.should_prune():
            raise optuna.TrialPruned()

    return report
