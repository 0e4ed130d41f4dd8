"""One seed of a run: its MLflow child and local record, the engine's fit, and its result.

A seed ends FINISHED, FAILED or KILLED, never RUNNING: the local record (avbench/record.py) is the
record of truth, written before MLflow hears of anything, and sent with ``publish_seed`` (a no-op
while tracking is down; ``avbench sync`` sends it later). A seed that already finished is skipped
(``--force`` reruns it) and ``--resume`` continues an unfinished one from its checkpoint.
"""

from __future__ import annotations

import math
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from tqdm.auto import tqdm

from avbench import log, results
from avbench import profile as prof
from avbench.api import Strategy
from avbench.artifacts import save_local
from avbench.authors_checkpoint import init_from
from avbench.hardware import resolve_precision
from avbench.publish import publish_seed
from avbench.record import GroupRecord, SeedRecord
from avbench.resolve import Resolved, RunRequest
from avbench.tracking import TAG_RECORD, Resilient, Tracker, process_tag
from avbench.train import distributed
from avbench.train.engine import Engine, FitResult
from avbench.train.process import describe_device, set_seed


@dataclass
class Plan:
    """What every seed of one run shares: names, the group, params and tags."""

    name: str
    group: str
    primary: str
    params: dict[str, Any]
    tags: dict[str, str]
    cfg_dict: dict[str, Any]
    recipe_dict: dict[str, Any]
    run_config: dict[str, Any]


def run_seed(req: RunRequest, r: Resolved, plan: Plan, track: Resilient, group: GroupRecord | None,
             parent: str | None, seed: int, rank: int, world: int, device: torch.device) -> dict[str, Any]:
    """Train and evaluate one seed (or return its earlier result); ``{"seed", "run_id", "metrics", ...}``."""
    rec = group.seed(seed) if group is not None else None
    done = _finished_seed(req, track, group, rec, parent, seed)
    if world > 1:  # rank 0 decides for all, or the ranks would train different seeds
        done = distributed.all_gather_objects(done)[0]
    if done is not None and not req.force:
        if rank != 0:
            return done
        print(f"avbench: seed {seed} of {plan.name} already finished (run {done['run_id'] or 'local'}); "
              f"skipped (--force reruns it)", file=sys.stderr)
        return done
    if done is not None or (req.force and rec is not None):
        _forget_seed(track, rec, parent, seed)
    set_seed(seed)
    strategy = r.strategy_cls(r.strategy_cfg, r.cache.features, r.cache.task)
    if req.init_from:  # --init-from: the same loader as avbench eval
        init_from(strategy, req.init_from)
    precision, why = resolve_precision(r.recipe.amp, device, announce=rank == 0)  # "auto" -> bf16/fp32, said once
    params = {**plan.params, "seed": seed, "device": str(device), "precision": precision, "precision_reason": why,
              "parameters": strategy.num_parameters()}
    child = _open_child(req, track, rec, parent, seed, plan, params)
    if rec is not None:
        rec.update(status="RUNNING", process=process_tag(), params=params, started=time.time(), sent=False,
                   metrics=None, resumed=req.resume)
    ckpt = Path(req.results_dir) / "checkpoints" / plan.group / f"seed{seed}.pt"
    t0 = time.perf_counter()
    try:  # from here on the seed ends FINISHED, FAILED or KILLED, never RUNNING
        engine = Engine(strategy, r.cache, r.recipe, seed=seed, device=device, protocol=req.protocol,
                        train_modality=req.train_modality, checkpoint_path=ckpt, progress=req.progress,
                        rank=rank, world=world, on_epoch=_epoch_logger(req, track, rec, child, seed, plan.primary))
        fit = engine.fit(resume=req.resume)
        wall = time.perf_counter() - t0
        metrics, result = _seed_result(req, r, plan, seed, fit, engine, strategy, device, world, wall, precision, why)
        if rec is not None:
            with prof.phase("artifacts"):
                save_local(rec, result, metrics, fit, r, strategy, req.save_model, plan.run_config)
    except KeyboardInterrupt:
        _end_seed(track, group, rec, "KILLED")
        raise
    except BaseException:
        _end_seed(track, group, rec, "FAILED")
        raise
    _end_seed(track, group, rec, "FINISHED")
    return {"seed": seed, "run_id": rec.data.get("child_run_id") if rec else None, "skipped": False,
            "metrics": metrics, "skipped_columns": fit.final.skipped}


def _epoch_logger(req: RunRequest, track: Resilient, rec: SeedRecord | None, child: str | None, seed: int,
                  primary: str) -> Callable[[int, dict[str, float]], None]:
    """Each epoch: the local history first, then MLflow (only in order: a gap is filled at the end)."""
    history = [h for h in rec.history] if rec is not None and req.resume else []

    def on_epoch(epoch: int, row: dict[str, float]) -> None:
        if rec is not None:
            history[:] = [h for h in history if h.get("epoch", -1) < epoch] + [dict(row)]
            rec.write_history(history)
            logged = int(rec.data.get("logged_epochs", 0))
            if child and track.up and logged == len(history) - 1:
                track.call(Tracker.log_metrics, child, {k: v for k, v in row.items() if k != "epoch"}, step=epoch)
                if track.up:
                    rec.update(logged_epochs=len(history))
        _print_epoch(seed, epoch, row, primary, bars=req.progress)  # a log line when there are no bars

    return on_epoch


def _end_seed(track: Resilient, group: GroupRecord | None, rec: SeedRecord | None, status: str) -> None:
    """Mark the record, then send it (a no-op when tracking is down: ``avbench sync`` does it later)."""
    if rec is None:
        return
    rec.update(status=status, ended=time.time())
    if rec.data.get("child_run_id") or status == "FINISHED":
        track.call(publish_seed, group, rec)


def diverged_at(history: list[dict[str, Any]]) -> int | None:
    """The first epoch whose training loss was NaN or infinite (a diverged run), else None. A diverged
    run is a result, not a crash: it finishes, its test metrics are computed on whatever the model
    outputs, and ``diverged=1`` marks them (the console says so, the report shows the metric)."""
    for i, row in enumerate(history):
        loss = row.get("train/loss")
        if loss is not None and not math.isfinite(float(loss)):
            return int(row.get("epoch", i))
    return None


def _seed_result(req: RunRequest, r: Resolved, plan: Plan, seed: int, fit: FitResult, engine: Engine,
                 strategy: Strategy, device: torch.device, world: int, wall: float, precision: str,
                 why: str) -> tuple[dict[str, float], dict[str, Any]]:
    final = fit.final
    metrics = dict(final.metrics)
    metrics.update({"train_clips_per_s": fit.train_clips_per_s, "eval_clips_per_s": fit.eval_clips_per_s,
                    "wall_seconds": wall, "parameters": float(strategy.num_parameters())})
    if fit.validation and fit.validation.get("converged") is not None:  # a curve too short records no flag
        metrics["converged"] = float(fit.validation["converged"])
    bad = diverged_at(fit.history)
    metrics["diverged"] = float(bad is not None)
    if bad is not None:
        log.get("run").warning("seed %d diverged: the training loss was not finite from epoch %d; its test metrics "
                               "are marked diverged=1 (lower train.lr or set train.grad_clip)", seed, bad)
    result = {"strategy": r.strategy_cls.name, "strategy_target": req.strategy, "dataset": r.dataset,
              "seed": seed, "metrics": metrics, "skipped": final.skipped, "config": plan.cfg_dict,
              "recipe": plan.recipe_dict, "protocol": req.protocol, "train_modality": req.train_modality,
              "cache": {"path": str(r.cache.root), "key": r.cache.manifest.key,
                        "extractor": r.cache.manifest.extractor},
              "throughput": {"train_clips_per_s": fit.train_clips_per_s, "eval_clips_per_s": fit.eval_clips_per_s,
                             "device": describe_device(device), "precision": precision, "precision_reason": why,
                             "world_size": world},
              "history": fit.history, "validation": fit.validation, "environment": results.environment(), "resumed_from_epoch": fit.resumed_from_epoch,
              "excluded_rows": engine.excluded}
    if prof.active() is not None:  # --profile: the run's phases until this result was made
        result["profile"] = prof.snapshot()
    result = results.finalize("seed_result", result)  # the results contract (avbench/results.py)
    return metrics, result


def _print_epoch(seed: int, epoch: int, row: dict[str, float], primary: str, bars: bool = True) -> None:
    parts = [f"seed {seed} epoch {epoch + 1}", f"loss {row.get('train/loss', float('nan')):.4f}",
             f"{row.get('train_clips_per_s', float('nan')):.0f} clips/s"]
    parts += [f"{c} {primary} {100 * row[f'{c}/{primary}']:.2f}" for c in ("audio", "video", "fusion")
              if f"{c}/{primary}" in row]
    tqdm.write("  ".join(parts)) if bars else log.get("run").info("  ".join(parts))


def _finished_seed(req: RunRequest, track: Resilient, group: GroupRecord | None, rec: SeedRecord | None,
                   parent: str | None,
                   seed: int) -> dict[str, Any] | None:
    """The seed's finished result, if it has one (local record first, then MLflow). A local result that
    MLflow never received (an outage, or a cancel between the two) is sent now, so it is not lost there."""
    if rec is None:
        return None
    if rec.status == "FINISHED":
        if not rec.data.get("sent") and track is not None:
            track.call(publish_seed, group, rec)
        return {"seed": seed, "run_id": rec.data.get("child_run_id"), "skipped": True,
                "metrics": rec.data.get("metrics", {})}
    run_id = track.call(Tracker.finished_seed, parent, seed) if parent else None
    if run_id:
        run = track.call(lambda t: t.client.get_run(run_id))
        return {"seed": seed, "run_id": run_id, "skipped": True, "metrics": dict(run.data.metrics) if run else {}}
    return None


def _forget_seed(track: Resilient, rec: SeedRecord | None, parent: str | None, seed: int) -> None:
    """``--force``: the seed's earlier runs are deleted (MLflow) and its record cleared."""
    if parent:
        track.call(lambda t: [t.client.delete_run(x.info.run_id) for x in t.seed_runs(parent, seed)])
    if rec is not None:
        rec.reset()


def _open_child(req: RunRequest, track: Resilient, rec: SeedRecord | None, parent: str | None, seed: int,
                plan: Plan, params: dict[str, Any]) -> str | None:
    """``--resume`` continues the seed's unfinished child; otherwise a new child."""
    if rec is None or not parent:
        return None
    if req.resume:
        old = rec.data.get("child_run_id") if rec.data.get("tracking_uri") == track.uri else None
        if not old:
            runs = track.call(Tracker.seed_runs, parent, seed) or []
            old = next((x.info.run_id for x in runs if x.info.status != "FINISHED"), None)
        if old and track.call(Tracker.begin, old) is None and track.up:
            rec.update(child_run_id=old, parent_run_id=parent, tracking_uri=track.uri)
            return old
    record_id = uuid.uuid4().hex
    child = track.call(Tracker.start_child, parent, seed, plan.name, params, {**plan.tags, TAG_RECORD: record_id})
    rec.update(child_run_id=child, parent_run_id=parent, record_id=record_id, tracking_uri=track.uri,
               logged_epochs=0, final_logged=False)
    return child
