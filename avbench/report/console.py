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
    cols = [c for c in titles if any(k.startswith(f"{c}/") for k in s)]
    primary = summary["primary_metric"]
    order = [primary] + [m for m in ROW_METRICS if m != primary]
    rows = []
    for m in order:
        scale = 1.0 if m == "dprime" else 100.0
        rows.append([m + (" (%)" if scale == 100.0 else "")] + [fmt_mean_std(s.get(f"{c}/{m}"), scale) for c in cols])
    n = len(summary["seeds"])
    print(f"\n{summary['strategy']} on {summary['dataset']} ({summary['protocol']}), {n} seed(s), mean ± std over seeds")
    print(tabulate(rows, headers=["metric"] + [titles[c] for c in cols], tablefmt="github"))
    extra = []
    for k in ("retrieval/a2v_R@1", "retrieval/v2a_R@1"):
        if k in s:
            extra.append(f"{k.split('/')[1]} {fmt_mean_std(s[k])}%")
    tp = s.get("train_clips_per_s")
    if tp:
        extra.append(f"train {tp['mean']:.0f} clips/s, eval {s['eval_clips_per_s']['mean']:.0f} clips/s")
    if extra:
        print("  " + "; ".join(extra))
    for what, why in summary.get("skipped", {}).items():
        print(f"  skipped {what}: {why}")
    if summary.get("tracking_uri"):
        print(f"  MLflow: {summary['tracking_uri']} (parent run {summary['parent_run_id']})")
