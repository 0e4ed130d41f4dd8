"""The tuned configurations ``avbench tune`` stores, and ``avbench run --tuned`` reads.

One pair of files per (dataset, cache key, strategy) under ``<results>/tuned/<dataset>-<key>/``:
``<strategy>.json`` holds everything (trials, budget, validation split) and ``<strategy>.yaml`` is a
config file for ``avbench run --config``. ``tuned_file`` is the one place that names the path.
With ``--replicates R``, replicate 0 is that pair (what ``run --tuned`` uses, with every replicate's
choice listed under "replicates") and replicate r >= 1 is ``replicates/<strategy>-r<r>.json``/``.yaml``
beside it, each with its sampler seed, so every replicate's choice is kept.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import yaml

from avbench.cache.format import write_json_atomic
from avbench.errors import UserError
from avbench.resolve import Resolved, RunRequest, resolve
from avbench.tracking import TAG_TUNED

log = logging.getLogger(__name__)


def tuned_dir(results_dir: str | Path, dataset: str, cache_key: str) -> Path:
    return Path(results_dir) / "tuned" / f"{dataset}-{cache_key[:12]}"


def tuned_file(results_dir: str | Path, r: Resolved) -> Path:
    """Where the tuned configuration of a resolved run's strategy and cache is stored (``<strategy>.json``)."""
    return tuned_dir(results_dir, r.dataset, r.cache.manifest.key) / f"{r.strategy_cls.name}.json"


def replicate_file(results_dir: str | Path, r: Resolved, replicate: int) -> Path:
    """Where replicate ``replicate`` of a tuning stores its choice (replicate 0: ``tuned_file``)."""
    return _replicate_path(tuned_dir(results_dir, r.dataset, r.cache.manifest.key), r.strategy_cls.name, replicate)


def _replicate_path(d: Path, strategy: str, replicate: int) -> Path:
    return d / f"{strategy}.json" if replicate == 0 else d / "replicates" / f"{strategy}-r{replicate}.json"


def write_tuned(results_dir: str | Path, req: Any, result: dict[str, Any]) -> list[Path]:
    """``<strategy>.json`` (everything) and ``<strategy>.yaml`` (a config file for ``run --config``);
    ``req`` is the ``TuneRequest`` (its ``dataset`` or ``cache`` goes into the YAML)."""
    d = tuned_dir(results_dir, result["dataset"], result["cache_key"])
    jpath = _replicate_path(d, result["strategy"], int(result.get("replicate", 0)))
    jpath.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(jpath, result)
    config: dict[str, Any] = {"strategy": result["strategy"]}
    config.update({"dataset": req.dataset} if req.dataset else {"cache": req.cache})
    for k, v in result["overrides"].items():
        prefix, _, rest = k.partition(".")
        section, name = (prefix, rest) if rest and prefix in ("model", "train", "data") else ("set", k)
        config.setdefault(section, {})[name] = _plain(v)
    ypath = jpath.with_suffix(".yaml")
    chosen = (f"chosen on {result['select']} {result['score']:.4f}, " if "select" in result else "")
    ypath.write_text(f"# tuned by avbench tune ({result['budget']['trials']} trials, {chosen}"
                     f"validation {result['metric']} {result['value']:.4f}, replicate {result.get('replicate', 0)}, "
                     f"sampler seed {result.get('sampler_seed', 0)}); use: avbench run --config {ypath.name}\n"
                     + yaml.safe_dump(config, sort_keys=True))
    return [jpath, ypath]


def _plain(v: str) -> Any:
    try:
        return yaml.safe_load(v)
    except yaml.YAMLError:
        return v


def replicate_summary(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each replicate's choice in a line: replicate, sampler seed, trial, score, parameters, file."""
    return [{"replicate": res.get("replicate", 0), "sampler_seed": res.get("sampler_seed"),
             "best_trial": res["best_trial"], "select": res.get("select"), "score": res.get("score"),
             "indistinct": res.get("indistinct", False), "params": res["params"], "file": res["files"][0]}
            for res in results]


def record_replicates(results: list[dict[str, Any]]) -> None:
    """Replicate 0's file (the one ``run --tuned`` reads) lists every replicate's choice."""
    first = next((res for res in results if res.get("replicate", 0) == 0), None)
    if first is None:
        return
    path = Path(first["files"][0])
    data = json.loads(path.read_text())
    data["replicates"] = replicate_summary(results)
    write_json_atomic(path, data)


def stored(results_dir: str | Path, r: Resolved, replicate: int = 0) -> dict[str, Any] | None:
    """The tuned result already stored for this strategy, cache and replicate (``--skip-tuned``), or None."""
    path = replicate_file(results_dir, r, replicate)
    if not path.is_file():
        return None
    try:
        result = json.loads(path.read_text())
    except json.JSONDecodeError:
        log.warning("%s is not valid JSON: tuning %s again", path, r.strategy_cls.name)
        return None
    log.info("tuned already: %s (%s)", r.strategy_cls.name, path)
    return {**result, "skipped": True, "files": [str(path), str(path.with_suffix(".yaml"))]}


def apply_tuned(req: RunRequest, which: str) -> RunRequest:
    """``req`` (a RunRequest) with a tuned configuration under its own ``--set`` (which win).

    ``which`` is a ``tuned.json`` path, or "auto": the file ``avbench tune`` wrote for this strategy
    and this cache under the request's results directory."""
    if which == "auto":
        r = resolve(req)
        path = tuned_file(req.results_dir, r)
        if not path.exists():
            raise UserError(f"--tuned: no tuned configuration for {r.strategy_cls.name} on this cache ({path}); "
                            f"run avbench tune --strategy {req.strategy} first")
    else:
        path = Path(which).expanduser()
        if not path.is_file():
            raise UserError(f"--tuned {which}: no such file")
    try:
        tuned = json.loads(path.read_text())
        over = {k: v for k, v in tuned["overrides"].items() if not k.startswith("data.")}
    except (json.JSONDecodeError, KeyError, AttributeError) as e:
        raise UserError(f"--tuned {path}: not a tuned configuration ({e})") from None
    # The tag names the file absolutely, so run and sweep (which resolves --results-dir) record the same.
    return dataclasses.replace(req, overrides={**over, **req.overrides},
                               extra_tags={**req.extra_tags, TAG_TUNED: str(path.resolve())})
