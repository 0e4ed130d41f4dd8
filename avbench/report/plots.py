"""Matplotlib figures (Agg backend, PNG) for analyses and reports.

Every figure is drawn from plain data (the JSON an analysis logs, or aggregated rows), so the report
can redraw any run's picture without touching the model. PNGs are written without a timestamp or
software tag, so the same data gives the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

DPI = 200  # PNG: sharp when a figure is scaled to a paper's column width (3.3 in)
VECTOR_FORMATS = ("pdf", "svg")  # the report writes these beside every PNG
# No timestamps or software tags, so the same data gives the same bytes in every format.
_METADATA = {"png": {"Software": None}, "pdf": {"CreationDate": None, "Producer": None, "Creator": None},
             "svg": {"Date": None, "Creator": None}}
_TAB20 = ["#1f77b4", "#aec7e8", "#ff7f0e", "#ffbb78", "#2ca02c", "#98df8a", "#d62728", "#ff9896", "#9467bd",
          "#c5b0d5", "#8c564b", "#c49c94", "#e377c2", "#f7b6d2", "#7f7f7f", "#c7c7c7", "#bcbd22", "#dbdb8d",
          "#17becf", "#9edae5"]  # matplotlib's tab20
AUDIO_COLOR = "#d62728"  # UAVM Fig. 3D: audio red, video blue
VIDEO_COLOR = "#1f77b4"


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plt.rcParams.update({"figure.max_open_warning": 0, "font.size": 9, "axes.grid": True, "grid.alpha": 0.3})
    return plt


def save(fig: Any, path: str | Path) -> Path:
    plt = _plt()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    _savefig(fig, path, bbox_inches="tight")
    plt.close(fig)
    return path


def _savefig(fig: Any, path: Path, **kw: Any) -> None:
    import matplotlib

    fmt = path.suffix.lstrip(".").lower() or "png"
    with matplotlib.rc_context({"svg.hashsalt": "avbench", "pdf.fonttype": 42, "svg.fonttype": "none"}):
        fig.savefig(path, dpi=DPI, metadata=_METADATA.get(fmt, {}), **kw)


@dataclass
class Series:
    """One line: ``mean[i]`` at ``x[i]`` with an optional ``std`` band (over seeds)."""

    label: str
    x: Sequence[Any]
    mean: Sequence[float]
    std: Sequence[float] | None = None
    style: dict[str, Any] = field(default_factory=dict)


def lines(series: list[Series], path: str | Path, *, title: str = "", xlabel: str = "", ylabel: str = "",
          categorical: bool = False, percent: bool = False, log_x: bool = False, ax_title: str = "",
          hline: float | None = None, hline_label: str = "chance") -> Path:
    """Lines with std bands; ``categorical`` x (layer names) share positions in first-seen order."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(PANEL_W + 0.4, PANEL_H))
    _draw_lines(ax, series, categorical=categorical, percent=percent, log_x=log_x,
                style_of=styles([s.label for s in series]))
    _chance(ax, hline, percent, hline_label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(ax_title or title)
    if len(series) > 1 or (series and series[0].label):
        _legend_below(fig, *ax.get_legend_handles_labels())
    return save(fig, path)


PANEL_W, PANEL_H = 2.6, 2.3  # inches: three panels fit a two-column paper's text width
MARKERS = "osD^vP*Xph<>"
BAND_MAX = 3  # more series than this: error bars only (with a small dodge), no overlapping bands
_TAB10 = _TAB20[::2]  # matplotlib's tab10


def styles(labels: list[str]) -> dict[str, dict[str, Any]]:
    """One colour and marker per label, the same in every panel of a figure: labels 0-9 get tab10's
    colours, 10-19 the light shade of the same hue (tab20), then round again; marker i mod 12 (so no
    two of the first 60 labels share both), dashed from the 11th."""
    out: dict[str, dict[str, Any]] = {}
    for label in labels:
        if label not in out:
            i = len(out)
            color = _TAB20[(2 * i + (i // 10) % 2) % len(_TAB20)]  # even entries are tab10, odd its light shades
            out[label] = {"color": color, "marker": MARKERS[i % len(MARKERS)],
                          "ls": "-" if i < len(_TAB10) else "--"}
    return out


def _chance(ax: Any, level: float | None, percent: bool, label: str = "chance") -> None:
    if level is None or not np.isfinite(level):
        return
    ax.axhline(level * (100.0 if percent else 1.0), color="0.35", ls=":", lw=1.0, label=label, zorder=1)


def _legend_below(fig: Any, handles: list[Any], labels: list[str]) -> None:
    """A compact legend under the axes: never over a line, never taking the plot's width."""
    if not handles:
        return
    ncol = 1 if max(len(x) for x in labels) > 38 else 2 if max(len(x) for x in labels) > 18 else 3
    fig.legend(handles, labels, fontsize=6.5, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=ncol,
               frameon=False, handlelength=2.2, columnspacing=1.0)


def _draw_lines(ax: Any, series: list[Series], *, categorical: bool, percent: bool, log_x: bool,
                style_of: dict[str, dict[str, Any]] | None = None) -> None:
    """Each series a connected line with markers; its spread over seeds as error bars at every point
    (visible whatever the number of points), plus a band when there are few series and 2+ points."""
    order: list[Any] = []
    if categorical:
        for s in series:
            for x in s.x:
                if x not in order:
                    order.append(x)
    scale = 100.0 if percent else 1.0
    style_of = style_of or styles([s.label for s in series])
    bands = len(series) <= BAND_MAX
    for i, s in enumerate(series):
        xs = np.array([order.index(x) for x in s.x], dtype=float) if categorical else np.asarray(s.x, dtype=float)
        if categorical and len(series) > 1:  # dodge, so equal values do not hide each other
            xs = xs + min(0.08, 0.3 / len(series)) * (i - (len(series) - 1) / 2)
        m = np.asarray(s.mean, dtype=float) * scale
        style = {**style_of.get(s.label, {}), **s.style}
        ax.plot(xs, m, markersize=3.5, lw=1.2, label=s.label, **style)
        if s.std is not None:
            sd = np.nan_to_num(np.asarray(s.std, dtype=float)) * scale
            if np.any(sd > 0):
                lo, hi = m - sd, m + sd
                if percent:  # a percentage cannot leave [0, 100]
                    lo, hi = np.clip(lo, 0.0, 100.0), np.clip(hi, 0.0, 100.0)
                color = ax.lines[-1].get_color()
                if bands and len(xs) > 1:
                    ax.fill_between(xs, lo, hi, alpha=0.15, color=color, lw=0)
                ax.errorbar(xs, m, yerr=[m - lo, hi - m], fmt="none", ecolor=color, elinewidth=0.9,
                            capsize=2.5, alpha=0.9)
    if categorical:
        ax.set_xticks(range(len(order)))
        ax.set_xticklabels([str(o) for o in order], rotation=45 if len(order) > 4 else 0, fontsize=7,
                           ha="right" if len(order) > 4 else "center")
    if log_x:
        ax.set_xscale("log", base=2)
        ticks = sorted({float(x) for s in series for x in s.x})
        ax.set_xticks(ticks)
        ax.set_xticklabels([f"{t:g}" for t in ticks])
        ax.minorticks_off()


def panels(groups: list[tuple], path: str | Path, **kw: Any) -> Path:
    """``draw_panels`` saved to ``path`` (PNG, PDF or SVG by its suffix)."""
    return save(draw_panels(groups, **kw), path)


def draw_panels(groups: list[tuple], *, xlabel: str = "", ylabel: str = "", categorical: bool = False,
                percent: bool = False, log_x: bool = False, title: str = "", hline: float | None = None,
                hline_label: str = "chance") -> Any:
    """Several line plots (e.g. Audio / Video / Fusion, or one per perturbation), three per row.

    A group is ``(title, series)`` or ``(title, series, percent)`` to override ``percent`` for that
    panel (a panel then labels its own y axis when it differs from the first). ``hline``: a chance
    level (a fraction when ``percent``) drawn as a dotted line in the panels of the main unit. One
    compact legend sits under all panels."""
    plt = _plt()
    n = max(1, len(groups))
    ncols = min(n, 3)
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(PANEL_W * ncols + 0.4, PANEL_H * nrows), squeeze=False)
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.set_visible(False)
    style_of = styles([s.label for group in groups for s in group[1]])  # one style per label in every panel
    for ax, group in zip(flat, groups):
        name, series = group[0], group[1]
        pct = group[2] if len(group) > 2 else percent
        _draw_lines(ax, series, categorical=categorical, percent=pct, log_x=log_x, style_of=style_of)
        if pct == percent:
            _chance(ax, hline, pct, hline_label)
        ax.set_title(name, fontsize=8)
        ax.set_xlabel(xlabel)
        if pct != percent:  # a panel in other units than the figure's: its own label (a 4th element) or %
            ax.set_ylabel(group[3] if len(group) > 3 else ("%" if pct else "value"))
    for row in axes:
        row[0].set_ylabel(ylabel)
    seen: dict[str, Any] = {}
    for ax in flat[:n]:  # one legend for all panels, outside them, so no line is hidden
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab and not lab.startswith("_"):
                seen.setdefault(lab, h)
    if seen:
        _legend_below(fig, list(seen.values()), list(seen))
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


def _short_number(v: float) -> str:
    """A tick label: 0.5, 20, 500, 2k, 10k, 1M, 3G."""
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:g}{unit}"
    return f"{v:g}"


def _log_axis(ax: Any) -> None:
    """A log x axis in plain numbers, no minor labels (matplotlib's default writes ``2×10^2 3×10^2 ...``
    at every minor tick, which overlap on a narrow range): 1-2-5 ticks (200, 500, 1,000) across up to
    1.6 decades, at most six powers of ten beyond; 2k, 1M for thousands and millions."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_xscale("log")
    lo, hi = (max(v, 1e-300) for v in ax.get_xlim())
    span = np.log10(hi / lo)  # decades shown: 1-2-5 ticks only where they have room
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0) if span <= 1.6 else (1.0,), numticks=6))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: _short_number(v)))
    ax.xaxis.set_minor_formatter(NullFormatter())


@dataclass
class Point:
    label: str
    x: float
    y: float
    xerr: float = 0.0
    yerr: float = 0.0


def scatter(points: list[Point], path: str | Path, **kw: Any) -> Path:
    """``draw_scatter`` saved to ``path``."""
    return save(draw_scatter(points, **kw), path)


def draw_scatter(points: list[Point], *, xlabel: str, ylabel: str, title: str = "", log_x: bool = False,
                 percent: bool = True, hline: float | None = None) -> Any:
    """One marker per point, each its own colour and marker, named in a legend under the axes (labels
    written next to points overlap when points are close)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(PANEL_W + 0.9, PANEL_H + 0.3))
    _chance(ax, hline, percent)
    scale = 100.0 if percent else 1.0
    style_of = styles([p.label for p in points])
    for p in points:
        st = style_of[p.label]
        ax.errorbar([p.x], [p.y * scale], xerr=[p.xerr] if p.xerr else None, yerr=[p.yerr * scale] if p.yerr else None,
                    fmt=st["marker"], color=st["color"], markersize=4.5, capsize=2.5, label=p.label, ls="none")
    if log_x:
        _log_axis(ax)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    _legend_below(fig, *ax.get_legend_handles_labels())
    return fig


def tsne_grid(result: dict[str, Any], path: str | Path, title: str = "") -> Path | None:
    layers = result.get("layers") or []
    if not layers:
        return None
    plt = _plt()
    n = result["n"]
    cols = min(4, len(layers))
    rows = int(np.ceil(len(layers) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.4 * cols, 2.4 * rows + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, layer in zip(axes.flat, layers):
        c = np.asarray(result["coords"][layer])
        ax.axis("on")
        ax.grid(False)
        ax.scatter(c[:n, 0], c[:n, 1], s=4, c=AUDIO_COLOR, label="audio")
        ax.scatter(c[n:, 0], c[n:, 1], s=4, c=VIDEO_COLOR, label="video")
        ax.set_title(layer, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    axes.flat[0].legend(fontsize=6, loc="best")
    fig.suptitle(title or "t-SNE: audio (red) and video (blue) representations", fontsize=9)
    return save(fig, path)


def heatmap_range(*maps: np.ndarray) -> tuple[float, float]:
    """The shared colour scale of attention maps: their full range, widened to at least +-10% around
    uniform attention (1/T), so a map that attends uniformly shows as uniform mid-scale colour
    rather than a difference of 1e-5 stretched over the whole colour bar (UAVM's last layer on synth
    attends uniformly; with a bare min-max scale its audio map drew dark and its video map teal)."""
    uniform = 1.0 / maps[0].shape[-1]
    lo = min(float(m.min()) for m in maps)
    hi = max(float(m.max()) for m in maps)
    return min(lo, 0.9 * uniform), max(hi, 1.1 * uniform)


def attention_heatmap(heat: dict[str, Any], path: str | Path, title: str = "") -> Path:
    plt = _plt()
    a = np.asarray(heat["audio"])
    v = np.asarray(heat["video"])
    vmin, vmax = heatmap_range(a, v)
    fig, axes = plt.subplots(2, 1, figsize=(6.0, 0.5 * a.shape[0] * 2 + 1.4), squeeze=False)
    for ax, (name, m) in zip(axes[:, 0], (("audio input", a), ("video input", v))):
        im = ax.imshow(m, aspect="auto", cmap="viridis", vmin=vmin, vmax=vmax, interpolation="nearest")
        ax.grid(False)
        ax.set_ylabel(f"{name}\nhead")
        ax.set_yticks(range(m.shape[0]))
    axes[-1, 0].set_xlabel("time step (attention received, mean over queries)")
    fig.colorbar(im, ax=axes[:, 0].tolist(), shrink=0.8, label="attention weight (softmax, 0-1)")
    fig.suptitle(title or f"{heat.get('layer', '')} attention, clip {heat.get('clip_id', '')}", fontsize=9)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _savefig(fig, path)
    plt.close(fig)
    return path


def robustness_title(curve: str) -> str:
    """A robustness panel's title with what its level means: noise is the fraction of noise mixed into
    the features, shift the fraction of the clip's steps audio is moved by."""
    if curve.startswith("noise"):
        return f"{curve} (level: noise fraction)"
    if curve.startswith("shift"):
        return f"{curve} (level: shift / T)"
    return curve


def analysis_figure(what: str, result: dict[str, Any] | None, title: str, path: str | Path) -> bool:
    """The picture of one run's analysis (logged next to its JSON). False when there is none."""
    if not result:
        return False
    per_layer = result.get("per_layer", {})
    if what == "probe" and result.get("layers"):
        layers = result["layers"]
        plt = _plt()
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9.0, 3.4))
        ax1.plot(range(len(layers)), [100 * per_layer[k]["acc"] for k in layers], marker="o")
        ax1.set_xticks(range(len(layers)))
        ax1.set_xticklabels(layers, rotation=45, fontsize=7)
        ax1.set_ylabel("modality probe accuracy (%)")
        ax1.set_ylim(40, 102)
        for k in layers:
            coef = np.asarray(per_layer[k]["coef_sorted"])
            ax2.plot(np.arange(1, len(coef) + 1), coef, label=k)
        ax2.set_xscale("log")
        ax2.set_xlabel("coefficient rank")
        ax2.set_ylabel("|coefficient|")
        ax2.legend(fontsize=6)
        fig.suptitle(title, fontsize=9)
        save(fig, path)
        return True
    if what == "retrieval" and result.get("layers"):
        layers = result["layers"]
        def recall(layer: str, key: str) -> float:  # MLflow's spelling, or the older R@k
            return per_layer[layer].get(key.replace("@", "_at"), per_layer[layer].get(key))

        groups = [(f"{d} R@{r}", [Series("", layers, [recall(k, f"{d}_R@{r}") for k in layers])])
                  for d in ("a2v", "v2a") for r in (1, 5)]
        panels(groups, path, categorical=True, percent=True, ylabel="recall (%)", title=title)
        return True
    if what == "attention" and result.get("layers"):
        layers = result["layers"]
        plt = _plt()
        fig = plt.figure(figsize=(9.0, 3.4))
        ax1 = fig.add_subplot(1, 2, 1)
        ax1.plot(range(len(layers)), [per_layer[k]["mae"] for k in layers], marker="o", label="paired A vs V")
        ax1.plot(range(len(layers)), [per_layer[k]["mae_unpaired"] for k in layers], marker="x", ls="--",
                 label="unpaired control")
        ax1.set_xticks(range(len(layers)))
        ax1.set_xticklabels(layers, rotation=45, fontsize=7)
        ax1.set_ylabel("attention map MAE")
        ax1.legend(fontsize=7)
        heat = result["heatmap"]
        for j, side in enumerate(("audio", "video")):
            ax = fig.add_subplot(2, 2, 2 + 2 * j)
            ax.imshow(np.asarray(heat[side]), aspect="auto", cmap="viridis", interpolation="nearest")
            ax.grid(False)
            ax.set_ylabel(f"{side}\nhead", fontsize=7)
        fig.suptitle(f"{title}; heatmap: {heat['layer']}, clip {heat['clip_id']}", fontsize=9)
        save(fig, path)
        return True
    if what == "tsne":
        return tsne_grid(result, path, title) is not None
    if what == "robustness" and result.get("curves"):
        groups = []
        for name, c in result["curves"].items():
            s = [Series("this run", c["levels"], c["values"])]
            if c.get("baseline_values"):
                s.append(Series(f"baseline ({result.get('baseline')})", c["levels"], c["baseline_values"],
                                style={"ls": "--"}))
            groups.append((robustness_title(name), s))
        panels(groups, path, percent=True, xlabel="level (fraction, 0-1)", ylabel=f"fused {result.get('primary', '')} (%)", title=title)
        return True
    if what == "event-types" and result.get("heads"):
        plt = _plt()
        fig, ax = plt.subplots(figsize=(6.0, 3.2))
        heads = result["heads"]
        ax.bar(range(len(heads)), [result["clip_share"][h] for h in heads])
        ax.set_xticks(range(len(heads)))
        ax.set_xticklabels(heads)
        ax.set_ylabel("share of clips assigned")
        ax.set_title(title, fontsize=9)
        save(fig, path)
        return True
    return False
