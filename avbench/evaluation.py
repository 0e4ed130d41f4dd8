"""Evaluate a strategy on a split without training: ``avbench eval``, and the entry point analyses share.

There is one evaluation code path, ``avbench.train.evaluate`` (the Audio / Video / Fusion columns a
strategy supports, top-1/top-5 accuracy, mAP, mAUC, d', and A<->V retrieval on the test split) on
inputs prepared by ``avbench.train.evaluate.eval_batch`` (the recipe's per-step L2 norm). This
module builds an engine for evaluation only (no split held on the device for training, no validation
hold-out), so ``avbench eval`` of a model trained by ``avbench run`` gives ``run``'s test metrics
exactly, and the same weights give the same numbers wherever they are evaluated.

``avbench eval`` takes avbench's own ``model.pt`` or a paper's released state dict
(``avbench.authors_checkpoint``), logs an MLflow run of kind ``eval`` in the dataset's experiment
(params, metrics, ``result.json``, ``predictions.npz``), and can write the per-clip logits
(``--save-predictions``) and a JSON summary (``--output-json``).
"""

from __future__ import annotations

import dataclasses
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from avbench import registry, results
from avbench.api import PRIMARY, Strategy
from avbench.authors_checkpoint import WeightsFile, load_into, read_weights
from avbench.cache.reader import FeatureCache
from avbench.errors import UserError
from avbench.hardware import resolve_precision
from avbench.resolve import Resolved, RunRequest, resolve
from avbench.tracking import TAG_PROTOCOL, TAG_STRATEGY, Tracker
from avbench.train.data import BatchSource
from avbench.train.engine import Engine
from avbench.train.evaluate import EvalResult
from avbench.train.process import describe_device, set_seed
from avbench.train.recipe import Recipe


@dataclass
class EvalRequest:
    strategy: str
    checkpoint: str
    dataset: str | None = None
    cache: str | None = None
    split: str = "test"
    overrides: dict[str, str] = field(default_factory=dict)
    recipe_name: str = "default"
    preset: str | None = None
    results_dir: str = "results"
    device: str = "cpu"
    cache_root: str | None = None
    save_predictions: str | None = None
    progress: bool = True
    track: bool = True


def evaluate_split(strategy: Strategy, cache: FeatureCache, recipe: Recipe, split: str | None = None, *,
                   device: str | torch.device = "cpu", protocol: str = "standard",
                   progress: bool = False) -> EvalResult:
    """``EvalResult`` of ``strategy`` on ``split`` (default the cache's test split) through the engine.

    The test split gets everything ``run`` reports (retrieval included); another split gets the
    classification columns (its retrieval is recorded as skipped).
    """
    test = cache.test_split_name()
    name = test if split in (None, "test") else split
    # Evaluation only: nothing held on the device for training, every training row kept (no hold-out).
    r = dataclasses.replace(recipe, device_resident="off", validation="off")
    engine = Engine(strategy, cache, r, seed=0, device=device, protocol=protocol, progress=progress)
    if name == test:
        return engine.evaluate(retrieval=True)
    target = cache.split(name)
    rows = np.flatnonzero(target.present.any(axis=1))
    result = engine.evaluate(retrieval=False, on=(BatchSource(target, engine.device, "off"), rows))
    result.skipped.setdefault("retrieval", f"computed on the test split ({test}) only")
    return result


def _overrides(req: EvalRequest, weights: WeightsFile, strategy_cls: type[Strategy]) -> dict[str, str]:
    """An avbench model.pt brings the config it was trained with; ``--set`` goes on top."""
    if weights.kind != "avbench":
        return dict(req.overrides)
    if weights.name and weights.name != strategy_cls.name:
        raise UserError(f"{weights.path}: an avbench {weights.name} model, not {strategy_cls.name}; "
                        f"use --strategy {weights.name}")
    fields = {f.name for f in dataclasses.fields(strategy_cls.Config)}
    return {**{f"model.{k}": v for k, v in weights.config.items() if k in fields}, **req.overrides}


def run_eval(req: EvalRequest) -> dict[str, Any]:
    """Load the weights, evaluate, log, write what was asked; return the summary."""
    weights = read_weights(req.checkpoint)
    strategy_cls = registry.load_strategy(req.strategy)
    rr = RunRequest(strategy=req.strategy, dataset=req.dataset, cache=req.cache,
                    overrides=_overrides(req, weights, strategy_cls), results_dir=req.results_dir,
                    device=req.device, cache_root=req.cache_root, progress=req.progress,
                    recipe_name=req.recipe_name, preset=req.preset)
    r = resolve(rr)
    if req.split not in ("test", *r.cache.split_names, "val"):
        raise UserError(f"--split {req.split}: the cache has {', '.join(r.cache.split_names)}")
    set_seed(0)
    strategy = r.strategy_cls(r.strategy_cfg, r.cache.features, r.cache.task)
    loaded = load_into(strategy, weights)
    final = evaluate_split(strategy, r.cache, r.recipe, req.split, device=req.device, progress=req.progress)
    split_name = r.cache.test_split_name() if req.split == "test" else req.split
    split = r.cache.split(split_name)
    ids = [split.ids[i] for i in final.rows] if final.rows is not None else list(split.ids)
    cfg_dict = dataclasses.asdict(r.strategy_cfg)
    recipe_dict = dataclasses.asdict(r.recipe)
    metrics = {**final.metrics, "eval_clips_per_s": final.clips_per_s, "parameters": float(strategy.num_parameters())}
    summary: dict[str, Any] = {
        "kind": "eval", "strategy": r.strategy_cls.name, "strategy_target": req.strategy, "dataset": r.dataset,
        "split": split_name, "clips": len(ids), "primary_metric": PRIMARY[r.cache.manifest.task],
        "metrics": metrics, "skipped": final.skipped, "config": cfg_dict, "recipe": recipe_dict,
        "recipe_name": req.recipe_name, **loaded,
        "cache": {"path": str(r.cache.root), "key": r.cache.manifest.key},
        "device": describe_device(torch.device(req.device)), "precision": resolve_precision(r.recipe.amp, torch.device(req.device))[0],
        "environment": results.environment(),
        "run_id": None, "tracking_uri": None}
    if req.save_predictions:
        save_predictions(req.save_predictions, final, ids)
    if req.track:
        _log(req, r, summary, final, ids, cfg_dict, recipe_dict)
    return summary


def save_predictions(path: str | Path, final: EvalResult, ids: list[str]) -> Path:
    """Clip ids, labels and one ``logits_<column>`` array per column (float32), rows in split order."""
    p = Path(path).expanduser()
    p.parent.mkdir(parents=True, exist_ok=True)
    arrays = {f"logits_{c}": np.asarray(v, dtype=np.float32) for c, v in final.logits.items()}
    arrays.update({f"head_{k}": np.asarray(v, dtype=np.float32) for k, v in final.heads.items()})
    rows = np.asarray(final.rows if final.rows is not None else np.arange(len(ids)), dtype=np.int64)
    with open(p, "wb") as f:  # np.savez would append .npz to a name without it
        np.savez_compressed(f, ids=np.array(ids), labels=np.asarray(final.labels, dtype=np.uint8), rows=rows, **arrays)
    return p


def _log(req: EvalRequest, r: Resolved, summary: dict[str, Any], final: EvalResult, ids: list[str],
         cfg_dict: dict[str, Any], recipe_dict: dict[str, Any]) -> None:
    tracker = Tracker(req.results_dir)
    params = {"strategy": r.strategy_cls.name, "strategy_target": req.strategy, "dataset": r.dataset,
              "split": summary["split"], "cache": str(r.cache.root), "cache_key": r.cache.manifest.key,
              "primary_metric": summary["primary_metric"], "recipe": req.recipe_name,
              "checkpoint": summary["checkpoint"], "checkpoint_kind": summary["checkpoint_kind"],
              "checkpoint_sha256": summary["checkpoint_sha256"], "protocol": "standard",
              **{f"model.{k}": v for k, v in cfg_dict.items()}, **{f"train.{k}": v for k, v in recipe_dict.items()}}
    name = f"{r.strategy_cls.name}-eval-{Path(summary['checkpoint']).stem}"
    run_id = tracker.start_eval(r.dataset, name, params, {TAG_STRATEGY: r.strategy_cls.name,
                                                           TAG_PROTOCOL: "standard"})
    try:
        tracker.log_metrics(run_id, summary["metrics"])
        summary.update(run_id=run_id, tracking_uri=tracker.uri)
        tracker.log_json(run_id, "result.json", results.finalize("eval", summary))
        with tempfile.TemporaryDirectory() as d:
            tracker.log_file(run_id, save_predictions(Path(d) / "predictions.npz", final, ids))
    except BaseException:
        tracker.finish(run_id, "FAILED")
        raise
    tracker.finish(run_id)
