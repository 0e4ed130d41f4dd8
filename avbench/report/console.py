"""The table ``avbench run`` prints: rows are metrics, columns Audio / Video / Fusion, mean ± std."""

from __future__ import annotations

import math
from typing import Any

from tabulate import tabulate

COLUMN_TITLES = {"audio": "Audio", "video": "Video", "fusion": "Fusion"}
ROW_METRICS = ("acc", "top5", "mAP", "mAUC", "dprime")


def fmt_mean_std(s: dict[str, float] | None, scale: float = 100.0, digits: int = 2) -> str:
    if not s or s.get("n", 0) == 0 or not math.isfinite(s.get("mean", float("nan"))):
        return "-"
    if s["n"] == 1:
        return f"{s['mean'] * scale:.{digits}f}"
    return f"{s['mean'] * scale:.{digits}f} ± {s['std'] * scale:.{digits}f}"


def column_titles(protocol: str, train_modality: str | None) -> dict[str, str]:
    if protocol != "cross-modal":
        return COLUMN_TITLES
    other = "video" if train_modality == "audio" else "audio"
    arrow = {"audio": "A", "video": "V"}
    return {train_modality: f"{arrow[train_modality]}->{arrow[train_modality]} (same)",
            other: f"{arrow[train_modality]}->{arrow[other]}"}


def print_run_summary(summary: dict[str, Any]) -> None:
    s = summary["summary"]
    titles = column_titles(summary["protocol"], summary.get("train_modality"))
    n = len(summary["seeds"])
    print(f"\n{summary['strategy']} on {summary['dataset']} ({summary['protocol']}), {n} seed(s), mean ± std over seeds")
    _print_table(s, titles, summary["primary_metric"])
    tp = s.get("train_clips_per_s")
    speed = f"train {tp['mean']:.0f} clips/s, eval {s['eval_clips_per_s']['mean']:.0f} clips/s" if tp else ""
    mlflow = f"{summary['tracking_uri']} (parent run {summary['parent_run_id']})" if summary.get("tracking_uri") else ""
    _print_footer(s, speed, summary.get("skipped", {}), mlflow)


def print_eval_summary(summary: dict[str, Any]) -> None:
    """``avbench eval``'s table: one evaluation, so plain values in the same layout as ``run``'s."""
    s = {k: {"mean": v, "std": 0.0, "n": 1} for k, v in summary["metrics"].items() if isinstance(v, (int, float))}
    print(f"\n{summary['strategy']} on {summary['dataset']} ({summary['split']}, {summary['clips']} clips), "
          f"weights {summary['checkpoint']} ({summary['checkpoint_kind']})")
    _print_table(s, COLUMN_TITLES, summary["primary_metric"])
    mlflow = f"{summary['tracking_uri']} (eval run {summary['run_id']})" if summary.get("run_id") else ""
    _print_footer(s, "", summary.get("skipped", {}), mlflow)


def _print_table(s: dict[str, Any], titles: dict[str, str], primary: str) -> None:
    """Rows are metrics (the primary first), columns the modalities present in ``s``."""
    cols = [c for c in titles if any(k.startswith(f"{c}/") for k in s)]
    rows = []
    for m in [primary] + [m for m in ROW_METRICS if m != primary]:
        scale = 1.0 if m == "dprime" else 100.0
        rows.append([m + (" (%)" if scale == 100.0 else "")] + [fmt_mean_std(s.get(f"{c}/{m}"), scale) for c in cols])
    print(tabulate(rows, headers=["metric"] + [titles[c] for c in cols], tablefmt="github"))


def _print_footer(s: dict[str, Any], speed: str, skipped: dict[str, str], mlflow: str) -> None:
    extra = [f"{k.split('/')[1]} {fmt_mean_std(s[k])}%"  # MLflow's names (avbench.results.metric_name)
             for k in ("retrieval/a2v_R_at1", "retrieval/v2a_R_at1") if k in s]
    if speed:
        extra.append(speed)
    if extra:
        print("  " + "; ".join(extra))
    for what, why in skipped.items():
        print(f"  skipped {what}: {why}")
    if mlflow:
        print(f"  MLflow: {mlflow}")
