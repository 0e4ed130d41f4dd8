"""A finished run, back from MLflow: its strategy with trained weights, its cache, its recipe.

Analyses work on what ``avbench run`` logged: the run's params name the strategy target, its config
(``model.*``), the recipe (``train.*``) and the cache path; ``model.pt`` holds the weights and
``predictions.npz`` the per-clip logits. Inputs are prepared exactly as evaluation prepares them
(``Engine.make_batch`` with ``train=False``: the recipe's per-step L2 norm), so an analysis sees what
the model saw at test time.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import Tensor

from avbench import config as cfgmod
from avbench import registry
from avbench.errors import UserError
from avbench.tracking import TAG_KIND, TAG_PARENT, TAG_SEED, Tracker


def _typed_params(prefix: str, params: dict[str, str], cls: type) -> dict[str, Any]:
    """``prefix.*`` params back into field values (lists were logged as JSON)."""
    names = {f.name for f in dataclasses.fields(cls)}
    out: dict[str, Any] = {}
    for k, v in params.items():
        if not k.startswith(prefix):
            continue
        name = k[len(prefix):]
        if name not in names:
            continue  # a field the code no longer has: the defaults stand
        if v.startswith("[") and v.endswith("]"):
            try:
                v = json.loads(v)
            except json.JSONDecodeError:
                pass
        out[name] = v
    return out


@dataclass
class LoadedRun:
    """One seed run. The model is loaded on first use (event-type analysis needs only predictions)."""

    tracker: Tracker
    run_id: str
    params: dict[str, str]
    tags: dict[str, str]
    cache_override: str | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def seed(self) -> int:
        return int(self.tags.get(TAG_SEED, self.params.get("seed", 0)))

    @property
    def strategy_name(self) -> str:
        return self.params.get("strategy", "?")

    @property
    def parent_id(self) -> str | None:
        return self.tags.get(TAG_PARENT)

    @property
    def label(self) -> str:
        return f"{self.strategy_name} seed {self.seed} (run {self.run_id[:8]})"

    @cached_property
    def strategy_cls(self) -> type:
        return registry.load_strategy(self.params["strategy_target"])

    @cached_property
    def capabilities(self) -> Any:
        return self.strategy_cls.capabilities

    @cached_property
    def cache(self) -> Any:
        from avbench.cache.reader import FeatureCache

        path = self.cache_override or self.params.get("cache")
        if not path:
            raise UserError(f"run {self.run_id} records no cache path; pass --cache PATH")
        if not Path(path).exists():
            raise UserError(f"run {self.run_id}: its cache {path} is gone; pass --cache PATH to the same features")
        cache = FeatureCache(path)
        want = self.params.get("cache_key")
        if want and cache.manifest.key and cache.manifest.key != want:
            raise UserError(f"run {self.run_id} was trained on cache key {want}, but {path} has key "
                            f"{cache.manifest.key}: pass --cache PATH to the cache it was trained on")
        return cache

    @cached_property
    def recipe(self) -> Any:
        from avbench.train.recipe import Recipe

        return cfgmod.apply_overrides(Recipe(), _typed_params("train.", self.params, Recipe), where="the run's recipe")

    @cached_property
    def config(self) -> Any:
        cls = self.strategy_cls
        return cfgmod.apply_overrides(cls.Config(), _typed_params("model.", self.params, cls.Config),
                                      where=f"the run's {cls.name} config")

    @property
    def split(self) -> Any:
        return self.cache.test_split()

    def download(self, artifact: str) -> Path:
        return download_artifact(self.tracker, self.run_id, artifact)

    @cached_property
    def strategy(self) -> Any:
        try:
            path = self.download("model.pt")
        except FileNotFoundError:
            raise UserError(f"run {self.run_id} ({self.strategy_name}) has no model.pt: it was run with "
                            f"--no-save-model; rerun it without that flag to analyse it") from None
        from avbench.train.checkpoint import load_file

        state = load_file(path)  # weights only: an artifact may come from someone else's store
        if not isinstance(state, dict) or "state_dict" not in state:
            raise UserError(f"run {self.run_id}: {path} is not an avbench model.pt")
        cls = self.strategy_cls
        cache = self.cache
        model = cls(self.config, cache.features, cache.task)
        for stage in cls.stages:  # build every stage's modules (heads, frozen encoders) before loading
            model.begin_stage(stage)
        try:
            model.load_state_dict(state["state_dict"])
        except RuntimeError as e:
            raise UserError(f"run {self.run_id}: model.pt does not fit {cls.name} with the logged config "
                            f"({str(e).splitlines()[0]})") from None
        model.to(self.device).eval()
        return model

    @cached_property
    def predictions(self) -> dict[str, np.ndarray]:
        try:
            path = self.download("predictions.npz")
        except FileNotFoundError:
            raise UserError(f"run {self.run_id} has no predictions.npz artifact") from None
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}

    # --- inputs ---------------------------------------------------------------------------------
    def prepare(self, raw: dict[str, Tensor]) -> Any:
        """Evaluation preprocessing, by the engine's own code path (``avbench.evaluation.prepare``; no
        Engine is built: that would copy whole splits to the device)."""
        from avbench.train.evaluate import eval_batch as prepare

        return prepare(raw, self.recipe)

    def batches(self, idx: np.ndarray | None = None,
                batch_size: int | None = None) -> Iterator[tuple[np.ndarray, dict[str, Tensor]]]:
        """Raw gathered rows (float features on the device, before preprocessing), in order."""
        split = self.split
        idx = np.arange(len(split)) if idx is None else np.asarray(idx)
        bs = batch_size or self.recipe.eval_batch_size
        for s in range(0, len(idx), bs):
            part = idx[s:s + bs]
            raw = split.gather(part)
            yield part, {k: v.to(self.device) for k, v in raw.items()}

    def autocast(self):
        """The precision the run was tested in (its ``precision`` param), so an analysis sees the model
        as the run did; fp32 instead where that was bf16 and this machine only emulates bf16 (~100x
        slower), since the analyses' numbers do not hinge on it. Older runs: the recipe's setting."""
        from avbench.hardware import resolve_precision
        from avbench.train.engine import autocast

        recorded = self.params.get("precision") or self.recipe.amp
        if recorded != "fp32" and resolve_precision("auto", self.device)[0] == "fp32":
            recorded = "fp32"
        return autocast(self.device, recorded)


_TMP: list[str] = []


def _tmpdir() -> Path:
    if not _TMP:
        import atexit
        import shutil

        _TMP.append(tempfile.mkdtemp(prefix="avbench-artifacts-"))
        atexit.register(shutil.rmtree, _TMP[0], True)
    d = Path(tempfile.mkdtemp(dir=_TMP[0]))
    return d


def has_artifact(tracker: Tracker, run_id: str, artifact: str) -> bool:
    parent = str(Path(artifact).parent)
    listing = tracker.client.list_artifacts(run_id, None if parent == "." else parent)
    return artifact in {a.path for a in listing}


def download_artifact(tracker: Tracker, run_id: str, artifact: str) -> Path:
    """An artifact of a run, into a temporary directory removed when the process exits."""
    import os

    if not has_artifact(tracker, run_id, artifact):
        raise FileNotFoundError(artifact)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no bar per small file
    return Path(tracker.client.download_artifacts(run_id, artifact, str(_tmpdir())))


def open_tracker(results_dir: str | Path) -> Tracker:
    """The results' tracker, refusing to create an empty database where the user expected runs."""
    import os

    if not os.environ.get("MLFLOW_TRACKING_URI") and not (Path(results_dir) / "mlflow.db").exists():
        raise UserError(f"no MLflow database at {Path(results_dir) / 'mlflow.db'}: pass the --results-dir "
                        f"that 'avbench run' wrote to, or set MLFLOW_TRACKING_URI")
    return Tracker(results_dir)


def open_run(tracker: Tracker, run_id: str, *, cache: str | None = None, device: str = "cpu") -> LoadedRun:
    try:
        run = tracker.client.get_run(run_id)
    except Exception:
        raise UserError(f"no run '{run_id}' in {tracker.uri}") from None
    return LoadedRun(tracker, run_id, dict(run.data.params), dict(run.data.tags), cache_override=cache,
                     device=torch.device(device))


def seed_runs(tracker: Tracker, run_id: str) -> list[str]:
    """A seed run is itself; a parent run stands for its finished seed runs (sorted by seed)."""
    try:
        run = tracker.client.get_run(run_id)
    except Exception:
        raise UserError(f"no run '{run_id}' in {tracker.uri}") from None
    if run.data.tags.get(TAG_KIND) == "parent":
        kids = tracker.children(run_id)
        if not kids:
            raise UserError(f"parent run {run_id} has no finished seed runs")
        kids.sort(key=lambda r: int(r.data.tags.get(TAG_SEED, 0)))
        return [k.info.run_id for k in kids]
    if run.info.status != "FINISHED":
        raise UserError(f"run {run_id} is {run.info.status}, not FINISHED")
    return [run_id]


def dataset_parents(tracker: Tracker, dataset: str, strategies: list[str] | None = None) -> list[Any]:
    """Parent runs of a dataset with at least one finished seed, optionally of some strategies."""
    exp = tracker.experiment_id(dataset, create=False)
    if exp is None:
        raise UserError(f"no runs for dataset '{dataset}' in {tracker.uri}")
    parents = tracker.client.search_runs([exp], filter_string=f"tags.`{TAG_KIND}` = 'parent'", max_results=10000)
    out = [p for p in parents if (not strategies or p.data.params.get("strategy") in strategies)]
    out.sort(key=lambda p: (p.data.params.get("strategy", ""), p.data.params.get("group", "")))
    return out


def find_baseline(tracker: Tracker, target: LoadedRun, spec: str) -> str | None:
    """A seed run to compare robustness against: a run id, or the name of a strategy whose run on
    the same cache (standard protocol) has the target's seed. Returns None when there is none."""
    try:
        run = tracker.client.get_run(spec)
    except Exception:
        run = None
    if run is not None:
        ids = seed_runs(tracker, spec)
        same = [i for i in ids if tracker.client.get_run(i).data.tags.get(TAG_SEED) == str(target.seed)]
        return (same or ids)[0]
    exp = tracker.client.get_run(target.run_id).info.experiment_id
    parents = tracker.client.search_runs(
        [exp], filter_string=f"tags.`{TAG_KIND}` = 'parent' and params.strategy = '{spec}'", max_results=1000)
    best: tuple[Any, ...] | None = None
    for p in parents:
        same_cache = p.data.params.get("cache_key") == target.params.get("cache_key")
        if not same_cache or p.data.params.get("protocol") != "standard":
            continue
        kids = tracker.children(p.info.run_id)
        match = [k for k in kids if k.data.tags.get(TAG_SEED) == str(target.seed)]
        if not match:
            continue
        # the parent with most seeds; then the earliest (stable across report regenerations)
        key = (-len(kids), p.info.start_time, p.info.run_id)
        if best is None or key < best[0]:
            best = (key, match[0].info.run_id)
    return best[1] if best else None
