"""Report sections of ``avbench analyze``'s representation analyses (UAVM Figs. 3-5): per-layer modality
probe, cross-modal retrieval and attention difference, attention heatmaps and t-SNE pictures; and the
per-layer helpers the sweep figures share.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from avbench import results
from avbench.report import plots
from avbench.report.blocks import Bullets, Heading, Para, Table
from avbench.report.builder import Builder


def analyses(rep: Builder) -> None:
    """UAVM Figs. 3-5: modality probe, retrieval and attention difference per layer, heatmaps and t-SNE."""
    rep.add(Heading(2, "Representation analyses (UAVM Figs. 3-5)"))
    rep.add(Para("From `avbench analyze`, on each row's seeds; lines are means over seeds, shaded ± std."))
    _per_layer(rep, "probe", "Modality probe per layer",
                    "L1 logistic regression predicting the input modality from each layer's time-pooled "
                    "representation, trained on the first half of the test clips and tested on the second "
                    "(UAVM Fig. 3B). 50% = the modalities share one space; 100% = separable.",
                    [("probe accuracy", "acc")], ylabel="accuracy (%)")
    _per_layer(rep, "retrieval", "Cross-modal retrieval per layer",
                    "A→V and V→A recall on the stratified 5-per-class test subset, cosine similarity of "
                    "time-pooled representations; `logits` is the classifier output (UAVM Fig. 4).",
                    [("A→V R@1", "a2v_R@1"), ("V→A R@1", "v2a_R@1"), ("A→V R@5", "a2v_R@5")], ylabel="recall (%)")
    _per_layer(rep, "attention", "Attention difference per layer",
                    "Mean absolute difference between the attention maps of a clip's audio and of its video "
                    "(UAVM Fig. 5 left); the unpaired control pairs each audio with another clip's video.",
                    [("paired A vs V", "mae"), ("unpaired control", "mae_unpaired")], ylabel="MAE (attention weight)", percent=False)
    _pictures(rep, "attention", "Temporal attention heatmaps (UAVM Fig. 5 right)",
                   lambda res, p, title: plots.attention_heatmap(res["heatmap"], p, title))
    _pictures(rep, "tsne", "t-SNE per layer (UAVM Fig. 3D)", lambda res, p, title: plots.tsne_grid(res, p, title))
    rep.skipped_list(("probe", "retrieval", "attention", "tsne"))


def _per_layer(rep: Builder, what: str, title: str, text: str, metrics: list[tuple[str, str]], ylabel: str,
               percent: bool = True) -> None:
    """One per-layer analysis: a panel per metric (layers of different kinds on separate axes) and its table."""
    rep.add(Heading(3, title))
    rows = rep.have(what)
    if not rows:
        rep.add(Para(f"No {what} analysis recorded."))
        return
    rep.add(Para(text))
    groups = []
    for mtitle, key in metrics:
        by_kind: dict[str, list[plots.Series]] = {}  # layers of different kinds get their own axes
        for r in rows:
            layers, mean, std = _layer_stats(r.analyses[what], key)
            if layers:
                by_kind.setdefault(_layer_kind(layers), []).append(
                    plots.Series(f"{r.short} {r.label}", layers, mean, std))
        for kind, series in sorted(by_kind.items()):
            groups.append((mtitle + (f"\n({kind})" if len(by_kind) > 1 else ""), series))
    rep.figure(f"{what}_per_layer", title + ", mean ± std over seeds",
                lambda p: plots.panels(groups, p, xlabel="layer", ylabel=ylabel, categorical=True, percent=percent))
    body = []
    key = metrics[0][1]
    for r in rows:
        layers, mean, std = _layer_stats(r.analyses[what], key)
        fmt = (lambda m: f"{100 * m:.1f}") if percent else (lambda m: f"{m:.4f}")
        per = " · ".join(f"{lay} {fmt(m)}" for lay, m in zip(layers, mean))
        body.append([r.short, r.label, len(r.analyses[what]), per])
    rep.add(Table(["#", "row", "seeds", f"{metrics[0][0]} per layer (mean over seeds)"], body))
    notes = sorted({f"{r.short} {r.label}: {layer} skipped: {why}" for r in rows for res in r.analyses[what]
                    for layer, why in (res.get("skipped") or {}).items()})
    if notes:
        rep.add(Para("Layers left out:"))
        rep.add(Bullets(notes))
    if what == "probe":
        coefs = [(f"{r.short} {r.label}", _last(r.analyses["probe"][0])["coef_sorted"]) for r in rows]
        rep.figure("probe_coefficients", "Sorted |coefficients| of the modality probe at each row's last layer, "
                    "first seed (UAVM Fig. 3C): no single dominant dimension means the modality is spread out",
                    lambda p: plots.lines([plots.Series(label, list(range(1, len(c) + 1)), c) for label, c in coefs],
                                          p, xlabel="coefficient rank", ylabel="|coefficient| (probe weight)"))


def _pictures(rep: Builder, what: str, title: str, draw) -> None:
    """One picture per main row (attention heatmap, t-SNE) from its first analysed seed."""
    rows = [r for r in rep.have(what) if not r.from_sweep]  # one picture per main row
    if not rows:
        return
    rep.add(Heading(3, title))
    for r in rows:
        res = r.analyses[what][0]
        rep.figure(f"{what}_{r.index}", f"{r.short} {r.label}, seed {r.seeds[0]}",
                    lambda p, res=res, r=r: draw(res, p, f"{r.short} {r.label}"))


def _layer_kind(layers: list[str]) -> str:
    """``layer0..layer5, logits`` -> "layer/logits": rows whose layers differ in kind are not drawn on
    one categorical axis (a quantized code is not "layer 1")."""
    return "/".join(sorted({re.sub(r"[0-9]+$", "", str(x)) or str(x) for x in layers}))



def _last(res: dict[str, Any], skip: tuple[str, ...] = ()) -> dict[str, Any]:
    layers = [k for k in res.get("layers", []) if k not in skip]
    return res["per_layer"][layers[-1]] if layers else {}


def _get(d: dict[str, Any], key: str) -> Any:
    """``d[key]`` under MLflow's spelling (``a2v_R_at1``) or the older ``a2v_R@1``; None when absent."""
    v = d.get(results.metric_name(key))
    return d.get(key) if v is None else v


def _last_layer(res: dict[str, Any], key: str, skip: tuple[str, ...] = ()) -> float | None:
    v = _get(_last(res, skip), key)
    return float(v) if v is not None else None


def _layer_stats(results: list[dict[str, Any]], key: str) -> tuple[list[str], list[float], list[float] | None]:
    layers = [k for k in results[0].get("layers", []) if all(k in r.get("per_layer", {}) for r in results)]
    vals = np.asarray([[np.nan if _get(r["per_layer"][k], key) is None else _get(r["per_layer"][k], key)
                        for k in layers] for r in results], dtype=float)
    if not layers:
        return [], [], None
    return layers, vals.mean(0).tolist(), (vals.std(0, ddof=1).tolist() if len(results) > 1 else None)

