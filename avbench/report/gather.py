"""What a report is made of, read from MLflow: one ``RowInfo`` per parent run (a strategy, config, cache
and protocol) with its finished seeds, per-clip predictions, analyses, sweep points and how it was
configured.

Why separate: every section reads the same rows; gathering touches MLflow and artifacts, and nothing
after it does, so the sections can be tested on rows built in memory.

Sweep points come from two places: the ``avbench.sweep.<name>`` tag of parents a sweep created, and
the ``avbench.sweep_member.<parent id>`` tags of a sweep's record run (``avbench.kind=sweep``) for
parents it found finished and did not modify (``avbench.sweep``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from avbench.report.table import COLUMNS, TableRow, collect_rows, config_label
from avbench.tracking import TAG_CREATED_BY, TAG_MEMBER_PREFIX, TAG_SWEEP_NAME, TAG_SWEEP_PREFIX, TAG_TUNED

ANALYSES = ("probe", "retrieval", "attention", "tsne", "robustness", "event-types")
# The tags' one spelling is in avbench.tracking; these names are what the report's modules import.
SWEEP_PREFIX, CREATED_BY, MEMBER_PREFIX, TUNED_TAG = TAG_SWEEP_PREFIX, TAG_CREATED_BY, TAG_MEMBER_PREFIX, TAG_TUNED


@dataclass
class RowInfo:
    row: TableRow
    index: int
    label: str
    group: str
    cache_key: str
    created_by: str
    sweeps: dict[str, dict[str, Any]]
    seeds: list[int]
    child_ids: dict[int, str]
    skipped_columns: dict[str, str] = field(default_factory=dict)
    analyses: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # what -> results by seed order
    analysis_state: dict[str, str] = field(default_factory=dict)  # what -> done / skipped: ... / missing
    scores: dict[str, dict[int, np.ndarray]] = field(default_factory=dict)  # column -> seed -> [N, C]
    labels: np.ndarray | None = None
    ids: tuple[str, ...] | None = None
    params: dict[str, str] = field(default_factory=dict)  # the parent's params (recipe, data knobs)
    tuned: dict[str, Any] | None = None  # the tuned configuration the row started from (avbench tune's file)
    git_commit: str | None = None  # the avbench commit its first seed ran (its result.json's provenance)
    git_dirty: bool | None = None  # that code had uncommitted changes

    @property
    def from_sweep(self) -> bool:
        return self.created_by.startswith("sweep:")

    @property
    def short(self) -> str:
        return f"#{self.index}"


def _download_json(tracker: Any, run_id: str, path: str) -> Any | None:
    from avbench.analysis.loading import download_artifact

    try:
        return json.loads(download_artifact(tracker, run_id, path).read_text())
    except FileNotFoundError:
        return None


def _download_npz(tracker: Any, run_id: str, path: str) -> dict[str, np.ndarray] | None:
    from avbench.analysis.loading import download_artifact

    try:
        p = download_artifact(tracker, run_id, path)
    except FileNotFoundError:
        return None
    with np.load(p, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def gather(tracker: Any, dataset: str, *, predictions: bool = True, analyses: bool = True) -> list[RowInfo]:
    from avbench.analysis.driver import TAG_PREFIX, artifact_name

    rows = collect_rows(tracker, dataset)
    members = sweep_members(tracker, dataset)
    infos: list[RowInfo] = []
    for i, r in enumerate(rows, start=1):
        parent = tracker.client.get_run(r.parent_run_id)
        kids = sorted(tracker.children(r.parent_run_id), key=lambda c: int(c.data.tags.get("avbench.seed", 0)))
        sweeps = dict(members.get(r.parent_run_id, {}))
        for k, v in parent.data.tags.items():
            if k.startswith(SWEEP_PREFIX):
                try:
                    sweeps[k[len(SWEEP_PREFIX):]] = json.loads(v)
                except json.JSONDecodeError:
                    continue
        cfg = config_label(r, rows)
        info = RowInfo(row=r, index=i, label=r.name + (f" ({cfg})" if cfg else ""),
                       group=parent.data.params.get("group", ""), cache_key=parent.data.params.get("cache_key", ""),
                       created_by=parent.data.tags.get(CREATED_BY, ""), sweeps=sweeps,
                       seeds=[int(c.data.tags.get("avbench.seed", 0)) for c in kids],
                       child_ids={int(c.data.tags.get("avbench.seed", 0)): c.info.run_id for c in kids},
                       params=dict(parent.data.params), tuned=read_tuned(parent.data.tags.get(TUNED_TAG)))
        if kids:
            res = _download_json(tracker, kids[0].info.run_id, "result.json") or {}
            info.skipped_columns = dict(res.get("skipped") or {})
            prov = res.get("provenance") or {}
            info.git_commit = prov.get("git_commit") or kids[0].data.tags.get("mlflow.source.git.commit")
            info.git_dirty = prov.get("git_dirty")
        for what in ANALYSES if analyses else ():
            tag = TAG_PREFIX + what.replace("-", "_")
            states = [c.data.tags.get(tag, "") for c in kids]
            results = []
            if any(s == "done" for s in states):
                for c, s in zip(kids, states):
                    if s == "done":
                        got = _download_json(tracker, c.info.run_id, artifact_name(what))
                        if got is not None:
                            results.append(got)
            info.analyses[what] = results
            skipped = [s for s in states if s.startswith("skipped")]
            info.analysis_state[what] = ("done" if results else skipped[0] if skipped else "missing")
        if predictions:
            for c in kids:
                seed = int(c.data.tags.get("avbench.seed", 0))
                z = _download_npz(tracker, c.info.run_id, "predictions.npz")
                if z is None:
                    continue
                ids = tuple(str(x) for x in z.get("ids", np.array([])))
                if info.ids is None:
                    info.ids, info.labels = ids, z["labels"]
                elif ids != info.ids:
                    continue
                for col in COLUMNS:
                    if f"logits_{col}" in z:
                        info.scores.setdefault(col, {})[seed] = z[f"logits_{col}"].astype(np.float32)
        infos.append(info)
    # Main rows first, then sweep points; numbers follow that order (stable across regenerations).
    infos = [r for r in infos if not r.from_sweep] + [r for r in infos if r.from_sweep]
    for i, r in enumerate(infos, start=1):
        r.index = i
    return infos



def sweep_members(tracker: Any, dataset: str) -> dict[str, dict[str, dict[str, Any]]]:
    """parent run id -> sweep name -> point, from the record runs of sweeps (parents they did not create)."""
    exp = tracker.experiment_id(dataset, create=False)
    if exp is None:
        return {}
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for run in tracker.client.search_runs([exp], filter_string="tags.`avbench.kind` = 'sweep'", max_results=1000):
        name = run.data.tags.get(TAG_SWEEP_NAME, "")
        for k, v in run.data.tags.items():
            if k.startswith(MEMBER_PREFIX) and name:
                try:
                    out.setdefault(k[len(MEMBER_PREFIX):], {})[name] = json.loads(v)
                except json.JSONDecodeError:
                    continue
    return out


def read_tuned(path: str | None) -> dict[str, Any] | None:
    """The tuned configuration a row started from (``avbench tune``'s JSON), or ``{"missing": path}``
    when the tag names a file that is gone; None for a row that was not tuned."""
    if not path:
        return None
    try:
        got = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {"missing": path}
    return got if isinstance(got, dict) else {"missing": path}
