"""The results contract: every JSON avbench writes about results carries the same provenance block,
MLflow's metric names and, per metric, which direction is better and its range.

Why: a number in a JSON file can only be cited, compared or re-run when the file says what produced
it (avbench version, git commit, date, command line, environment, config, recipe, cache key) and
what the number means. The shape is a JSON Schema shipped in the package
(``avbench/schemas/results.schema.json``, version ``SCHEMA_VERSION``); ``finalize`` adds the block and
validates, so nothing that breaks the contract is ever written.

Metric names are MLflow's everywhere (``retrieval/a2v_R_at1``, never ``R@1``): ``metric_name`` is
the one spelling rule. Non-finite numbers become ``null`` (JSON has no NaN).
"""

from __future__ import annotations

import datetime as _dt
import functools
import json
import math
import re
import sys
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

from avbench import provenance as _prov

SCHEMA_VERSION = "1.0"
SCHEMA_FILE = "results.schema.json"
KINDS = ("seed_result", "run_summary", "bench", "report", "eval")

_command: list[str] | None = None


def set_command(argv: list[str] | None) -> None:
    """Record the command line the CLI was started with (``avbench`` + its arguments)."""
    global _command
    _command = ["avbench", *(sys.argv[1:] if argv is None else argv)]


def command() -> list[str]:
    return list(_command) if _command is not None else list(sys.argv)


def use_command(argv: list[str] | None) -> None:
    """Record ``argv`` exactly (None: forget it). A job run by an executor elsewhere records the command
    of the driver that asked for it, not its worker's argv (``avbench.executor.ray_backend``)."""
    global _command
    _command = list(argv) if argv is not None else None


def metric_name(key: str) -> str:
    """The MLflow-legal spelling of a metric key; the one used in JSON, MLflow and tables."""
    return key.replace("@", "_at")


# --- what each metric means ---------------------------------------------------------------------
_UNIT = (0.0, 1.0)
_POS = (0.0, None)
_RULES: tuple[tuple[str, bool | None, tuple[float | None, float | None]], ...] = (
    # (regex on the last path component, with any _mean/_std/_n suffix removed; higher is better; range)
    (r"(acc|top\d+|mAP|mAUC|mfu)", True, _UNIT),
    (r"[av]2[av]_R_at\d+", True, _UNIT),
    (r"[av]2[av]_medr", False, (1.0, None)),
    (r"dprime", True, (None, None)),
    (r"(.*_)?clips_per_s|speedup|achieved_flops_per_s", True, _POS),
    (r"(.*_)?loss", False, _POS),
    (r"wall_seconds|.*_s|.*_ms(_p\d+)?", False, _POS),
    (r"(trainable_)?parameters", None, _POS),
    (r"union_f1(_micro)?|converged|event_class_match", True, _UNIT),
    (r"diverged", False, _UNIT),  # 1: the training loss went NaN/inf (its test metrics are not a result)
    (r"union_size", None, (1.0, None)),  # labels per clip: more is not better
)


def metric_info(name: str) -> dict[str, Any]:
    """``{"higher_is_better": bool | None, "range": [low, high]}`` of a metric (None: unknown/unbounded)."""
    leaf = metric_name(name).rsplit("/", 1)[-1]
    leaf = re.sub(r"_(mean|std|n)$", "", leaf)
    for pattern, higher, rng in _RULES:
        if re.fullmatch(pattern, leaf):
            return {"higher_is_better": higher, "range": list(rng)}
    return {"higher_is_better": None, "range": [None, None]}


def chance_level(metric: str, labels: Any = None, num_classes: int | None = None) -> float | None:
    """What a classifier that knows nothing scores on ``metric``, given the test labels ``[N, C]``
    (multi-hot) when known, else the number of classes (balanced classes assumed).

    acc / topK: always predicting the K most frequent test classes (1/C, K/C when balanced); mAP: the
    mean class prevalence (random scores); mAUC 0.5; dprime 0. None where undefined (retrieval,
    throughput, ...)."""
    leaf = metric_name(metric).rsplit("/", 1)[-1]
    top = re.fullmatch(r"top(\d+)", leaf)
    k = 1 if leaf == "acc" else int(top.group(1)) if top else None
    if leaf == "mAUC":
        return 0.5
    if leaf == "dprime":
        return 0.0
    if labels is not None:
        import numpy as np

        y = np.asarray(labels) > 0
        if y.ndim != 2 or y.shape[0] == 0:
            return None
        freq = y.mean(axis=0)
        if k is not None:
            order = np.argsort(-freq, kind="stable")[:k]
            return float(y[:, order].any(axis=1).mean())
        if leaf == "mAP":
            return float(freq[freq > 0].mean()) if (freq > 0).any() else None
        return None
    if num_classes and k is not None:
        return min(1.0, k / num_classes)
    if num_classes and leaf == "mAP":
        return 1.0 / num_classes
    return None


def not_above_chance(stats: Mapping[str, Any], chance: float | None) -> bool:
    """True when a result over seeds is not shown to be above ``chance``: the 95% interval's lower end
    (or, with one seed, the value itself) is at or below it."""
    if chance is None or not stats or not stats.get("n"):
        return False
    low = stats.get("ci_low") if stats.get("n", 0) > 1 else stats.get("mean")
    if low is None or not math.isfinite(low):
        low = stats.get("mean")
    return low is not None and math.isfinite(low) and low <= chance + 1e-9


def clip_interval(stats: Mapping[str, Any], metric: str) -> tuple[float | None, float | None]:
    """The 95% interval of ``stats`` clipped to the metric's range (a t-interval over 2-3 seeds can
    run past 0 or 100%)."""
    lo, hi = stats.get("ci_low"), stats.get("ci_high")
    rlo, rhi = metric_info(metric)["range"]
    if lo is not None and math.isfinite(lo) and rlo is not None:
        lo = max(lo, rlo)
    if hi is not None and math.isfinite(hi) and rhi is not None:
        hi = min(hi, rhi)
    return lo, hi


# --- provenance ---------------------------------------------------------------------------------
def git_state() -> tuple[str | None, bool | None]:
    """(commit, dirty) of the avbench code running, however it was installed (``avbench.provenance``)."""
    return _prov.git_state()


def environment() -> dict[str, Any]:
    """Interpreter, platform, host, CPU (model, bf16/AMX/AVX2 flags), GPUs and library versions."""
    return _prov.environment()


def provenance(*, config: Mapping[str, Any] | None = None, recipe: Mapping[str, Any] | None = None,
               cache_key: str | None = None, environment_: Mapping[str, Any] | None = None,
               dirty_ignore: tuple[str, ...] = ()) -> dict[str, Any]:
    import avbench

    src = _prov.source(ignore=dirty_ignore)
    return {"avbench_version": avbench.__version__, "git_commit": src["commit"], "git_dirty": src["dirty"],
            "git_source": src["source"],
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "command": command(), "environment": {**environment(), **dict(environment_ or {})},
            "config": dict(config) if config is not None else None,
            "recipe": dict(recipe) if recipe is not None else None, "cache_key": cache_key}


# --- documents ----------------------------------------------------------------------------------
def _clean(x: Any) -> Any:
    """JSON-able copy: NaN/inf -> None, numpy scalars/arrays -> Python, tuples -> lists."""
    if isinstance(x, Mapping):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, bool) or x is None or isinstance(x, (int, str)):
        return x
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if hasattr(x, "tolist"):  # numpy scalar or array
        return _clean(x.tolist())
    if isinstance(x, Path):
        return str(x)
    return str(x)


def _rename(metrics: Mapping[str, Any]) -> dict[str, Any]:
    return {metric_name(k): v for k, v in metrics.items()}


def _metric_names(kind: str, data: Mapping[str, Any]) -> list[str]:
    if kind in ("seed_result", "eval"):
        return list(data.get("metrics", {}))
    if kind == "run_summary":
        return list(data.get("summary", {}))
    if kind == "report":
        return sorted({f"{c}/{r['primary']}" for r in data.get("rows", []) for c in r.get("cells", {})})
    if kind == "bench":
        return [f"{part}/{k}" for part in ("train", "infer", "reference") if isinstance(data.get(part), Mapping)
                for k in ("clips_per_s", "mfu", "speedup") if k in data[part]]
    return []


def finalize(kind: str, data: Mapping[str, Any], *, cache_key: str | None = None,
             config: Mapping[str, Any] | None = None, recipe: Mapping[str, Any] | None = None,
             dirty_ignore: tuple[str, ...] = ()) -> dict[str, Any]:
    """``data`` as a contract document of ``kind``: MLflow metric names, provenance, metric_info,
    validated. Config, recipe and cache key default to the document's own ``config``/``recipe``/``cache``;
    changes under ``dirty_ignore`` (a report's own output directory) do not make the checkout dirty."""
    if kind not in KINDS:
        raise ValueError(f"unknown results kind {kind!r} (one of {', '.join(KINDS)})")
    doc = dict(data)
    if kind in ("seed_result", "eval"):
        doc["metrics"] = _rename(doc.get("metrics", {}))
    if kind == "run_summary":
        doc["summary"] = _rename(doc.get("summary", {}))
        doc["seeds"] = [{**s, "metrics": _rename(s.get("metrics", {}))} for s in doc.get("seeds", [])]
        if "primary_metric" in doc:
            doc["primary_metric"] = metric_name(doc["primary_metric"])
    _clip_intervals(kind, doc)
    cache = doc.get("cache") if isinstance(doc.get("cache"), Mapping) else {}
    prov = provenance(config=config if config is not None else doc.get("config"),
                      recipe=recipe if recipe is not None else doc.get("recipe"),
                      cache_key=cache_key if cache_key is not None else cache.get("key"),
                      environment_=doc.get("environment") if isinstance(doc.get("environment"), Mapping) else None,
                      dirty_ignore=dirty_ignore)
    doc = {"schema_version": SCHEMA_VERSION, "kind": kind, "provenance": prov,
           "metric_info": {m: metric_info(m) for m in _metric_names(kind, doc)}, **doc}
    doc = _clean(doc)
    validate(doc)
    return doc


def clipped(stats: Any, metric: str) -> Any:
    """``stats`` (a mean/std/ci_low/ci_high/n mapping) with its interval clipped to the metric's range;
    anything else unchanged."""
    if not isinstance(stats, Mapping) or "ci_low" not in stats:
        return stats
    lo, hi = clip_interval(stats, metric)
    return {**stats, "ci_low": lo, "ci_high": hi}


def _clip_intervals(kind: str, doc: dict[str, Any]) -> None:
    """Every 95% interval a document carries, clipped to its metric's range (``metric_info``): a
    t-interval over 2-3 seeds can run below 0 or above 100%, which no accuracy can."""
    if kind == "run_summary" and isinstance(doc.get("summary"), Mapping):
        doc["summary"] = {m: clipped(s, m) for m, s in doc["summary"].items()}
    if kind == "report" and isinstance(doc.get("rows"), list):
        doc["rows"] = [{**r, "cells": {c: clipped(s, f"{c}/{r.get('primary', '')}") for c, s in r["cells"].items()}}
                       if isinstance(r, Mapping) and isinstance(r.get("cells"), Mapping) else r for r in doc["rows"]]


@functools.lru_cache(maxsize=1)
def schema() -> dict[str, Any]:
    return json.loads(resources.files("avbench").joinpath("schemas", SCHEMA_FILE).read_text())


def validate(doc: Mapping[str, Any]) -> None:
    """Raise ``jsonschema.ValidationError`` when ``doc`` breaks the contract."""
    import jsonschema

    jsonschema.Draft202012Validator(schema(), format_checker=jsonschema.FormatChecker()).validate(doc)


def write(path: str | Path, doc: Mapping[str, Any]) -> Path:
    """Write a finalized document atomically (sorted keys, indented, no NaN)."""
    from avbench.cache.format import write_json_atomic

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(p, doc)
    return p


def write_run_outputs(path: str | Path, summary: Mapping[str, Any]) -> Path:
    """``avbench run --output-json PATH``: the summary, and the resolved run config beside it
    (``PATH`` with ``.config.yaml``) so ``avbench run --config`` that file reproduces the run."""
    from avbench import config_file

    p = write(path, summary)
    if summary.get("run_config"):
        config_file.write_yaml(config_file.beside(p), summary["run_config"])
    return p
