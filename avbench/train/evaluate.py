"""Evaluation of a strategy on rows of a split: the one code path ``run``, ``eval``, validation and
analyses share, so the same weights give the same numbers wherever they are evaluated.

Inputs are prepared by ``eval_batch`` (float features, the recipe's per-step L2 norm; nothing else of
the training recipe applies). ``predict`` runs in eval mode, under ``torch.no_grad`` and the recipe's
autocast, once per column the strategy supports (Audio, Video, Fusion: Table I of the UAVM paper), with
``onsets=`` when the strategy declares ``capabilities.onsets``. Each rank predicts a contiguous share
and the shares are gathered in rank order.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from avbench.api import CAPABILITY_OF, COLUMNS, Batch, Strategy
from avbench.metrics.classification import classification_metrics, mean_average_precision, topk_accuracy
from avbench.metrics.multilabel import head_union_metrics
from avbench.metrics.retrieval import retrieval_metrics, stratified_subset
from avbench.train import augment, distributed
from avbench.train.process import autocast, synchronize
from avbench.train.recipe import Recipe

__all__ = ["CAPABILITY_OF", "COLUMNS", "EvalResult", "columns", "eval_batch", "evaluate", "retrieval"]


@dataclass
class EvalResult:
    metrics: dict[str, float]  # "audio/acc", "fusion/mAP", "retrieval/a2v_R_at1", ...
    logits: dict[str, np.ndarray]  # column -> [N, C] float32
    heads: dict[str, np.ndarray]  # named per-head logits (strategies with heads)
    labels: np.ndarray
    skipped: dict[str, str]  # column or analysis -> reason
    clips_per_s: float
    rows: np.ndarray | None = None  # the test rows evaluated, in order (failed extractions excluded)


def eval_batch(raw: dict[str, Tensor], recipe: Recipe) -> Batch:
    """Gathered rows -> an evaluation Batch: float features and the recipe's per-step L2 norm (no
    mixup, no smoothing, no time roll: those are training augmentations)."""
    audio = raw["audio"].float()
    video = raw["video"].float()
    labels = raw["labels"]
    if recipe.l2_norm:
        audio, video = augment.l2_normalize_steps(audio), augment.l2_normalize_steps(video)
    return Batch(audio=audio, video=video, targets=labels.float(), labels=labels, present=raw.get("present"),
                 onsets=raw.get("onsets"), index=raw.get("index"))


def columns(strategy: Strategy, protocol: str = "standard") -> tuple[list[str], dict[str, str]]:
    """Evaluation columns the strategy supports, and the reasons for the rest."""
    caps = strategy.capabilities
    cols, skipped = [], {}
    if protocol == "cross-modal":
        return ["audio", "video"], {"fusion": "the cross-modal protocol tests one modality at a time"}
    for col in COLUMNS:
        if getattr(caps, CAPABILITY_OF[col]):
            cols.append(col)
        else:
            skipped[col] = caps.why_not(CAPABILITY_OF[col])
    return cols, skipped


def derives_fusion(strategy: Strategy, cols: list[str]) -> bool:
    """Whether the Fusion column is the mean of the Audio and Video passes (``fusion_is_mean``)."""
    return bool(getattr(strategy.capabilities, "fusion_is_mean", False)) and {"audio", "video", "fusion"} <= set(cols)


def curve_columns(strategy: Strategy, protocol: str = "standard") -> list[str]:
    """The one column the validation curve reads (the first of fusion, audio, video supported)."""
    cols, _ = columns(strategy, protocol)
    return [next(c for c in ("fusion", "audio", "video") if c in cols)] if cols else []


def curve_metrics(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Accuracy and mAP exactly as ``classification_metrics`` computes them: what the validation curve
    (its primary metric) and the convergence flag (mAP) read, without AUC, d' and top-5."""
    y = (labels > 0).astype(np.int64)
    return {"acc": topk_accuracy(scores, y, 1), "mAP": mean_average_precision(scores, labels)}


@torch.no_grad()
def evaluate(strategy: Strategy, src: Any, rows: np.ndarray, recipe: Recipe, device: torch.device, *,
             protocol: str = "standard", rank: int = 0, world: int = 1,
             retrieval_on: tuple[Any, np.ndarray] | None = None, curve: bool = False) -> EvalResult:
    """Metrics of ``strategy`` on ``rows`` of the batch source ``src`` (avbench/train/data.py).

    ``retrieval_on = (split, rows)`` adds A<->V retrieval on that split's rows (the test split's,
    with a strategy that has per-layer embeddings and the standard protocol). ``curve``: only the
    column the validation curve reads, with only accuracy and mAP, and no heads (same values as the
    full evaluation). A strategy declaring ``fusion_is_mean`` gets its Fusion column as the mean of
    the Audio and Video passes, computed with the same operation as its ``predict``: two passes, not three."""
    strategy.eval()
    cols, skipped = columns(strategy, protocol)
    derive = derives_fusion(strategy, cols)
    keep = curve_columns(strategy, protocol) if curve else list(cols)
    passes = [c for c in cols if c != "fusion" or not derive]  # the predict calls made
    if curve:
        passes = (["audio", "video"] if keep == ["fusion"] and derive else keep)
    cols = keep
    n = len(rows)
    bs = recipe.eval_batch_size
    logits: dict[str, list[np.ndarray]] = {c: [] for c in cols}
    heads: dict[str, list[np.ndarray]] = {}
    labels = []
    caps = strategy.capabilities
    # Each rank predicts its contiguous share of the test set; the shares are gathered in rank order.
    lo, hi = distributed.shard(n, rank, world)
    synchronize(device)
    t0 = time.perf_counter()
    for raw in src.iterate([rows[s:min(hi, s + bs)] for s in range(lo, hi, bs)]):
        b = eval_batch(raw, recipe)
        with autocast(device, recipe.amp):
            extra = {"onsets": b.onsets} if caps.onsets else {}
            out: dict[str, Tensor] = {}
            for c in passes:
                a = b.audio if c in ("audio", "fusion") else None
                v = b.video if c in ("video", "fusion") else None
                out[c] = strategy.predict(a, v, **extra)
            if derive and "fusion" in cols:  # the strategy's own fused rule, on the passes just made
                out["fusion"] = torch.stack([out["audio"], out["video"]]).mean(0)
            for c in cols:
                logits[c].append(out[c].float().cpu().numpy())
            if caps.heads and not curve:
                for k, v in strategy.head_logits(b.audio, b.video, **extra).items():
                    heads.setdefault(k, []).append(v.float().cpu().numpy())
        labels.append(b.labels.cpu().numpy())
    synchronize(device)
    dt = time.perf_counter() - t0
    if world > 1:
        parts = distributed.all_gather_objects((logits, heads, labels))
        logits = {c: [x for part in parts for x in part[0][c]] for c in cols}
        heads = {k: [x for part in parts for x in part[1].get(k, [])] for k in parts[0][1]}
        labels = [x for part in parts for x in part[2]]
    lab = np.concatenate(labels) if labels else np.zeros((0, strategy.task.num_classes))
    out_logits = {c: np.concatenate(v) for c, v in logits.items()}
    metrics: dict[str, float] = {}
    for c, lg in out_logits.items():
        for k, v in (curve_metrics if curve else classification_metrics)(lg, lab).items():
            metrics[f"{c}/{k}"] = v
    out_heads = {k: np.concatenate(v) for k, v in heads.items()}
    if not curve:
        metrics.update(head_union_metrics(out_heads, lab))  # paper 003 Table 2: union of the heads' argmax
    if retrieval_on is not None:
        if caps.embeddings and protocol == "standard":
            split, split_rows = retrieval_on
            metrics.update({f"retrieval/{k}": v for k, v in
                            retrieval(strategy, split, split_rows, lab, recipe, device).items()})
        elif not caps.embeddings:
            skipped["retrieval"] = caps.why_not("embeddings")
    return EvalResult(metrics=metrics, logits=out_logits, heads=out_heads,
                      labels=lab, skipped=skipped, rows=rows,
                      clips_per_s=n * max(1, len(cols)) / dt if dt > 0 else float("nan"))


@torch.no_grad()
def retrieval(strategy: Strategy, split: Any, rows: np.ndarray, labels: np.ndarray, recipe: Recipe,
              device: torch.device) -> dict[str, float]:
    """A->V and V->A on the stratified subset, with the last layer's mean-pooled representations."""
    idx = stratified_subset(labels, recipe.retrieval_per_class, seed=0)
    if len(idx) < 2:
        return {}
    raw = split.gather(rows[idx])
    raw = {k: v.to(device) for k, v in raw.items()}
    b = eval_batch(raw, recipe)
    with autocast(device, recipe.amp):
        ea = list(strategy.embed(b.audio, None).values())[-1].float().mean(1)
        ev = list(strategy.embed(None, b.video).values())[-1].float().mean(1)
    if ea.shape != ev.shape:
        return {}
    return retrieval_metrics(ea.cpu().numpy(), ev.cpu().numpy())
