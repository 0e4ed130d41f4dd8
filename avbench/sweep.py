"""Parameter sweeps: every grid point of every strategy through ``runner.run``, resumable, failure-tolerant.

A sweep is a list of axes and ties (the grammar, its quoting and the bounded tie arithmetic are in
``avbench.sweep_grid``); the points are the Cartesian product of the axes. What is left here (a little
over 400 lines) is one flow: plan every point, check them all, drive the jobs, record the outcome.

Every point runs with ``skip_finished``: a seed with a finished child run is not trained again, so a
rerun of the same command resumes an interrupted sweep. A point that fails (a bad value, a crash) is
recorded and the sweep goes on; failures are listed at the end.

Parents the sweep creates are tagged ``avbench.sweep.<name>`` with the point (JSON), so ``avbench
report`` can plot a metric against the swept parameter, and ``avbench.created_by``. A sweep never
modifies a run it did not create: a point whose parent already existed (a plain ``avbench run`` of the
same configuration, another sweep's) and whose seeds are all finished is only read, and its point is
recorded on the sweep's own record run (``avbench.kind=sweep``, tag ``avbench.sweep_member.<parent
id>``), which the report reads like the parent tag. Seeds that still have to run join that parent (its
aggregates then change, as with ``avbench run --seeds``).

A sweep without axes (no ``--grid``) runs each strategy's configuration once per seed on the executor,
and its records are exactly those of ``avbench run`` (no sweep tags, the same run names), so they are
main rows of the report and ``run --skip-finished`` sees their seeds. With ``tuned`` every strategy
starts from the configuration ``avbench tune`` stored, as ``run --tuned`` does.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from avbench import config as cfgmod
from avbench import registry, runner
from avbench.errors import UserError
from avbench.executor import Job, options
from avbench.executor.base import describe_error
from avbench.executor.progress import SweepProgress
from avbench.metrics.stats import mean_std_ci
from avbench.sweep_grid import (  # noqa: F401  (the grammar's names, re-exported for callers of avbench.sweep)
    TIE_MAX,
    Axis,
    Grid,
    Tie,
    check_name,
    default_name,
    evaluate,
    format_point,
    parse_axis,
    parse_grid,
    parse_tie,
    split_values,
)
from avbench.tracking import (
    TAG_CREATED_BY,
    TAG_KIND,
    TAG_MEMBER_PREFIX,
    TAG_SWEEP_NAME,
    TAG_SWEEP_PREFIX,
    Tracker,
    metric_name,
    source_tags,
)
from avbench.train.recipe import Recipe
from avbench.tune import apply_tuned


@dataclass
class SeedResult:
    seed: int
    status: str  # "ran", "skipped" (finished before), "failed", "cancelled"
    run_id: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)  # MLflow metric names
    error: str = ""
    seconds: float = 0.0


@dataclass
class PointResult:
    strategy: str
    point: dict[str, str]
    status: str  # "ran", "skipped" (every seed already finished), "partial", "failed"
    summary: dict[str, Any] | None = None
    error: str = ""
    seeds: list[SeedResult] = field(default_factory=list)


@dataclass
class SweepRequest:
    strategies: list[str]
    grid: Grid
    seeds: list[int]
    dataset: str | None = None
    cache: str | None = None
    epochs: int | None = None
    overrides: dict[str, str] = field(default_factory=dict)
    results_dir: str = "results"
    device: str = "cpu"
    name: str | None = None
    cache_root: str | None = None
    progress: bool = True
    save_model: bool = True
    executor: str = "local"
    jobs: int | None = None  # local: concurrent jobs (default 1)
    address: str | None = None  # ray: cluster address (default: start a local one)
    threads_per_job: int | None = None  # local default: usable cores // jobs; ray default: 1
    gpus_per_job: float = 0.0
    recipe_name: str = "default"  # --recipe: named Recipe overrides for every point (before --set)
    preset: str | None = None  # --preset: a named strategy configuration for every point (before --set)
    tuned: bool = False  # --tuned: each strategy's stored tuned configuration (under --set and the point)


@dataclass
class _Plan:
    """One (strategy, point): its parent run (made in the driver) or why it cannot run."""

    strategy: str
    point: dict[str, str]
    tag_value: str
    base: Any = None  # the RunRequest every seed of this point runs (with its seeds replaced)
    summary: dict[str, Any] | None = None  # runner.run with no seeds: parent id, primary metric, config
    error: str = ""
    seeds: dict[int, SeedResult] = field(default_factory=dict)
    created: bool = True  # the parent was made by this sweep (False: only read, never modified)


def run_sweep(req: SweepRequest, on_point: Callable[[int, int, PointResult], None] | None = None,
              executor: Any = None) -> list[PointResult]:
    """Run every (strategy, point, seed) as one job on the executor; never stops on a failed job.

    In the driver, before any job starts: every point is resolved (a bad value fails here, cheaply),
    its MLflow parent is found or created (so concurrent seeds never race to create it, and the
    tracking store exists before workers open it), and seeds with a finished child are skipped. Jobs
    then run wherever the executor puts them. Ctrl-C cancels the running jobs, marks their runs KILLED
    and re-raises KeyboardInterrupt; a rerun resumes.
    """

    name = check_name(req.name or default_name(req.grid))
    points = req.grid.points()
    clash = sorted(set(req.overrides) & set(points[0])) if points else []
    if clash:
        raise UserError(f"{', '.join(clash)} is both swept and set with --set")
    req = options.absolute_paths(req)  # a job may run in another working directory (Ray) or on another node
    own = executor is None
    ex = executor or options.make(req)
    try:
        options.check_tracking_shared(ex, req.results_dir)
        validate_points(req, name, points)  # every point checked before any point trains
        plans = [_plan(req, name, strategy, point) for strategy in req.strategies for point in points]
        tracker = _tracker(req.results_dir) if any(p.summary for p in plans) else None
        if tracker is not None and not req.grid.empty:
            _record_members(tracker, name, plans)
        jobs = _jobs(req, plans, tracker)
        total = len(plans) * len(req.seeds)
        failed = sum(len(req.seeds) for p in plans if p.error)
        progress = SweepProgress(total, ex.slots, already_done=total - len(jobs), already_failed=failed,
                                 enabled=req.progress, desc=f"sweep {name}")
        progress.write(f"{ex.describe()}; {len(jobs)} job(s) to run, {total - len(jobs) - failed} already finished, "
                       f"{failed} failed before starting")
        for plan in plans:
            if plan.error:
                progress.write(f"{plan.strategy} {format_point(plan.point)}: failed: {plan.error}")
        started_ms = int(time.time() * 1000)
        try:
            _drive(ex, jobs, plans, len(req.seeds), progress, on_point)
        except KeyboardInterrupt:
            progress.write(f"interrupted: cancelling {ex.running()} running job(s)")
            ex.cancel()
            _mark_killed(tracker, plans, started_ms)
            raise
        finally:
            progress.close()
        if tracker is not None:  # concurrent seeds may each have written a partial summary
            for plan in plans:
                if plan.summary and any(s.status == "ran" for s in plan.seeds.values()):
                    tracker.update_parent_summary(plan.summary["parent_run_id"])
        return [_point_result(plan, req.seeds) for plan in plans]
    finally:
        if own:
            ex.close()


def validate_points(req: SweepRequest, name: str, points: list[dict[str, str]]) -> None:
    """Check every (strategy, point)'s settings as ``avbench run`` types them (known keys, types,
    declared ranges, the dataset knobs' own checks) and refuse the whole sweep in one line if any is
    bad: a grid with a typo must not spend an hour training its good points first. A combination a
    strategy refuses when it is built (``s_dim`` not divisible by the heads) still fails only its point."""
    import dataclasses


    card = registry.load_dataset(req.dataset) if req.dataset is not None else None
    knob_fields = {f.name for f in dataclasses.fields(card.Knobs)} if card is not None else set()
    recipe_fields = {f.name for f in dataclasses.fields(Recipe)}
    bad = []
    for strategy in req.strategies:
        cls = registry.load_strategy(strategy)
        fields = {f.name for f in dataclasses.fields(cls.Config)}
        for point in points:
            try:
                s_over, r_over, d_over = runner.split_overrides({**req.overrides, **point}, fields, recipe_fields,
                                                                knob_fields)
                cfgmod.apply_overrides(cls.Config(), s_over, where=f"strategy '{cls.name}'")
                cfgmod.apply_overrides(Recipe(), r_over, where="the recipe")
                if card is not None:
                    knobs = cfgmod.apply_overrides(card.Knobs(), d_over, where=f"dataset '{card.name}'")
                    check = getattr(card, "check_knobs", None)
                    if check is not None:
                        check(knobs)
            except UserError as e:
                bad.append(f"{strategy} {format_point(point) or '(no grid)'}: {str(e).splitlines()[0]}")
    if bad:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise UserError(f"{len(bad)} of {len(points) * len(req.strategies)} sweep point(s) are invalid, nothing "
                        f"was trained: {bad[0]}{more}")


def run_seed(rr: Any) -> dict[str, Any]:
    """A job: one (point, seed) through ``runner.run``; returns that seed's record (picklable)."""

    summary = runner.run(rr)
    s = summary["seeds"][0]
    return {"seed": s["seed"], "run_id": s["run_id"], "skipped": bool(s["skipped"]),
            "metrics": {k: float(v) for k, v in s["metrics"].items()}, "parent_run_id": summary["parent_run_id"]}


def _request(req: SweepRequest, name: str, strategy: str, point: dict[str, str], tag_value: str) -> Any:
    """The point's RunRequest (no seeds yet). A grid-less sweep's is exactly ``avbench run``'s (no sweep
    tags, so the same run name and a main row); ``--tuned`` goes under ``--set`` and the point."""

    tags = {} if req.grid.empty else {TAG_CREATED_BY: f"sweep:{name}", TAG_SWEEP_PREFIX + name: tag_value}
    rr = runner.RunRequest(
        strategy=strategy, dataset=req.dataset, cache=req.cache, seeds=[], epochs=req.epochs,
        overrides={**req.overrides, **point}, results_dir=req.results_dir, device=req.device,
        cache_root=req.cache_root, progress=False, skip_finished=True, save_model=req.save_model,
        recipe_name=req.recipe_name, preset=req.preset, extra_tags=tags)
    if req.tuned:

        rr = apply_tuned(rr, "auto")
    return rr


def _plan(req: SweepRequest, name: str, strategy: str, point: dict[str, str]) -> _Plan:
    """Resolve the point and make its parent run, in the driver (``runner.run`` with no seeds)."""

    tag_value = json.dumps({"point": point, "x": req.grid.x_key, "axes": req.grid.swept_keys}, sort_keys=True)
    plan = _Plan(strategy, point, tag_value)
    try:
        plan.base = _request(req, name, strategy, point, tag_value)
        found = _existing_parent(plan.base, name, req.seeds)
        if found is not None:  # finished elsewhere: read it, never touch it (no new end time, no tag)
            plan.summary, plan.created = found, False
            return plan
        plan.summary = runner.run(plan.base)
        plan.created = _created_here(plan.summary, name, req)
    except KeyboardInterrupt:
        raise
    except Exception as e:  # noqa: BLE001 -- one bad point must not stop the sweep
        plan.error = describe_error(e)
        plan.seeds = {s: SeedResult(s, "failed", error=plan.error) for s in req.seeds}
        return plan
    return plan


def _jobs(req: SweepRequest, plans: list[_Plan], tracker: Any) -> list[Any]:
    """One job per seed without a finished child; finished seeds are recorded as skipped."""

    jobs = []
    for i, plan in enumerate(plans):
        if plan.error:
            continue
        parent = plan.summary["parent_run_id"]
        finished = {r.data.tags.get("avbench.seed"): r for r in tracker.children(parent)}
        for seed in req.seeds:
            done = finished.get(str(seed))
            if done is not None:
                plan.seeds[seed] = SeedResult(seed, "skipped", done.info.run_id,
                                              {metric_name(k): v for k, v in done.data.metrics.items()})
                continue
            rr = dataclasses.replace(plan.base, seeds=[seed])
            jobs.append(Job(key=f"{i}:{seed}", fn=run_seed, args=(rr,),
                            label=" ".join(filter(None, (plan.strategy, format_point(plan.point), f"seed {seed}")))))
    return jobs


def _drive(ex: Any, jobs: list[Any], plans: list[_Plan], n_seeds: int, progress: Any,
           on_point: Callable[[int, int, PointResult], None] | None) -> None:
    """Submit every job, record each outcome as it arrives; ``on_point`` when a point's seeds are all in."""

    labels = {j.key: j.label for j in jobs}
    for job in jobs:
        ex.submit(job)
    points_done = 0
    while ex.outstanding():
        outcomes = ex.wait(timeout=1.0)
        for o in outcomes:
            i, seed = (int(x) for x in o.key.split(":"))
            plan = plans[i]
            if o.ok:
                v = o.value
                plan.seeds[seed] = SeedResult(seed, "skipped" if v["skipped"] else "ran", v["run_id"],
                                              {metric_name(k): x for k, x in v["metrics"].items()}, seconds=o.seconds)
            else:
                plan.seeds[seed] = SeedResult(seed, "cancelled" if o.cancelled else "failed", error=o.error,
                                              seconds=o.seconds)
            progress.running = ex.running()
            progress.finished(o.seconds if o.ok else 0.0, failed=not o.ok,
                              line=_job_line(progress, labels[o.key], plan.seeds[seed], plan))
            if on_point is not None and len(plan.seeds) == n_seeds:
                points_done += 1
                on_point(points_done, len(plans), _point_result(plan, sorted(plan.seeds)))
        progress.set_running(ex.running())


def _job_line(progress: Any, label: str, s: SeedResult, plan: _Plan) -> str:
    head = f"[{progress.done + 1}/{progress.total}] {label}: {s.status}"  # this job counted
    if s.status in ("failed", "cancelled"):
        return f"{head}: {s.error}"
    primary = (plan.summary or {}).get("primary_metric", "")
    fused = s.metrics.get(f"fusion/{primary}")
    return head + f" in {s.seconds:.1f} s" + (f" (fusion {primary} {100 * fused:.2f})" if fused is not None else "")


def _point_result(plan: _Plan, seeds: list[int]) -> PointResult:

    per_seed = [plan.seeds[s] for s in seeds if s in plan.seeds]
    statuses = {s.status for s in per_seed}
    bad = [s for s in per_seed if s.status in ("failed", "cancelled")]
    if plan.error:
        return PointResult(plan.strategy, plan.point, "failed", error=plan.error, seeds=per_seed)
    ok = [s for s in per_seed if s.status in ("ran", "skipped")]
    keys = sorted({k for s in ok for k in s.metrics})
    summary = {**plan.summary, "seeds": [dataclasses.asdict(s) for s in per_seed],
               "summary": {k: mean_std_ci([s.metrics[k] for s in ok if k in s.metrics]) for k in keys}}
    if bad:
        errors = "; ".join(f"seed {s.seed}: {s.error}" for s in bad)
        return PointResult(plan.strategy, plan.point, "failed", summary, errors, per_seed)
    status = "skipped" if statuses == {"skipped"} else ("partial" if "skipped" in statuses else "ran")
    return PointResult(plan.strategy, plan.point, status, summary, seeds=per_seed)


def _tracker(results_dir: str) -> Any:

    return Tracker(results_dir)


def _mark_killed(tracker: Any, plans: list[_Plan], since_ms: int) -> None:
    """Runs a cancelled job could not close itself (a worker killed hard) are marked KILLED here."""
    if tracker is None:
        return
    for plan in plans:
        if not plan.summary:
            continue
        for run in tracker.children(plan.summary["parent_run_id"], finished_only=False):
            if run.info.status == "RUNNING" and run.info.start_time >= since_ms:
                tracker.finish(run.info.run_id, "KILLED")


def _existing_parent(rr: Any, name: str, seeds: list[int]) -> dict[str, Any] | None:
    """The point's parent when it exists, was not created by this sweep and has every seed finished: a
    summary of it read from MLflow (nothing written). None otherwise (``runner.run`` then finds or
    makes the parent as usual)."""

    r = runner.resolve(rr)
    plan = runner.make_plan(rr, r)
    db = Path(rr.results_dir) / "mlflow.db"
    if not os.environ.get("MLFLOW_TRACKING_URI") and not db.exists():
        return None  # no store yet: nothing can exist (and none is created here)
    tracker = Tracker(rr.results_dir)
    parent_id = tracker.find_parent(r.dataset, plan.group)
    if not parent_id:
        return None
    parent = tracker.client.get_run(parent_id)
    if parent.data.tags.get(TAG_CREATED_BY) == f"sweep:{name}":
        return None  # ours: the sweep may update it
    done = {c.data.tags.get("avbench.seed") for c in tracker.children(parent_id)}
    if not all(str(s) in done for s in seeds):
        return None
    return {"strategy": r.strategy_cls.name, "dataset": r.dataset, "parent_run_id": parent_id, "group": plan.group,
            "protocol": rr.protocol, "primary_metric": plan.primary, "config": plan.cfg_dict,
            "recipe": plan.recipe_dict, "results_dir": str(Path(rr.results_dir).resolve())}


def _created_here(summary: dict[str, Any], name: str, req: SweepRequest) -> bool:
    """Whether the parent ``runner.run`` returned carries this sweep's creation tag."""
    if req.grid.empty or not summary.get("parent_run_id"):
        return False
    tracker = _tracker(req.results_dir)
    return tracker.client.get_run(summary["parent_run_id"]).data.tags.get(TAG_CREATED_BY) == f"sweep:{name}"


def _record_members(tracker: Any, name: str, plans: list[_Plan]) -> None:
    """Points whose parent the sweep did not create are recorded on the sweep's own record run (one per
    dataset and sweep name), never on that parent: a sweep modifies only runs it created."""
    by_dataset: dict[str, list[_Plan]] = {}
    for plan in plans:
        if plan.summary and plan.summary.get("parent_run_id") and not plan.created:
            by_dataset.setdefault(plan.summary["dataset"], []).append(plan)
    for dataset, members in by_dataset.items():
        exp = tracker.experiment_id(dataset)
        found = tracker.client.search_runs(
            [exp], filter_string=f"tags.`{TAG_KIND}` = 'sweep' and tags.`{TAG_SWEEP_NAME}` = '{name}'", max_results=1)
        if found:
            run_id = found[0].info.run_id
        else:

            run_id = tracker.client.create_run(exp, run_name=f"sweep:{name}", tags={
                TAG_KIND: "sweep", TAG_SWEEP_NAME: name, TAG_CREATED_BY: f"sweep:{name}",
                "avbench.dataset": dataset, **source_tags()}).info.run_id
            tracker.client.set_terminated(run_id, "FINISHED")
        for plan in members:
            tracker.client.set_tag(run_id, TAG_MEMBER_PREFIX + plan.summary["parent_run_id"], plan.tag_value)
