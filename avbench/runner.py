"""``avbench run`` as a library call: resolve strategy, data and config, train every seed, log, summarise.

Everything that can be wrong with the user's input is checked before anything is written to MLflow,
so a bad command leaves no half-made runs behind. ``avbench sweep`` calls ``run`` once per grid point.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import json
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from avbench import config as cfgmod
from avbench import config_file, fsguard, log, registry, results
from avbench.errors import UserError
from avbench.paths import cache_root as default_cache_root

PRIMARY = {"multiclass": "acc", "multilabel": "mAP"}


@dataclass
class RunRequest:
    strategy: str
    dataset: str | None = None
    cache: str | None = None
    seeds: list[int] = field(default_factory=lambda: [0])
    epochs: int | None = None
    overrides: dict[str, str] = field(default_factory=dict)
    results_dir: str = "results"
    device: str = "cpu"
    protocol: str = "standard"
    train_modality: str | None = None
    resume: bool = False
    cache_root: str | None = None
    progress: bool = True
    skip_finished: bool = False
    save_model: bool = True
    run_name: str | None = None
    extra_tags: dict[str, str] = field(default_factory=dict)
    force: bool = False  # rerun seeds that already finished (their earlier runs are deleted)
    strict_tracking: bool = False  # exit non-zero when MLflow cannot be reached (results stay local)
    preset: str | None = None  # a named configuration of the strategy (Strategy.presets), before --set
    recipe_name: str = "default"  # --recipe: named Recipe overrides (avbench.train.recipe.RECIPES), before --set
    init_from: str | None = None  # --init-from: weights to start from (avbench.authors_checkpoint)


@dataclass
class Resolved:
    strategy_cls: type
    strategy_cfg: Any
    recipe: Any
    cache: Any
    card: Any
    dataset: str
    knobs: Any


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip() != ""]
    except ValueError:
        raise UserError(f"--seeds expects comma-separated integers, got '{text}'") from None
    if not seeds:
        raise UserError("--seeds is empty")
    if len(set(seeds)) != len(seeds):
        raise UserError(f"--seeds has duplicates: '{text}'")
    return seeds


def split_overrides(overrides: dict[str, str], strategy_fields: set[str], recipe_fields: set[str],
                    knob_fields: set[str]) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """Route ``--set`` keys to the strategy config, the recipe or the dataset knobs.

    ``model.``/``train.``/``data.`` prefixes are explicit; a bare key goes where it is defined and
    must be defined in exactly one place.
    """
    s, r, d = {}, {}, {}
    targets = {"model": (s, strategy_fields, "the strategy config"), "train": (r, recipe_fields, "the recipe"),
               "data": (d, knob_fields, "the dataset knobs")}
    for key, value in overrides.items():
        prefix, _, rest = key.partition(".")
        if rest and prefix in targets:
            out, fields, where = targets[prefix]
            if rest not in fields:
                raise UserError(cfgmod.unknown_key_message(rest, fields, where))
            out[rest] = value
            continue
        homes = [p for p, (_, fields, _) in targets.items() if key in fields]
        if len(homes) > 1:
            raise UserError(f"--set {key} is ambiguous ({' and '.join(homes)} both define it); "
                            f"write {' or '.join(f'{h}.{key}' for h in homes)}")
        if not homes:
            shown = {k: k for k in (*strategy_fields, *recipe_fields)} | {k: f"data.{k}" for k in knob_fields}
            close = difflib.get_close_matches(key, list(shown), n=1)
            hint = f"; did you mean '{shown[close[0]]}'?" if close else f"; known keys: {', '.join(sorted(shown.values()))}"
            raise UserError(f"--set {key}: unknown key for this strategy, recipe or dataset{hint}")
        targets[homes[0]][0][key] = value
    return s, r, d


def resolve(req: RunRequest) -> Resolved:
    check_request(req)
    from avbench.cache.verify import checked_cache
    from avbench.train.recipe import Recipe, recipe_overrides

    if (req.dataset is None) == (req.cache is None):
        raise UserError("give exactly one of --dataset NAME or --cache PATH")
    strategy_cls = registry.load_strategy(req.strategy)
    card = None
    if req.dataset is not None:
        card = registry.load_dataset(req.dataset)
    knob_fields = {f.name for f in dataclasses.fields(card.Knobs)} if card is not None else set()
    s_over, r_over, d_over = split_overrides(
        req.overrides, {f.name for f in dataclasses.fields(strategy_cls.Config)},
        {f.name for f in dataclasses.fields(Recipe)}, knob_fields)
    if req.cache is not None:
        if d_over:
            raise UserError("data.* settings apply to --dataset, not to an existing --cache")
        cache = checked_cache(req.cache)  # every corruption refused before an MLflow run exists
        try:
            card = registry.load_dataset(cache.manifest.dataset)
        except UserError:
            card = None  # a dataset without a card: no dataset-specific defaults
        knobs = None
    else:
        knobs = cfgmod.apply_overrides(card.Knobs(), d_over, where=f"dataset '{card.name}'")
        root = default_cache_root(req.cache_root)
        with fsguard.writing(root):  # a read-only or full cache root: one line naming it
            cache = checked_cache(card.prepare(root, knobs, progress=req.progress))
    dataset = cache.manifest.dataset
    recipe = cfgmod.apply_overrides(Recipe(), card.recipe_defaults if card else {}, where="the recipe")
    recipe = cfgmod.apply_overrides(recipe, recipe_overrides(req.recipe_name), where=f"recipe '{req.recipe_name}'")
    recipe = cfgmod.apply_overrides(recipe, r_over, where="the recipe")
    if req.epochs is not None:
        recipe = cfgmod.apply_overrides(recipe, {"epochs": req.epochs}, where="--epochs")
    fields = {f.name for f in dataclasses.fields(strategy_cls.Config)}
    cfg = strategy_cls.Config()
    if card is not None:
        cfg = cfgmod.apply_overrides(cfg, card.strategy_overrides(strategy_cls.name, fields), where="the card")
    cfg = cfgmod.apply_overrides(cfg, registry.preset(strategy_cls, req.preset), where=f"preset '{req.preset}'")
    cfg = cfgmod.apply_overrides(cfg, s_over, where=f"strategy '{strategy_cls.name}'")
    strategy_cls.check_compatible(cfg, cache.features, cache.task)
    if req.init_from:  # a file that does not fit fails here, before anything is logged
        from avbench.authors_checkpoint import check_init

        check_init(req.init_from, strategy_cls, cfg, cache.features, cache.task)
    if req.protocol == "cross-modal" and not strategy_cls.capabilities.cross_modal:
        raise UserError(f"{strategy_cls.name} cannot run the cross-modal protocol: "
                        f"{strategy_cls.capabilities.why_not('cross_modal')}")
    if req.protocol == "cross-modal" and req.train_modality not in ("audio", "video"):
        raise UserError("--protocol cross-modal needs --train-modality audio or video")
    return Resolved(strategy_cls, cfg, recipe, cache, card, dataset, knobs)


def check_request(req: RunRequest) -> None:
    """What can be checked from the request alone, before a cache is made or a process group joined."""
    if any(s < 0 for s in req.seeds):
        raise UserError(f"--seeds must be non-negative, got {','.join(map(str, req.seeds))}")
    if req.protocol not in ("standard", "cross-modal"):
        raise UserError(f"unknown --protocol '{req.protocol}' (standard or cross-modal)")
    if req.train_modality is not None and req.protocol != "cross-modal":
        raise UserError(f"--train-modality {req.train_modality} only applies with --protocol cross-modal")
    if req.epochs is not None and req.epochs < 1:
        raise UserError("--epochs must be at least 1")
    check_device(req.device)


def check_device(spec: str) -> None:
    """The device exists on this machine (cpu, cuda, cuda:N, mps)."""
    import torch

    try:
        dev = torch.device(spec)
    except (RuntimeError, ValueError):
        raise UserError(f"--device {spec}: not a device (cpu, cuda, cuda:N or mps)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {spec}: CUDA is not available on this machine")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UserError(f"--device {spec}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise UserError(f"--device {spec}: MPS is not available on this machine")
    elif dev.type != "cpu":
        raise UserError(f"--device {spec}: unsupported device type (cpu, cuda, cuda:N or mps)")


def check_trains(r: Resolved, world: int = 1) -> None:
    """A run that would train zero steps is an error before it starts, naming why."""
    rec = r.recipe
    rows = int(r.cache.train_split().present.any(axis=1).sum())
    if rows == 0:
        raise UserError(f"{r.cache.root}: the train split has no usable clips (zero training steps)")
    if rec.drop_last and rec.batch_size > rows:
        raise UserError(f"batch size {rec.batch_size} is larger than the {rows} training clips and drop_last is "
                        f"on: zero training steps (lower train.batch_size or set train.drop_last=false)")
    if world > 1 and rec.batch_size < world:
        raise UserError(f"batch size {rec.batch_size} is smaller than the {world} processes")


def run(req: RunRequest) -> dict[str, Any]:
    """Train and evaluate every seed; return the summary (also what ``--output-json`` writes)."""
    from avbench.train import distributed

    check_request(req)
    # Under torchrun (WORLD_SIZE > 1) join the process group; rank 0 resolves first so a generated
    # dataset cache is written once, and only rank 0 talks to MLflow.
    ctx = distributed.setup(req.device)
    try:
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


def make_plan(req: RunRequest, r: Resolved) -> Plan:
    from avbench.authors_checkpoint import init_key
    from avbench.tracking import TAG_STRATEGY

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
    tags = {TAG_STRATEGY: r.strategy_cls.name, "avbench.protocol": req.protocol, **req.extra_tags}
    run_config = config_file.resolved_run_config(req, r)  # written beside every result (config.yaml)
    name = req.run_name or sweep_run_name(req.extra_tags, r.strategy_cls.name) or r.strategy_cls.name
    return Plan(name, group, primary, params, tags, cfg_dict, recipe_dict, run_config)


def sweep_run_name(tags: dict[str, str], strategy: str) -> str | None:
    """A sweep's parents are named after it: ``<sweep>: <strategy> <point>`` (from the sweep's tags)."""
    created = tags.get("avbench.created_by", "")
    if not created.startswith("sweep:"):
        return None
    sweep = created[len("sweep:"):]
    try:
        point = json.loads(tags.get(f"avbench.sweep.{sweep}", "{}")).get("point", {})
    except (json.JSONDecodeError, AttributeError):
        point = {}
    return f"{sweep}: {strategy}" + (" " + ",".join(f"{k}={v}" for k, v in point.items()) if point else "")


def _cache_info(r: Resolved) -> dict[str, Any]:
    m = r.cache.manifest
    return {"name": r.dataset, "key": m.key, "path": str(r.cache.root),
            "profile": {"task": m.task, "classes": m.num_classes, "steps": m.num_steps, "audio_dim": m.audio_dim,
                        "video_dim": m.video_dim, "splits": {k: v.get("size") for k, v in m.splits.items()}}}


def _run(req: RunRequest, r: Resolved, rank: int, world: int, device: Any) -> dict[str, Any]:
    from avbench.record import GroupRecord
    from avbench.tracking import Resilient

    plan = make_plan(req, r)
    lead = rank == 0
    if lead:
        fsguard.check_dir(req.results_dir, "--results-dir")
    track = open_tracking(req) if lead else Resilient(None, "not rank 0")
    group = GroupRecord(req.results_dir, plan.group) if lead else None
    parent = _begin_parent(track, group, plan, r)
    per_seed: list[dict[str, Any]] = []
    skipped_reasons: dict[str, str] = {}
    status = "FAILED"
    try:
        for seed in req.seeds:
            out = _run_seed(req, r, plan, track, group, parent, seed, rank, world, device)
            skipped_reasons.update(out.pop("skipped_columns", {}))
            per_seed.append(out)
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        if parent:
            from avbench.tracking import Tracker

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


def open_tracking(req: RunRequest) -> Any:
    """MLflow, or "down" with a reason (said in one line now; the run goes on locally)."""
    from avbench.publish import reap
    from avbench.tracking import Resilient

    track = Resilient.open(req.results_dir)
    if track.up:
        reap(req.results_dir, track)  # runs of dead processes: KILLED
    elif req.strict_tracking:
        raise UserError(f"{track.down}; not starting (--strict-tracking)")
    else:
        reap(req.results_dir)
        print(f"avbench: {track.down}; training goes on, results are kept in {req.results_dir}/runs", file=sys.stderr)
    return track


def _tracking_outcome(req: RunRequest, track: Any, plan: Plan, raise_strict: bool) -> None:
    if track.up:
        return
    where = Path(req.results_dir) / "runs" / plan.group
    line = (f"{track.down}; results are complete in {where}; send them with: "
            f"avbench sync --results-dir {req.results_dir}")
    if req.strict_tracking and raise_strict:
        raise UserError(line)
    print(f"avbench: {line}", file=sys.stderr)


def _begin_parent(track: Any, group: Any, plan: Plan, r: Resolved) -> str | None:
    from avbench.tracking import Tracker

    if group is not None:
        group.write_info({"dataset": r.dataset, "name": plan.name, "params": plan.params, "tags": plan.tags,
                          "cache": _cache_info(r)})
    parent = track.call(Tracker.parent_run, r.dataset, plan.group, plan.name, plan.params, plan.tags)
    if parent:
        track.call(Tracker.begin, parent)
        info = _cache_info(r)
        track.call(Tracker.log_dataset, parent, info["name"], info["key"], info["path"], info["profile"])
    return parent


def _finished_seed(req: RunRequest, track: Any, group: Any, rec: Any, parent: str | None,
                   seed: int) -> dict[str, Any] | None:
    """The seed's finished result, if it has one (local record first, then MLflow). A local result that
    MLflow never received (an outage, or a cancel between the two) is sent now, so it is not lost there."""
    from avbench.publish import publish_seed
    from avbench.tracking import Tracker

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


def _forget_seed(track: Any, rec: Any, parent: str | None, seed: int) -> None:
    """``--force``: the seed's earlier runs are deleted (MLflow) and its record cleared."""
    if parent:
        track.call(lambda t: [t.client.delete_run(x.info.run_id) for x in t.seed_runs(parent, seed)])
    if rec is not None:
        rec.reset()


def _open_child(req: RunRequest, track: Any, rec: Any, parent: str | None, seed: int, plan: Plan,
                params: dict[str, Any]) -> str | None:
    """``--resume`` continues the seed's unfinished child; otherwise a new child."""
    import uuid

    from avbench.tracking import TAG_RECORD, Tracker

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


def _run_seed(req: RunRequest, r: Resolved, plan: Plan, track: Any, group: Any, parent: str | None, seed: int,
              rank: int, world: int, device: Any) -> dict[str, Any]:
    from avbench.hardware import resolve_precision
    from avbench.tracking import process_tag
    from avbench.train.engine import Engine, set_seed

    rec = group.seed(seed) if group is not None else None
    done = _finished_seed(req, track, group, rec, parent, seed)
    if world > 1:  # rank 0 decides for all, or the ranks would train different seeds
        from avbench.train import distributed

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
        from avbench.authors_checkpoint import init_from

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
            _save_local(rec, result, metrics, fit, r, strategy, req.save_model, plan.run_config)
    except KeyboardInterrupt:
        _end_seed(track, group, rec, "KILLED")
        raise
    except BaseException:
        _end_seed(track, group, rec, "FAILED")
        raise
    _end_seed(track, group, rec, "FINISHED")
    return {"seed": seed, "run_id": rec.data.get("child_run_id") if rec else None, "skipped": False,
            "metrics": metrics, "skipped_columns": fit.final.skipped}


def _epoch_logger(req: RunRequest, track: Any, rec: Any, child: str | None, seed: int, primary: str) -> Any:
    """Each epoch: the local history first, then MLflow (only in order: a gap is filled at the end)."""
    from avbench.tracking import Tracker

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


def _end_seed(track: Any, group: Any, rec: Any, status: str) -> None:
    """Mark the record, then send it (a no-op when tracking is down: ``avbench sync`` does it later)."""
    from avbench.publish import publish_seed

    if rec is None:
        return
    rec.update(status=status, ended=time.time())
    if rec.data.get("child_run_id") or status == "FINISHED":
        track.call(publish_seed, group, rec)


def _seed_result(req: RunRequest, r: Resolved, plan: Plan, seed: int, fit: Any, engine: Any, strategy: Any,
                 device: Any, world: int, wall: float, precision: str, why: str) -> tuple[dict[str, float], dict[str, Any]]:
    from avbench.train.engine import describe_device, environment

    final = fit.final
    metrics = dict(final.metrics)
    metrics.update({"train_clips_per_s": fit.train_clips_per_s, "eval_clips_per_s": fit.eval_clips_per_s,
                    "wall_seconds": wall, "parameters": float(strategy.num_parameters())})
    if fit.validation:  # the validation curve and the convergence flag (avbench/train/schedule.py)
        metrics["converged"] = float(fit.validation["converged"])
    result = {"strategy": r.strategy_cls.name, "strategy_target": req.strategy, "dataset": r.dataset,
              "seed": seed, "metrics": metrics, "skipped": final.skipped, "config": plan.cfg_dict,
              "recipe": plan.recipe_dict, "protocol": req.protocol, "train_modality": req.train_modality,
              "cache": {"path": str(r.cache.root), "key": r.cache.manifest.key,
                        "extractor": r.cache.manifest.extractor},
              "throughput": {"train_clips_per_s": fit.train_clips_per_s, "eval_clips_per_s": fit.eval_clips_per_s,
                             "device": describe_device(device), "precision": precision, "precision_reason": why,
                             "world_size": world},
              "history": fit.history, "validation": fit.validation, "environment": environment(), "resumed_from_epoch": fit.resumed_from_epoch,
              "excluded_rows": engine.excluded}
    result = results.finalize("seed_result", result)  # the results contract (avbench/results.py)
    return metrics, result


def _save_local(rec: Any, result: dict[str, Any], metrics: dict[str, float], fit: Any, r: Resolved, strategy: Any,
                save_model: bool, run_config: dict[str, Any]) -> None:
    """The record of truth, complete before MLflow hears of it; free space checked first."""
    final = fit.final
    need = sum(v.size * 2 for v in final.logits.values()) + sum(v.size * 2 for v in final.heads.values())
    if save_model:
        need += sum(p.numel() * p.element_size() for p in strategy.state_dict().values()
                    if hasattr(p, "numel"))  # extra state (e.g. optimizer moments) is not a tensor
    fsguard.check_space(rec.dir, need + (1 << 20), "results")
    rec.write_history(fit.history)
    ids = r.cache.test_split().ids
    _write_predictions(rec.path("predictions.npz"), final,
                       [ids[i] for i in final.rows] if final.rows is not None else ids)
    if save_model:
        _write_model(rec.path("model.pt"), strategy)
    with fsguard.writing(rec.path("config.yaml")):
        config_file.write_yaml(rec.path("config.yaml"), run_config)
    rec.write_result(result)
    rec.update(metrics=metrics)


def _print_epoch(seed: int, epoch: int, row: dict[str, float], primary: str, bars: bool = True) -> None:
    from tqdm.auto import tqdm

    parts = [f"seed {seed} epoch {epoch + 1}", f"loss {row.get('train/loss', float('nan')):.4f}",
             f"{row.get('train_clips_per_s', float('nan')):.0f} clips/s"]
    parts += [f"{c} {primary} {100 * row[f'{c}/{primary}']:.2f}" for c in ("audio", "video", "fusion")
              if f"{c}/{primary}" in row]
    tqdm.write("  ".join(parts)) if bars else log.get("run").info("  ".join(parts))


def summarize(per_seed: list[dict[str, Any]], task: str) -> dict[str, dict[str, float]]:
    from avbench.metrics.stats import mean_std_ci
    from avbench.tracking import metric_name

    keys = sorted({k for s in per_seed for k in s["metrics"]})
    out = {}
    for k in keys:
        vals = [s["metrics"].get(k, s["metrics"].get(metric_name(k))) for s in per_seed]
        out[k] = mean_std_ci([v for v in vals if v is not None])
    return out


def _write_predictions(path: Path, final: Any, ids: list[str]) -> None:
    """Per-clip logits for paired tests and analyses (seed-matched bootstrap in reports)."""
    arrays = {f"logits_{c}": v.astype(np.float16) for c, v in final.logits.items()}
    arrays.update({f"head_{k}": v.astype(np.float16) for k, v in final.heads.items()})
    with fsguard.atomic_write(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, labels=final.labels.astype(np.uint8), ids=np.array(ids), **arrays)


def _write_model(path: Path, strategy: Any) -> None:
    import torch

    with fsguard.atomic_write(path) as tmp:
        torch.save({"state_dict": strategy.state_dict(), "config": strategy.config_dict(), "name": strategy.name}, tmp)


def write_json(path: str | Path, data: Any) -> None:
    from avbench.cache.format import write_json_atomic

    p = Path(path)
    with fsguard.writing(p):
        p.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(p, json.loads(json.dumps(data, default=str)))
