"""Run the analyses on one seed run and record them in MLflow.

Each analysis returns a JSON-able result, logged as ``analysis/<what>.json`` (the report reads these),
plus scalar metrics ``analysis/<what>/<layer or curve>/<name>`` for the MLflow UI and search, and a
picture where there is one. An analysis that does not apply (no per-layer representations, no
attention maps, no named heads) is recorded as skipped, with the strategy's stated reason, in the tag
``avbench.analysis.<what>``.
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from avbench.analysis.loading import LoadedRun, download_artifact, find_baseline, has_artifact, open_run

WHATS = ("probe", "retrieval", "attention", "tsne", "robustness", "event-types")
TAG_PREFIX = "avbench.analysis."
ARTIFACT_DIR = "analysis"


@dataclass
class Options:
    per_class: int = 5  # retrieval subset (UAVM: 5 per class)
    retrieval_inputs: str = "normalised"  # "raw": the authors' feat_norm False (analysis/retrieval.py)
    probe_per_class: int = 0  # 0: every test clip; 5: the authors' 5-per-class subset (analysis/probe.py)
    tsne_per_class: int = 10
    attention_clips: int = 256
    heatmap_clip: int = 0
    baseline: str = "late_fusion"
    cache: str | None = None
    device: str = "cpu"
    plots: bool = True
    noise_levels: tuple[float, ...] = ()  # () = the module defaults
    shift_levels: tuple[float, ...] = ()


@dataclass
class Outcome:
    what: str
    run: str
    status: str  # "done" or "skipped"
    reason: str = ""
    text: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    result: dict[str, Any] | None = None


def artifact_name(what: str) -> str:
    return f"{ARTIFACT_DIR}/{what.replace('-', '_')}.json"


def _needs(run: LoadedRun, capability: str) -> str:
    caps = run.capabilities
    return "" if getattr(caps, capability) else caps.why_not(capability)


def _clean(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if isinstance(v, np.ndarray):
        return _clean(v.tolist())
    if isinstance(v, (np.floating, float)):
        f = float(v)
        return f if math.isfinite(f) else None
    if isinstance(v, np.integer):
        return int(v)
    return v


def analyze(run: LoadedRun, what: str, opts: Options) -> Outcome:
    from avbench.metrics.retrieval import stratified_subset

    if what not in WHATS:
        raise ValueError(what)
    out = Outcome(what, run.run_id, "done")
    split = run.split
    labels = split.labels
    if what in ("probe", "retrieval", "tsne"):
        why = _needs(run, "embeddings")
        if why:
            return Outcome(what, run.run_id, "skipped", why)
        from avbench.analysis.representations import pooled_embeddings, unimodal_logits

        if what == "probe":
            from avbench.analysis.probe import modality_probe, probe_rows

            pidx = probe_rows(labels, opts.probe_per_class)
            ea, ev = pooled_embeddings(run, pidx)
            res = modality_probe(ea, ev)
            res["clips"] = len(split) if pidx is None else int(len(pidx))
            out.metrics = {f"analysis/probe/{k}/acc": d["acc"] for k, d in res["per_layer"].items()}
            out.metrics.update({f"analysis/probe/{k}/top_share": d["top_share"] for k, d in res["per_layer"].items()})
            out.text = _table([[k, f"{100 * d['acc']:.1f}", f"{d['top_share']:.3f}", f"{d['nonzero']}/{d['dim']}"]
                               for k, d in res["per_layer"].items()],
                              ["layer", "probe acc (%)", "top coef share", "nonzero coefs"])
        elif what == "retrieval":
            from avbench.analysis.retrieval import LOGITS_LAYER, layer_retrieval, with_inputs

            idx = stratified_subset(labels, opts.per_class, seed=0)
            view = with_inputs(run, opts.retrieval_inputs)
            ea, ev = pooled_embeddings(view, idx)
            logits = unimodal_logits(view, idx)
            if logits is not None:
                ea[LOGITS_LAYER], ev[LOGITS_LAYER] = logits
            res = layer_retrieval(ea, ev)
            res["clips"] = int(len(idx))
            res["per_class"] = opts.per_class
            res["inputs"] = opts.retrieval_inputs
            out.metrics = {f"analysis/retrieval/{k}/{m}": v for k, d in res["per_layer"].items() for m, v in d.items()}
            out.text = _table([[k] + [f"{100 * d[f'{dr}_R_at{r}']:.1f}" for dr in ("a2v", "v2a") for r in (1, 5, 10)]
                               + [f"{d['a2v_medr']:.0f}", f"{d['v2a_medr']:.0f}"] for k, d in res["per_layer"].items()],
                              ["layer", "A>V R@1", "R@5", "R@10", "V>A R@1", "R@5", "R@10", "A>V medR", "V>A medR"])
            out.text += f"\n{len(idx)} clips ({opts.per_class} per class); chance R@1 = {100 / max(1, len(idx)):.2f}%"
        else:
            from avbench.analysis.tsne import tsne_layers

            idx = stratified_subset(labels, opts.tsne_per_class, seed=0)
            ea, ev = pooled_embeddings(run, idx)
            t = tsne_layers(ea, ev)
            res = {"layers": t["layers"], "n": t["n"], "skipped": t["skipped"], "clip_index": idx.tolist(),
                   "coords": {k: v.tolist() for k, v in t["coords"].items()}}
            out.text = f"t-SNE of {t['n']} clips x 2 modalities for layers {', '.join(t['layers'])}"
    elif what == "attention":
        why = _needs(run, "attention")
        if why:
            return Outcome(what, run.run_id, "skipped", why)
        from avbench.analysis.attention import run_attention

        idx = np.arange(min(opts.attention_clips, len(split)))
        clip = min(max(0, opts.heatmap_clip), len(idx) - 1)
        res = run_attention(run, idx, clip)
        out.metrics = {f"analysis/attention/{k}/mae": d["mae"] for k, d in res["per_layer"].items()}
        out.text = _table([[k, f"{d['mae']:.5f}", f"{d['mae_unpaired']:.5f}"] for k, d in res["per_layer"].items()],
                          ["layer", "MAE paired A vs V", "MAE unpaired"])
        out.text += f"\n{len(idx)} clips; heatmap of clip {res['heatmap']['clip_id']} at {res['heatmap']['layer']}"
    elif what == "robustness":
        why = _needs(run, "fusion")
        if why:
            return Outcome(what, run.run_id, "skipped", why)
        res = _robustness(run, opts)
        out.metrics = _robustness_metrics(res)
        rows = [["clean", "", f"{100 * res['clean']:.2f}", "", ""]]
        for side, d in res["drop"].items():
            rows.append([f"drop {side}", d["how"], f"{100 * d['value']:.2f}", "", ""])
        for name, c in res["curves"].items():
            eff = "-" if c.get("effective") is None else f"{100 * c['effective'] + 0.0:+.2f}".replace("-0.00", "+0.00")
            rows.append([name, " ".join(f"{100 * v:.0f}" for v in c["values"]),
                         f"{100 * c['values'][-1]:.2f}", f"{100 * c['relative']:.2f}", eff])
        out.text = _table(rows, ["perturbation", "curve (%)", f"{res['primary']} at max (%)",
                                 "relative", "effective"])
        base = res.get("baseline") or f"none found ({opts.baseline})"
        out.text += f"\nbaseline for effective robustness: {base}"
    else:  # event-types
        res, reason = _event_types(run)
        if res is None:
            return Outcome(what, run.run_id, "skipped", reason)
        out.metrics = {f"analysis/event_types/{k}": v for k, v in res.pop("_metrics").items()}
        out.text = res["table"]
    out.result = _clean(res)
    return out


def _robustness(run: LoadedRun, opts: Options) -> dict[str, Any]:
    from avbench.analysis.robustness import NOISE_LEVELS, SHIFT_LEVELS, add_effective, robustness_curves

    primary = run.params.get("primary_metric", "acc")
    res = robustness_curves(run, primary, opts.noise_levels or NOISE_LEVELS, opts.shift_levels or SHIFT_LEVELS)
    base_id = find_baseline(run.tracker, run, opts.baseline)
    base = None
    label = ""
    if base_id is not None:
        if base_id == run.run_id:
            base = res
        else:
            name = artifact_name("robustness")
            if has_artifact(run.tracker, base_id, name):
                base = json.loads(download_artifact(run.tracker, base_id, name).read_text())
                curves = base.get("curves", {})
                if any(curves.get(k, {}).get("levels") != c["levels"] for k, c in res["curves"].items()):
                    base = None  # recorded at other levels
            if base is None:  # compute it once and record it on the baseline run too
                brun = open_run(run.tracker, base_id, cache=opts.cache, device=opts.device)
                # the baseline's own baseline is itself (effective robustness 0)
                bout = analyze(brun, "robustness", Options(**{**opts.__dict__, "baseline": base_id}))
                record(brun, bout, opts)
                base = bout.result
        brun_params = run.tracker.client.get_run(base_id)
        label = f"{brun_params.data.params.get('strategy', '?')} seed {brun_params.data.tags.get('avbench.seed', '?')}"
    return add_effective(res, base, label)


def _robustness_metrics(res: dict[str, Any]) -> dict[str, float]:
    m = {"analysis/robustness/clean": res["clean"]}
    for side, d in res["drop"].items():
        m[f"analysis/robustness/drop_{side}"] = d["value"]
    for name, c in res["curves"].items():
        m[f"analysis/robustness/{name}/relative"] = c["relative"]
        if c.get("effective") is not None:
            m[f"analysis/robustness/{name}/effective"] = c["effective"]
    return m


def _event_types(run: LoadedRun) -> tuple[dict[str, Any] | None, str]:
    from avbench.analysis.event_types import event_type_analysis

    preds = run.predictions
    heads = {k[len("head_"):]: preds[k].astype(np.float32) for k in preds if k.startswith("head_")}
    if not heads:
        why = _needs(run, "heads") or "the run logged no per-head logits"
        return None, why
    split = run.split
    if "ids" in preds and list(preds["ids"]) != list(split.ids):
        return None, "the run's predictions are for other clips than the cache's test split"
    types = split.extras.get("event_type")
    names = run.cache.manifest.info.get("event_types")
    if types is None or not names:
        types, names = None, None
    rep = event_type_analysis(heads, preds["labels"], list(run.cache.task.class_names), types, names)
    res = rep.to_dict()
    res["_metrics"] = rep.metrics()
    return res, ""


def _table(rows: list[list[Any]], headers: list[str]) -> str:
    from tabulate import tabulate

    return tabulate(rows, headers=headers, tablefmt="github")


def record(run: LoadedRun, outcome: Outcome, opts: Options) -> None:
    """Log an outcome to the run: tag, metrics, JSON artifact and picture."""
    client = run.tracker.client
    tag = TAG_PREFIX + outcome.what.replace("-", "_")
    if outcome.status == "skipped":
        client.set_tag(run.run_id, tag, f"skipped: {outcome.reason}"[:5000])
        return
    run.tracker.log_metrics(run.run_id, outcome.metrics)
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / Path(artifact_name(outcome.what)).name
        p.write_text(json.dumps(outcome.result, sort_keys=True))
        run.tracker.log_file(run.run_id, p, ARTIFACT_DIR)
        if opts.plots:
            from avbench.report import plots

            png = Path(d) / (outcome.what.replace("-", "_") + ".png")
            if plots.analysis_figure(outcome.what, outcome.result, run.label, png):
                run.tracker.log_file(run.run_id, png, ARTIFACT_DIR)
    client.set_tag(run.run_id, tag, "done")
