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
on; Ctrl-C cancels the running trials (their runs end KILLED) and re-raises. The study's Optuna journal
(avbench/tune/study.py) is the resume point: a rerun reopens it, keeps every finished trial's record,
trains again the trial each strategy had in flight (same number, same parameters) and goes on from
there, so nothing finished trains twice and the outcome is the uninterrupted run's. Once every study
has its budget, the confirmation stage (``--confirm N``) retrains each strategy's top N trials on fresh
seeds, all of them as independent jobs.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Mapping

import avbench.tune.select as sel
from avbench.errors import UserError
from avbench.executor import Job, options
from avbench.executor.progress import SweepProgress
from avbench.resolve import Resolved, resolve
from avbench.tracking import Tracker
from avbench.tune.space import text
from avbench.tune.study import (
    TuneRequest,
    ask,
    conclude,
    confirm_seeds,
    confirmed_records,
    fail,
    new_study,
    recover,
    remember,
    resume_state,
    run_request,
    tell,
    trial_job,
    tuning_group,
    tuning_parent,
)

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
    pending: list[tuple[int, dict[str, Any]]] = field(default_factory=list)  # left RUNNING by an interrupted run
    asked: int = 0
    inflight: tuple[int, dict[str, Any]] | None = None  # (trial number, params)


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
        progress = SweepProgress((req.budget + req.confirm) * len(tunings), ex.slots,
                                 already_done=sum(t.asked - len(t.pending) for t in tunings),
                                 enabled=req.progress, desc="tune")
        progress.write(f"{ex.describe()}; {len(tunings)} strateg{'y' if len(tunings) == 1 else 'ies'} x "
                       f"{req.budget} trial(s), one trial of each strategy at a time")
        started_ms = int(time.time() * 1000)
        try:
            _drive(ex, req, tunings, overrides, progress)
            _confirm(ex, req, tunings, overrides, progress, tracker)
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
    """The strategy's study (reopened if it exists) and MLflow tuning parent, made here so no job
    races to create them."""
    r0 = resolve(run_request(req, strategy, overrides))
    group = tuning_group(req, strategy, r0, overrides, space[0], cap)
    parent = tuning_parent(req, strategy, r0, tracker, overrides, space[0], cap, group)
    t = _Tuning(strategy, r0, new_study(req, strategy, group), space[1], space[0], parent)
    state = resume_state(t.study)
    t.trials, t.failures = state.trials, state.failures
    for number, params in state.pending:  # an interrupted run's trial in flight: finished after all?
        record = recover(tracker, parent, "trial", number)
        if record is None:
            t.pending.append((number, params))
        else:
            tell(t.study, req, number, params, record)
            t.trials.append({"number": number, "params": params, **record})
    t.asked = len(t.study.get_trials(deepcopy=False))
    return t


def _drive(ex: Any, req: TuneRequest, tunings: list[_Tuning], overrides: dict[str, str], progress: Any) -> None:
    """Keep the slots busy with the next trial of idle strategies; tell each outcome as it arrives."""
    while True:
        _fill(ex, req, tunings, overrides)
        if not ex.outstanding():
            return
        for o in ex.wait(timeout=1.0):
            t = tunings[int(o.key.split(":")[0])]
            line = _tell(t, o, req)
            progress.running = ex.running()
            progress.finished(o.seconds if o.ok else 0.0, failed=not o.ok,
                              line=f"[{progress.done + 1}/{progress.total}] {line}")
        progress.set_running(ex.running())


def _fill(ex: Any, req: TuneRequest, tunings: list[_Tuning], overrides: dict[str, str]) -> None:
    """Ask the next trial of each idle strategy, in the given order, while a slot is free."""
    for i, t in enumerate(tunings):
        if ex.outstanding() >= ex.slots:
            return
        if t.inflight is not None:
            continue
        if t.pending:  # an interrupted run's trial: trained again with its number and parameters
            number, params = t.pending.pop(0)
        elif t.asked < req.budget:
            trial, params = ask(t.study, req, t.strategy, t.dists)
            number = trial.number
            t.asked += 1
        else:
            continue
        t.inflight = (number, params)
        trial_over = {**overrides, **{k: text(v) for k, v in params.items()}}
        ex.submit(Job(key=f"{i}:{number}", fn=trial_job,
                      args=(req, t.strategy, trial_over, number, params, t.parent),
                      label=f"{t.strategy} trial {number}"))


def _tell(t: _Tuning, o: Any, req: TuneRequest) -> str:
    """The outcome into the study (a failure as FAIL) and the trial's record; returns its progress line."""
    (number, params), t.inflight = t.inflight, None
    head = f"{t.strategy} trial {number}"
    if not o.ok:
        fail(t.study, number, str(o.error))
        t.failures.append(f"trial {number}: {o.error}")
        return f"{head}: failed: {o.error}"
    record = o.value
    tell(t.study, req, number, params, record)
    t.trials.append({"number": number, "params": params, **record})
    return (f"{head}: val {record['metric']} {record['value']:.4f}, {req.select} "
            f"{sel.score(record, req.select):.4f} ({record['steps']} steps) in {o.seconds:.1f} s "
            f"{ {k: _short(v) for k, v in params.items()} }")


def _confirm(ex: Any, req: TuneRequest, tunings: list[_Tuning], overrides: dict[str, str], progress: Any,
             tracker: Tracker) -> None:
    """The confirmation stage: every strategy's top ``--confirm`` trials retrained on fresh seeds, as
    independent jobs (their order cannot change a result); each record lands in the study."""
    if req.confirm <= 0:
        return
    seeds = confirm_seeds(req)
    for i, t in enumerate(tunings):
        for entry in sel.top(t.trials, req.select, req.confirm):
            number = entry["number"]
            found = recover(tracker, t.parent, "confirm", number) if f"confirm.{number}" not in t.study.user_attrs \
                else None
            if found is not None:
                remember(t.study, f"confirm.{number}", {"number": number, "params": entry["params"], **found})
            if f"confirm.{number}" in t.study.user_attrs:
                progress.finished(0.0, failed=False, line=f"[{progress.done + 1}/{progress.total}] {t.strategy} "
                                            f"confirm trial {number}: from an earlier run")
                continue
            over = {**overrides, **{k: text(v) for k, v in entry["params"].items()}}
            ex.submit(Job(key=f"{i}:confirm:{number}", fn=trial_job,
                          args=(req, t.strategy, over, number, entry["params"], t.parent, seeds, "confirm"),
                          label=f"{t.strategy} confirm trial {number}"))
    while ex.outstanding():
        for o in ex.wait(timeout=1.0):
            i, _, number = o.key.split(":")
            t = tunings[int(i)]
            head = f"{t.strategy} confirm trial {number} (seeds {seeds})"
            if o.ok:
                entry = next(e for e in t.trials if e["number"] == int(number))
                remember(t.study, f"confirm.{number}", {"number": int(number), "params": entry["params"], **o.value})
                line = f"{head}: {req.select} {sel.score(o.value, req.select):.4f}"
            else:
                t.failures.append(f"confirmation of trial {number}: {o.error}")
                line = f"{head}: failed: {o.error}"
            progress.running = ex.running()
            progress.finished(o.seconds if o.ok else 0.0, failed=not o.ok,
                              line=f"[{progress.done + 1}/{progress.total}] {line}")
        progress.set_running(ex.running())


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
                                        t.space, cap, dists=t.dists,
                                        confirmed=confirmed_records(t.study, t.trials, req))
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
