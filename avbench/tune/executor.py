"""``avbench tune`` on the executor: every trial is a job, each strategy's study stays sequential.

Why this shape: a TPE study's next suggestion depends on every earlier result, so running trials of
one study at once would make the tuned configuration depend on ``--jobs`` and on which trial finished
first. Instead a strategy's trial k+1 is asked only after trial k is told, and the concurrency comes
from different strategies: up to ``slots`` trials are in flight, at most one per strategy, filled in
the order the strategies were given. Every study then sees exactly the history it would see alone,
whatever the executor (given the same threads per job: float results can depend on them).

The driver (this process) creates each strategy's tuning parent and study, asks and tells; a job
(``avbench.tune.study.trial_job``) trains on the fit rows, scores the validation split and records its
trial as an MLflow child. A failed trial is told as FAIL and listed at the end while the tuning goes
on; Ctrl-C cancels the running trials (their runs end KILLED) and re-raises. MLflow is the resume
point: a rerun replays the trials the interrupted one finished (``_replay``) and goes on from there.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Mapping

from avbench.analysis.loading import download_artifact
from avbench.errors import UserError
from avbench.executor import Job, options
from avbench.executor.progress import SweepProgress
from avbench.resolve import Resolved, resolve
from avbench.tracking import TAG_SEED, Tracker
from avbench.tune.space import suggest, text
from avbench.tune.study import TuneRequest, conclude, new_study, run_request, trial_job, tuning_parent

log = logging.getLogger(__name__)


@dataclass
class _Tuning:
    """One strategy's study, its tuning parent and the trial now in flight (None when idle)."""

    strategy: str
    resolved: Resolved
    study: Any
    dists: Mapping[str, Any]
    space: Mapping[str, Any]
    parent: str
    trials: list[dict[str, Any]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    asked: int = 0
    inflight: Any = None


def tune_all(req: TuneRequest, strategies: list[str], overrides: dict[str, str],
             spaces: Mapping[str, tuple[Mapping[str, Any], Mapping[str, Any]]], cap: int,
             executor: Any = None) -> tuple[dict[str, Any], dict[str, str]]:
    """Tune ``strategies`` on the executor; ``({strategy: result}, {strategy: why it has none})``."""
    req = options.absolute_paths(req, space_file=None)  # jobs run elsewhere; the space file is already read
    own = executor is None
    ex = executor or options.make(req)
    try:
        options.check_tracking_shared(ex, req.results_dir)
        tracker = Tracker(req.results_dir)  # the store exists before any worker opens it
        tunings = [_open(req, s, overrides, spaces[s], cap, tracker) for s in strategies]
        progress = SweepProgress(req.budget * len(tunings), ex.slots, already_done=sum(t.asked for t in tunings),
                                 enabled=req.progress, desc="tune")
        progress.write(f"{ex.describe()}; {len(tunings)} strateg{'y' if len(tunings) == 1 else 'ies'} x "
                       f"{req.budget} trial(s), one trial of each strategy at a time")
        started_ms = int(time.time() * 1000)
        try:
            _drive(ex, req, tunings, overrides, progress)
        except KeyboardInterrupt:
            progress.write(f"interrupted: cancelling {ex.running()} running trial(s)")
            ex.cancel()
            _mark_killed(tracker, tunings, started_ms)
            raise
        finally:
            progress.close()
        return _conclude_all(req, tunings, tracker, overrides, cap)
    finally:
        if own:
            ex.close()


def _open(req: TuneRequest, strategy: str, overrides: dict[str, str],
          space: tuple[Mapping[str, Any], Mapping[str, Any]], cap: int, tracker: Tracker) -> _Tuning:
    """The strategy's study and MLflow tuning parent, made here so no job races to create them."""
    r0 = resolve(run_request(req, strategy, overrides))
    parent = tuning_parent(req, strategy, r0, tracker, overrides, space[0], cap)
    t = _Tuning(strategy, r0, new_study(req), space[1], space[0], parent)
    _replay(t, tracker, req.budget)
    return t


def _replay(t: _Tuning, tracker: Tracker, budget: int) -> None:
    """Trials an interrupted tuning already ran come back from MLflow instead of training again.

    The tuning parent is found again by its group (same strategy, cache, space, budget, sampler), and
    its trial runs 0, 1, ... that ended FINISHED or FAILED are replayed in order: each is asked again
    (the seeded sampler, given the same history, suggests the same parameters, which is checked) and
    told its recorded result. The rerun then continues exactly as the uninterrupted tuning would have.
    """
    from optuna.trial import TrialState

    done: dict[int, Any] = {}
    for run in tracker.children(t.parent, finished_only=False):  # newest first: keep the latest per trial
        if run.info.status in ("FINISHED", "FAILED"):
            done.setdefault(int(run.data.tags.get(TAG_SEED, -1)), run)
    while t.asked < budget and t.asked in done:
        run = done[t.asked]
        trial = t.study.ask()
        params = suggest(trial, t.dists)
        recorded = {k: run.data.params.get(k) for k in params}
        if {k: text(v) for k, v in params.items()} != recorded:
            raise UserError(f"cannot resume the tuning of {t.strategy}: trial {trial.number} was run with "
                            f"{recorded} but the sampler now suggests {params} (another Optuna version?); "
                            f"use another --results-dir or delete the tuning run {t.parent}")
        t.asked += 1
        if run.info.status == "FAILED":
            t.study.tell(trial, state=TrialState.FAIL)
            t.failures.append(f"trial {trial.number}: failed (in an earlier run)")
            continue
        record = _recorded(tracker, run)
        t.trials.append({"number": trial.number, "params": params, **record})
        t.study.tell(trial, record["value"])
    if t.asked:
        log.info("tune %s: %d trial(s) from an earlier run reused", t.strategy, t.asked)


def _recorded(tracker: Tracker, run: Any) -> dict[str, Any]:
    """A finished trial run's record, as ``avbench.tune.study.trial_record`` returned it."""
    (key,) = [k for k in run.data.metrics if k.startswith("val/")]
    saved = json.loads(download_artifact(tracker, run.info.run_id, "trial.json").read_text())
    return {"value": run.data.metrics[key], "values": saved["values"], "metric": key[len("val/"):],
            "steps": int(run.data.metrics.get("steps", 0)), "run_id": run.info.run_id,
            "converged": all(c["converged"] for c in saved["validation"])}


def _drive(ex: Any, req: TuneRequest, tunings: list[_Tuning], overrides: dict[str, str], progress: Any) -> None:
    """Keep the slots busy with the next trial of idle strategies; tell each outcome as it arrives."""
    while True:
        _fill(ex, req, tunings, overrides)
        if not ex.outstanding():
            return
        for o in ex.wait(timeout=1.0):
            t = tunings[int(o.key.split(":")[0])]
            line = _tell(t, o)
            progress.running = ex.running()
            progress.finished(o.seconds if o.ok else 0.0, failed=not o.ok,
                              line=f"[{progress.done + 1}/{progress.total}] {line}")
        progress.set_running(ex.running())


def _fill(ex: Any, req: TuneRequest, tunings: list[_Tuning], overrides: dict[str, str]) -> None:
    """Ask the next trial of each idle strategy, in the given order, while a slot is free."""
    for i, t in enumerate(tunings):
        if ex.outstanding() >= ex.slots:
            return
        if t.inflight is not None or t.asked >= req.budget:
            continue
        trial = t.study.ask()
        params = suggest(trial, t.dists)
        t.inflight, t.asked = trial, t.asked + 1
        trial_over = {**overrides, **{k: text(v) for k, v in params.items()}}
        ex.submit(Job(key=f"{i}:{trial.number}", fn=trial_job,
                      args=(req, t.strategy, trial_over, trial.number, params, t.parent),
                      label=f"{t.strategy} trial {trial.number}"))


def _tell(t: _Tuning, o: Any) -> str:
    """The outcome into the study (a failure as FAIL) and the trial's record; returns its progress line."""
    from optuna.trial import TrialState

    trial, t.inflight = t.inflight, None
    params = dict(trial.params)
    head = f"{t.strategy} trial {trial.number}"
    if not o.ok:
        t.study.tell(trial, state=TrialState.FAIL)
        t.failures.append(f"trial {trial.number}: {o.error}")
        return f"{head}: failed: {o.error}"
    record = o.value
    t.trials.append({"number": trial.number, "params": params, **record})
    t.study.tell(trial, record["value"])  # a NaN score is told as a failed trial by Optuna itself
    return (f"{head}: val {record['metric']} {record['value']:.4f} ({record['steps']} steps) in {o.seconds:.1f} s "
            f"{ {k: _short(v) for k, v in params.items()} }")


def _short(v: Any) -> Any:
    return float(f"{v:.3g}") if isinstance(v, float) else v


def _conclude_all(req: TuneRequest, tunings: list[_Tuning], tracker: Tracker, overrides: dict[str, str],
                  cap: int) -> tuple[dict[str, Any], dict[str, str]]:
    """Each strategy's best configuration stored; a strategy without a finished trial is a failure."""
    done: dict[str, Any] = {}
    failed: dict[str, str] = {}
    for t in tunings:
        try:
            done[t.strategy] = conclude(req, t.resolved, t.study, t.trials, tracker, t.parent, overrides,
                                             t.space, cap)
        except UserError as e:
            failed[t.strategy] = "; ".join([str(e), *t.failures])
            continue
        done[t.strategy]["failed_trials"] = list(t.failures)
        for f in t.failures:
            log.warning("tune %s %s", t.strategy, f)
    return done, failed


def _mark_killed(tracker: Tracker, tunings: list[_Tuning], since_ms: int) -> None:
    """Trial runs a cancelled job could not close itself (a worker killed hard) are marked KILLED here."""
    for t in tunings:
        for run in tracker.children(t.parent, finished_only=False):
            if run.info.status == "RUNNING" and run.info.start_time >= since_ms:
                tracker.finish(run.info.run_id, "KILLED")
