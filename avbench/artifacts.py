"""The files a finished seed leaves in its local record, and JSON summaries: written atomically,
free space checked first, so a result on disk is always whole (``avbench sync`` may send it later)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from avbench import config_file, fsguard
from avbench.api import Strategy
from avbench.cache.format import write_json_atomic
from avbench.record import SeedRecord
from avbench.resolve import Resolved
from avbench.train.engine import FitResult
from avbench.train.evaluate import EvalResult


def save_local(rec: SeedRecord, result: dict[str, Any], metrics: dict[str, float], fit: FitResult, r: Resolved,
               strategy: Strategy, save_model: bool, run_config: dict[str, Any]) -> None:
    """The record of truth, complete before MLflow hears of it; free space checked first."""
    final = fit.final
    need = sum(v.size * 2 for v in final.logits.values()) + sum(v.size * 2 for v in final.heads.values())
    if save_model:
        need += sum(p.numel() * p.element_size() for p in strategy.state_dict().values()
                    if hasattr(p, "numel"))  # extra state (e.g. optimizer moments) is not a tensor
    fsguard.check_space(rec.dir, need + (1 << 20), "results")
    rec.write_history(fit.history)
    ids = r.cache.test_split().ids
    write_predictions(rec.path("predictions.npz"), final,
                       [ids[i] for i in final.rows] if final.rows is not None else ids)
    if save_model:
        write_model(rec.path("model.pt"), strategy)
    with fsguard.writing(rec.path("config.yaml")):
        config_file.write_yaml(rec.path("config.yaml"), run_config)
    rec.write_result(result)
    rec.update(metrics=metrics)


def write_predictions(path: Path, final: EvalResult, ids: list[str]) -> None:
    """Per-clip logits for paired tests and analyses (seed-matched bootstrap in reports)."""
    arrays = {f"logits_{c}": v.astype(np.float16) for c, v in final.logits.items()}
    arrays.update({f"head_{k}": v.astype(np.float16) for k, v in final.heads.items()})
    with fsguard.atomic_write(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, labels=final.labels.astype(np.uint8), ids=np.array(ids), **arrays)


def write_model(path: Path, strategy: Strategy) -> None:
    with fsguard.atomic_write(path) as tmp:
        torch.save({"state_dict": strategy.state_dict(), "config": strategy.config_dict(), "name": strategy.name}, tmp)


def write_json(path: str | Path, data: Any) -> None:
    """``data`` as JSON at ``path`` (atomically; anything not JSON-native written as its ``str``)."""
    p = Path(path)
    with fsguard.writing(p):
        p.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(p, json.loads(json.dumps(data, default=str)))
