"""``avbench run`` as a library call: resolve strategy, data and config, train every seed, log, summarise.

Everything that can be wrong with the user's input is checked before anything is written to MLflow,
so a bad command leaves no half-made runs behind. ``avbench sweep`` calls ``run`` once per grid point.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from avbench import config as cfgmod
from avbench import registry
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
    from avbench.cache.reader import FeatureCache
    from avbench.train.recipe import Recipe

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
        cache = FeatureCache(req.cache)
        try:
            card = registry.load_dataset(cache.manifest.dataset)
        except UserError:
            card = None  # a dataset without a card: no dataset-specific defaults
        knobs = None
    else:
        knobs = cfgmod.apply_overrides(card.Knobs(), d_over, where=f"dataset '{card.name}'")
        cache = FeatureCache(card.prepare(default_cache_root(req.cache_root), knobs, progress=req.progress))
    dataset = cache.manifest.dataset
    recipe = cfgmod.apply_overrides(Recipe(), card.recipe_defaults if card else {}, where="the recipe")
    recipe = cfgmod.apply_overrides(recipe, r_over, where="the recipe")
    if req.epochs is not None:
        if req.epochs < 1:
            raise UserError("--epochs must be at least 1")
        recipe = dataclasses.replace(recipe, epochs=req.epochs)
    fields = {f.name for f in dataclasses.fields(strategy_cls.Config)}
    cfg = strategy_cls.Config()
    if card is not None:
        cfg = cfgmod.apply_overrides(cfg, card.strategy_overrides(strategy_cls.name, fields), where="the card")
    cfg = cfgmod.apply_overrides(cfg, s_over, where=f"strategy '{strategy_cls.name}'")
    strategy_cls.check_compatible(cfg, cache.features, cache.task)
    if req.protocol == "cross-modal" and not strategy_cls.capabilities.cross_modal:
        raise UserError(f"{strategy_cls.name} cannot run the cross-modal protocol: "
                        f"{strategy_cls.capabilities.why_not('cross_modal')}")
    if req.protocol not in ("standard", "cross-modal"):
        raise UserError(f"unknown --protocol '{req.protocol}' (standard or cross-modal)")
    if req.protocol == "cross-modal" and req.train_modality not in ("audio", "video"):
        raise UserError("--protocol cross-modal needs --train-modality audio or video")
    if req.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise UserError(f"--device {req.device}: CUDA is not available on this machine")
    return Resolved(strategy_cls, cfg, recipe, cache, card, dataset, knobs)


def run(req: RunRequest) -> dict[str, Any]:
    """Train and evaluate every seed; return the summary (also what ``--output-json`` writes)."""
    import torch

    from avbench.train import distributed

    # Under torchrun (WORLD_SIZE > 1) join the process group; rank 0 resolves first so a generated
    # dataset cache is written once, and only rank 0 talks to MLflow.
    ctx = distributed.setup(req.device)
    try:
        r = distributed.main_first(lambda: resolve(req), ctx)
        return _run(req, r, ctx.rank, ctx.world, ctx.device)
    finally:
        distributed.teardown(ctx)


def _run(req: RunRequest, r: Resolved, rank: int, world: int, device: Any) -> dict[str, Any]:
    import torch

    from avbench.tracking import TAG_STRATEGY, Tracker
    from avbench.train.engine import Engine, describe_device, environment, set_seed

    if world > 1 and r.recipe.batch_size < world:
        raise UserError(f"batch size {r.recipe.batch_size} is smaller than the {world} processes")
    name = req.run_name or r.strategy_cls.name
    cfg_dict = dataclasses.asdict(r.strategy_cfg)
    recipe_dict = dataclasses.asdict(r.recipe)
    primary = PRIMARY[r.cache.manifest.task]
    group = cfgmod.config_hash({"strategy": r.strategy_cls.name, "target": req.strategy}, cfg_dict, recipe_dict,
                               {"cache": r.cache.manifest.key, "dataset": r.dataset, "protocol": req.protocol,
                                "train_modality": req.train_modality})
    params = {"strategy": r.strategy_cls.name, "strategy_target": req.strategy,
              "strategy_origin": registry.strategies.origin(req.strategy), "dataset": r.dataset,
              "cache": str(r.cache.root), "cache_key": r.cache.manifest.key, "protocol": req.protocol,
              "train_modality": req.train_modality or "", "primary_metric": primary, "group": group,
              **{f"model.{k}": v for k, v in cfg_dict.items()}, **{f"train.{k}": v for k, v in recipe_dict.items()}}
    if r.knobs is not None:
        params.update({f"data.{k}": v for k, v in dataclasses.asdict(r.knobs).items()})
    tracker = Tracker(req.results_dir) if rank == 0 else None
    tags = {TAG_STRATEGY: r.strategy_cls.name, "avbench.protocol": req.protocol, **req.extra_tags}
    parent = tracker.parent_run(r.dataset, group, name, params, tags) if tracker else None
    per_seed: list[dict[str, Any]] = []
    skipped_reasons: dict[str, str] = {}
    for seed in req.seeds:
        if tracker and req.skip_finished:
            done = tracker.finished_seed(parent, seed)
            if done:
                per_seed.append({"seed": seed, "run_id": done, "skipped": True,
                                 "metrics": tracker.client.get_run(done).data.metrics})
                continue
        set_seed(seed)
        strategy = r.strategy_cls(r.strategy_cfg, r.cache.features, r.cache.task)
        child = tracker.start_child(parent, seed, name, {**params, "seed": seed, "device": str(device),
                                                          "precision": r.recipe.amp,
                                                          "parameters": strategy.num_parameters()}, tags) if tracker else None

        def on_epoch(epoch: int, row: dict[str, float], child=child, seed=seed) -> None:
            if tracker:
                tracker.log_metrics(child, {k: v for k, v in row.items() if k not in ("epoch",)}, step=epoch)
            if req.progress:
                _print_epoch(seed, epoch, row, primary)

        ckpt = Path(req.results_dir) / "checkpoints" / group / f"seed{seed}.pt"
        engine = Engine(strategy, r.cache, r.recipe, seed=seed, device=device, protocol=req.protocol,
                        train_modality=req.train_modality, checkpoint_path=ckpt, progress=req.progress,
                        rank=rank, world=world, on_epoch=on_epoch)
        t0 = time.perf_counter()
        try:
            fit = engine.fit(resume=req.resume)
        except KeyboardInterrupt:
            if tracker:
                tracker.finish(child, "KILLED")
            raise
        except BaseException:
            if tracker:
                tracker.finish(child, "FAILED")
            raise
        wall = time.perf_counter() - t0
        final = fit.final
        skipped_reasons.update(final.skipped)
        metrics = dict(final.metrics)
        metrics.update({"train_clips_per_s": fit.train_clips_per_s, "eval_clips_per_s": fit.eval_clips_per_s,
                        "wall_seconds": wall, "parameters": float(strategy.num_parameters())})
        result = {"strategy": r.strategy_cls.name, "strategy_target": req.strategy, "dataset": r.dataset,
                  "seed": seed, "metrics": metrics, "skipped": final.skipped, "config": cfg_dict,
                  "recipe": recipe_dict, "protocol": req.protocol, "train_modality": req.train_modality,
                  "cache": {"path": str(r.cache.root), "key": r.cache.manifest.key,
                            "extractor": r.cache.manifest.extractor},
                  "throughput": {"train_clips_per_s": fit.train_clips_per_s, "eval_clips_per_s": fit.eval_clips_per_s,
                                 "device": describe_device(device), "precision": r.recipe.amp,
                                 "world_size": world},
                  "history": fit.history, "environment": environment(), "resumed_from_epoch": fit.resumed_from_epoch,
                  "excluded_rows": engine.excluded}
        if tracker:
            tracker.log_metrics(child, metrics, step=len(fit.history))
            tracker.log_json(child, "result.json", result)
            ids = r.cache.test_split().ids
            _log_predictions(tracker, child, final, [ids[i] for i in final.rows] if final.rows is not None else ids)
            if req.save_model:
                _log_model(tracker, child, strategy)
            tracker.finish(child)
            tracker.update_parent_summary(parent)
        per_seed.append({"seed": seed, "run_id": child, "skipped": False, "metrics": metrics})
    summary = summarize(per_seed, r.cache.manifest.task)
    return {"strategy": r.strategy_cls.name, "dataset": r.dataset, "parent_run_id": parent, "group": group,
            "protocol": req.protocol, "train_modality": req.train_modality, "primary_metric": primary,
            "config": cfg_dict, "recipe": recipe_dict, "seeds": per_seed, "summary": summary,
            "skipped": skipped_reasons, "tracking_uri": tracker.uri if tracker else None}


def _print_epoch(seed: int, epoch: int, row: dict[str, float], primary: str) -> None:
    from tqdm.auto import tqdm

    parts = [f"seed {seed} epoch {epoch + 1}", f"loss {row.get('train/loss', float('nan')):.4f}",
             f"{row.get('train_clips_per_s', float('nan')):.0f} clips/s"]
    parts += [f"{c} {primary} {100 * row[f'{c}/{primary}']:.2f}" for c in ("audio", "video", "fusion")
              if f"{c}/{primary}" in row]
    tqdm.write("  ".join(parts))


def summarize(per_seed: list[dict[str, Any]], task: str) -> dict[str, dict[str, float]]:
    from avbench.metrics.stats import mean_std_ci
    from avbench.tracking import metric_name

    keys = sorted({k for s in per_seed for k in s["metrics"]})
    out = {}
    for k in keys:
        vals = [s["metrics"].get(k, s["metrics"].get(metric_name(k))) for s in per_seed]
        out[k] = mean_std_ci([v for v in vals if v is not None])
    return out


def _log_predictions(tracker: Any, run_id: str, final: Any, ids: list[str]) -> None:
    """Per-clip logits for paired tests and analyses (seed-matched bootstrap in reports)."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "predictions.npz"
        arrays = {f"logits_{c}": v.astype(np.float16) for c, v in final.logits.items()}
        arrays.update({f"head_{k}": v.astype(np.float16) for k, v in final.heads.items()})
        np.savez_compressed(path, labels=final.labels.astype(np.uint8), ids=np.array(ids), **arrays)
        tracker.log_file(run_id, path)


def _log_model(tracker: Any, run_id: str, strategy: Any) -> None:
    import torch

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "model.pt"
        torch.save({"state_dict": strategy.state_dict(), "config": strategy.config_dict(), "name": strategy.name}, path)
        tracker.log_file(run_id, path)


def write_json(path: str | Path, data: Any) -> None:
    from avbench.cache.format import write_json_atomic

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(p, json.loads(json.dumps(data, default=str)))
