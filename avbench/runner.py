"""``avbench run`` as a library call: resolve, train every seed, log, summarise.

The composition of a run: ``resolve`` (avbench/resolve.py) checks the request and makes it concrete
before anything is written; this module joins the process group (under torchrun), opens tracking
(MLflow, or local records only when it is down), makes the run's parent and plan, and trains the
seeds one after another (avbench/seed.py: one seed's child run, engine and result). The files a
seed leaves are written by avbench/artifacts.py. ``avbench sweep`` calls ``run`` once per grid point.

The names of avbench/resolve.py are re-exported here (``runner.RunRequest``, ``runner.resolve``, ...)
because callers have always found them here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from avbench import config as cfgmod
from avbench import config_file, fsguard, registry, results
from avbench import profile as prof
from avbench.api import PRIMARY
from avbench.artifacts import write_json
from avbench.authors_checkpoint import init_key
from avbench.errors import UserError
from avbench.metrics.stats import mean_std_ci
from avbench.publish import reap
from avbench.record import GroupRecord
from avbench.resolve import (
    Resolved,
    RunRequest,
    check_device,
    check_request,
    check_trains,
    parse_seeds,
    resolve,
    split_overrides,
)
from avbench.seed import Plan, run_seed
from avbench.tracking import (
    TAG_CREATED_BY,
    TAG_PROTOCOL,
    TAG_STRATEGY,
    TAG_SWEEP_PREFIX,
    TAG_TEST_EVERY_EPOCH,
    Resilient,
    Tracker,
    metric_name,
)
from avbench.train import distributed

__all__ = ["PRIMARY", "Plan", "Resolved", "RunRequest", "check_device", "check_request", "check_trains",
           "make_plan", "open_tracking", "parse_seeds", "resolve", "run", "split_overrides", "summarize",
           "sweep_run_name", "write_json"]


def run(req: RunRequest) -> dict[str, Any]:
    """Train and evaluate every seed; return the summary (also what ``--output-json`` writes)."""
    check_request(req)
    # Under torchrun (WORLD_SIZE > 1) join the process group; rank 0 resolves first so a generated
    # dataset cache is written once, and only rank 0 talks to MLflow.
    ctx = distributed.setup(req.device)
    try:
        with prof.phase("cache"):  # generation, verification (remembered), open
            r = distributed.main_first(lambda: resolve(req), ctx)
        check_trains(r, ctx.world)
        with _terminate_as_interrupt():
            return _run(req, r, ctx.rank, ctx.world, ctx.device)
    finally:
        distributed.teardown(ctx)


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM (what schedulers send) ends a run like Ctrl-C: seeds and parent end KILLED."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def make_plan(req: RunRequest, r: Resolved) -> Plan:
    """Names, group hash, params and tags every seed of the run shares."""
    cfg_dict = dataclasses.asdict(r.strategy_cfg)
    recipe_dict = dataclasses.asdict(r.recipe)
    primary = PRIMARY[r.cache.manifest.task]
    group = cfgmod.config_hash({"strategy": r.strategy_cls.name, "target": req.strategy}, cfg_dict, recipe_dict,
                               {"cache": r.cache.manifest.key, "dataset": r.dataset, "protocol": req.protocol,
                                "train_modality": req.train_modality,
                                **({"init_from": init_key(req.init_from)} if req.init_from else {})})
    params = {"strategy": r.strategy_cls.name, "strategy_target": req.strategy,
              "strategy_origin": registry.strategies.origin(req.strategy), "dataset": r.dataset,
              "cache": str(r.cache.root), "cache_key": r.cache.manifest.key, "protocol": req.protocol,
              "train_modality": req.train_modality or "", "primary_metric": primary, "group": group,
              **{f"model.{k}": v for k, v in cfg_dict.items()}, **{f"train.{k}": v for k, v in recipe_dict.items()}}
    if r.knobs is not None:
        params.update({f"data.{k}": v for k, v in dataclasses.asdict(r.knobs).items()})
    params.update({"recipe": req.recipe_name, **({"init_from": req.init_from} if req.init_from else {})})
    tags = {TAG_STRATEGY: r.strategy_cls.name, TAG_PROTOCOL: req.protocol, **req.extra_tags}
    if recipe_dict.get("eval_every_epoch"):  # the test split was read during training: say so on the run
        tags[TAG_TEST_EVERY_EPOCH] = "true"
    run_config = config_file.resolved_run_config(req, r)  # written beside every result (config.yaml)
    name = req.run_name or sweep_run_name(req.extra_tags, r.strategy_cls.name) or r.strategy_cls.name
    return Plan(name, group, primary, params, tags, cfg_dict, recipe_dict, run_config)


def sweep_run_name(tags: dict[str, str], strategy: str) -> str | None:
    """A sweep's parents are named after it: ``<sweep>: <strategy> <point>`` (from the sweep's tags)."""
    created = tags.get(TAG_CREATED_BY, "")
    if not created.startswith("sweep:"):
        return None
    sweep = created[len("sweep:"):]
    try:
        point = json.loads(tags.get(f"{TAG_SWEEP_PREFIX}{sweep}", "{}")).get("point", {})
    except (json.JSONDecodeError, AttributeError):
        point = {}
    return f"{sweep}: {strategy}" + (" " + ",".join(f"{k}={v}" for k, v in point.items()) if point else "")


def _cache_info(r: Resolved) -> dict[str, Any]:
    m = r.cache.manifest
    return {"name": r.dataset, "key": m.key, "path": str(r.cache.root),
            "profile": {"task": m.task, "classes": m.num_classes, "steps": m.num_steps, "audio_dim": m.audio_dim,
                        "video_dim": m.video_dim, "splits": {k: v.get("size") for k, v in m.splits.items()}}}


def _run(req: RunRequest, r: Resolved, rank: int, world: int, device: torch.device) -> dict[str, Any]:
    plan = make_plan(req, r)
    lead = rank == 0
    if lead:
        fsguard.check_dir(req.results_dir, "--results-dir")
    with prof.phase("tracking"):
        track = open_tracking(req) if lead else Resilient(None, "not rank 0")
    group = GroupRecord(req.results_dir, plan.group) if lead else None
    parent = _begin_parent(track, group, plan, r)
    per_seed: list[dict[str, Any]] = []
    skipped_reasons: dict[str, str] = {}
    status = "FAILED"
    try:
        for seed in req.seeds:
            out = run_seed(req, r, plan, track, group, parent, seed, rank, world, device)
            skipped_reasons.update(out.pop("skipped_columns", {}))
            per_seed.append(out)
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        if parent:
            track.call(Tracker.finish, parent, status)
        if lead and status == "FINISHED":  # "results are complete" only once they are written (issue 24)
            _tracking_outcome(req, track, plan, raise_strict=True)
    summary = summarize(per_seed, r.cache.manifest.task)
    return results.finalize("run_summary", {
            "strategy": r.strategy_cls.name, "dataset": r.dataset, "parent_run_id": parent, "group": plan.group,
            "protocol": req.protocol, "train_modality": req.train_modality, "primary_metric": plan.primary,
            "config": plan.cfg_dict, "recipe": plan.recipe_dict, "seeds": per_seed, "summary": summary,
            "skipped": skipped_reasons, "tracking_uri": track.uri if track.up else None,
            "results_dir": str(Path(req.results_dir).resolve()),
            "run_config": plan.run_config}, cache_key=r.cache.manifest.key)


def open_tracking(req: RunRequest) -> Resilient:
    """MLflow, or "down" with a reason (said in one line now; the run goes on locally)."""
    track = Resilient.open(req.results_dir)
    if track.up:
        reap(req.results_dir, track)  # runs of dead processes: KILLED
    elif req.strict_tracking:
        raise UserError(f"{track.down}; not starting (--strict-tracking)")
    else:
        reap(req.results_dir)
        print(f"avbench: {track.down}; training goes on, results are kept in {req.results_dir}/runs", file=sys.stderr)
    return track


def _tracking_outcome(req: RunRequest, track: Resilient, plan: Plan, raise_strict: bool) -> None:
    if track.up:
        return
    where = Path(req.results_dir) / "runs" / plan.group
    line = (f"{track.down}; results are complete in {where}; send them with: "
            f"avbench sync --results-dir {req.results_dir}")
    if req.strict_tracking and raise_strict:
        raise UserError(line)
    print(f"avbench: {line}", file=sys.stderr)


def _begin_parent(track: Resilient, group: GroupRecord | None, plan: Plan, r: Resolved) -> str | None:
    if group is not None:
        group.write_info({"dataset": r.dataset, "name": plan.name, "params": plan.params, "tags": plan.tags,
                          "cache": _cache_info(r)})
    parent = track.call(Tracker.parent_run, r.dataset, plan.group, plan.name, plan.params, plan.tags)
    if parent:
        track.call(Tracker.begin, parent)
        info = _cache_info(r)
        track.call(Tracker.log_dataset, parent, info["name"], info["key"], info["path"], info["profile"])
    return parent


def summarize(per_seed: list[dict[str, Any]], task: str) -> dict[str, dict[str, float]]:
    """Mean, std and 95% interval of every metric over the seeds."""
    keys = sorted({k for s in per_seed for k in s["metrics"]})
    out = {}
    for k in keys:
        vals = [s["metrics"].get(k, s["metrics"].get(metric_name(k))) for s in per_seed]
        out[k] = mean_std_ci([v for v in vals if v is not None])
    return out
