"""MLflow is the record: an experiment per dataset, a parent run per (strategy, config, cache,
recipe, protocol) carrying ``<metric>_mean``/``_std``/``_n``, and a child run per seed with params,
per-epoch metrics, throughput and a ``result.json`` artifact.

The client API (``MlflowClient``) is used throughout, with the parent tag set explicitly, so runs
made by several processes (sweeps, distributed rank 0) nest correctly.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

from avbench.metrics.stats import mean_std_ci

TAG_KIND = "avbench.kind"
TAG_GROUP = "avbench.group"
TAG_STRATEGY = "avbench.strategy"
TAG_DATASET = "avbench.dataset"
TAG_SEED = "avbench.seed"
TAG_PARENT = "mlflow.parentRunId"


def tracking_uri(results_dir: str | Path) -> str:
    """$MLFLOW_TRACKING_URI if set (a team server), else sqlite under the results directory."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    path = Path(results_dir).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path / 'mlflow.db'}"


def experiment_name(dataset: str) -> str:
    return f"avbench-{dataset}"


class Tracker:
    def __init__(self, results_dir: str | Path):
        import logging

        from mlflow.tracking import MlflowClient

        logging.getLogger("mlflow").setLevel(logging.WARNING)
        logging.getLogger("alembic").setLevel(logging.WARNING)
        self.results_dir = Path(results_dir).expanduser().resolve()
        self.uri = tracking_uri(self.results_dir)
        self.client = MlflowClient(tracking_uri=self.uri)

    # --- experiments and runs ---------------------------------------------------------------------
    def experiment_id(self, dataset: str, create: bool = True) -> str | None:
        name = experiment_name(dataset)
        exp = self.client.get_experiment_by_name(name)
        if exp is not None:
            return exp.experiment_id
        if not create:
            return None
        location = None
        if self.uri.startswith("sqlite:"):
            location = (self.results_dir / "artifacts").as_uri()
        return self.client.create_experiment(name, artifact_location=location)

    def parent_run(self, dataset: str, group: str, name: str, params: dict[str, Any], tags: dict[str, str]) -> str:
        """Find the parent run of ``group`` (so new seeds join it) or create it."""
        exp = self.experiment_id(dataset)
        found = self.client.search_runs([exp], filter_string=f"tags.`{TAG_GROUP}` = '{group}' and "
                                                            f"tags.`{TAG_KIND}` = 'parent'", max_results=1)
        if found:
            return found[0].info.run_id
        run = self.client.create_run(exp, run_name=name, tags={TAG_KIND: "parent", TAG_GROUP: group,
                                                               TAG_DATASET: dataset, **tags})
        self.log_params(run.info.run_id, params)
        self.client.set_terminated(run.info.run_id, "FINISHED")
        return run.info.run_id

    def children(self, parent_id: str, finished_only: bool = True) -> list[Any]:
        parent = self.client.get_run(parent_id)
        filt = f"tags.`{TAG_PARENT}` = '{parent_id}'"
        if finished_only:
            filt += " and attributes.status = 'FINISHED'"
        return self.client.search_runs([parent.info.experiment_id], filter_string=filt, max_results=10000)

    def finished_seed(self, parent_id: str, seed: int) -> str | None:
        for run in self.children(parent_id):
            if run.data.tags.get(TAG_SEED) == str(seed):
                return run.info.run_id
        return None

    def start_child(self, parent_id: str, seed: int, name: str, params: dict[str, Any], tags: dict[str, str]) -> str:
        parent = self.client.get_run(parent_id)
        run = self.client.create_run(parent.info.experiment_id, run_name=f"{name}-seed{seed}",
                                     tags={TAG_KIND: "seed", TAG_PARENT: parent_id, TAG_SEED: str(seed), **tags})
        self.log_params(run.info.run_id, params)
        return run.info.run_id

    # --- logging ----------------------------------------------------------------------------------
    def log_params(self, run_id: str, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, _param_str(v)) for k, v in sorted(params.items())]
        for i in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[i:i + 100])

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int | None = None) -> None:
        import time

        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        items = [Metric(_metric_key(k), float(v), ts, step or 0) for k, v in metrics.items()
                 if isinstance(v, (int, float)) and math.isfinite(float(v))]
        for i in range(0, len(items), 500):
            self.client.log_batch(run_id, metrics=items[i:i + 500])

    def log_json(self, run_id: str, name: str, data: Any) -> None:
        with tempfile.TemporaryDirectory() as d:
            p = Path(d) / name
            p.write_text(json.dumps(data, indent=2, sort_keys=True, default=_json_default))
            self.client.log_artifact(run_id, str(p))

    def log_file(self, run_id: str, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(run_id, str(path), artifact_path)

    def finish(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status)

    def update_parent_summary(self, parent_id: str) -> dict[str, dict[str, float]]:
        """Recompute ``<metric>_mean``, ``_std``, ``_n`` over finished children."""
        values: dict[str, list[float]] = {}
        for run in self.children(parent_id):
            for k, v in run.data.metrics.items():
                values.setdefault(k, []).append(v)
        summary = {k: mean_std_ci(v) for k, v in values.items()}
        flat = {}
        for k, s in summary.items():
            flat[f"{k}_mean"] = s["mean"]
            flat[f"{k}_std"] = s["std"]
            flat[f"{k}_n"] = s["n"]
        self.log_metrics(parent_id, flat)
        return summary


def _metric_key(k: str) -> str:
    # MLflow allows alphanumerics, _ - . space : / ; '@' (R@1) is not allowed.
    return k.replace("@", "_at")


def _param_str(v: Any) -> str:
    s = json.dumps(v, default=str) if isinstance(v, (list, dict, tuple)) else str(v)
    return s[:6000]


def _json_default(o: Any) -> Any:
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:
        pass
    return str(o)


def metric_name(k: str) -> str:
    """The name a metric is stored under in MLflow."""
    return _metric_key(k)


def flatten(prefix: str, d: dict[str, Any]) -> dict[str, Any]:
    return {f"{prefix}.{k}": v for k, v in d.items()}


def finished_runs(runs: Iterable[Any]) -> list[Any]:
    return [r for r in runs if r.info.status == "FINISHED"]
