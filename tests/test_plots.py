"""The report's figures, checked on their artists (the data matplotlib draws), never on pixels: sweeps
are connected lines with visible error bars whatever the point count, every row has its own colour and
marker in every panel, labels do not overlap, and every axis says what it measures."""

import numpy as np
import pytest

from avbench.report import plots  # matplotlib is a core dependency (pyproject.toml): no skip without it


def _errorbar_segments(ax):
    """(x, y_low, y_high) of every error bar drawn on ``ax``."""
    from matplotlib.container import ErrorbarContainer

    out = []
    for c in ax.containers:
        if isinstance(c, ErrorbarContainer):
            for coll in c.lines[2]:
                for seg in coll.get_segments():
                    (x0, y0), (x1, y1) = seg
                    out.append((x0, min(y0, y1), max(y0, y1)))
    return out


def test_a_two_point_sweep_draws_a_connected_line_with_visible_error_bars():
    s = plots.Series("uavm", [4.0, 8.0], [0.30, 0.40], [0.02, 0.05])
    fig = plots.draw_panels([("Fusion", [s])], xlabel="s_dim (swept value)", ylabel="acc (%)", percent=True)
    ax = fig.axes[0]
    (line,) = [x for x in ax.lines if x.get_label() == "uavm"]
    assert list(line.get_xdata()) == [4.0, 8.0]  # one series, connected, not one series per point
    assert np.allclose(line.get_ydata(), [30.0, 40.0])
    bars = sorted(_errorbar_segments(ax))
    assert [b[0] for b in bars] == [4.0, 8.0]
    assert np.allclose([(b[1], b[2]) for b in bars], [(28.0, 32.0), (35.0, 45.0)])  # ± std, in percent


def test_one_point_still_shows_its_spread_and_intervals_stay_in_range():
    s = plots.Series("sum", [1.0], [0.99], [0.05])
    ax = plots.draw_panels([("Fusion", [s])], xlabel="lr", ylabel="acc (%)", percent=True).axes[0]
    ((x, lo, hi),) = _errorbar_segments(ax)
    assert x == 1.0 and lo == pytest.approx(94.0) and hi == pytest.approx(100.0)  # clipped at 100%


def test_every_row_keeps_one_distinct_colour_and_marker_across_panels():
    from matplotlib.colors import to_hex

    labels = [f"#{i} row" for i in range(1, 13)]
    groups = [("layer", [plots.Series(lab, ["layer0", "layer1"], [0.5, 0.6]) for lab in labels[:6]]),
              ("code", [plots.Series(lab, ["code0", "code1"], [0.5, 0.6]) for lab in labels[6:]])]
    fig = plots.draw_panels(groups, xlabel="layer", ylabel="accuracy (%)", categorical=True, percent=True)
    seen = {}
    for ax in fig.axes[:2]:
        for line in ax.lines:
            if line.get_label() in labels:
                seen[line.get_label()] = (to_hex(line.get_color()), line.get_marker())
    assert len(seen) == 12 and len(set(seen.values())) == 12  # rows in different panels never look alike
    assert len({c for c, _ in seen.values()}) == 12  # nor share a colour (11 rows in the synth report did)
    again = plots.draw_panels(groups[1:], xlabel="layer", ylabel="%", categorical=True)
    # the style follows the label's position in the figure, so one figure is always consistent
    assert {x.get_label() for x in again.axes[0].lines} >= set(labels[6:])


def _overlaps(boxes):
    boxes = sorted(boxes, key=lambda b: b.x0)
    return any(a.x1 > b.x0 + 0.5 for a, b in zip(boxes, boxes[1:]))


def test_cost_scatter_uses_a_legend_and_its_log_axis_labels_do_not_overlap():
    pts = [plots.Point("#1 constant", 1905.0, 0.23, yerr=0.03), plots.Point("#3 cross_attention", 218.0, 0.31),
           plots.Point("#4 late_fusion", 2202.0, 0.25, yerr=0.03), plots.Point("#10 uavm", 314.0, 0.32, yerr=0.04)]
    fig = plots.draw_scatter(pts, xlabel="training throughput (clips/s)", ylabel="fused acc (%)", log_x=True,
                             hline=1 / 3)
    ax = fig.axes[0]
    assert not ax.texts  # no labels written next to points (they overlapped: "#1#10")
    legend = fig.legends[0]
    assert [t.get_text() for t in legend.get_texts()] == ["chance"] + [p.label for p in pts]
    fig.canvas.draw()
    ticks = [t for t in ax.get_xticklabels() if t.get_text() and t.get_visible()]
    assert len(ticks) >= 2 and not _overlaps([t.get_window_extent() for t in ticks])
    styles = {(p.get_children()[0].get_marker(), str(p.get_children()[0].get_color())) for p in ax.containers}
    assert len(styles) == len(pts)


def test_every_axis_is_labelled_with_its_unit():
    s = plots.Series("a", [0.0, 0.5, 1.0], [0.9, 0.7, 0.4], [0.01, 0.02, 0.03])
    fig = plots.draw_panels([("noise audio", [s]), ("shift", [s])],
                            xlabel="level (fraction, 0-1)", ylabel="fused acc (%)",
                            percent=True)
    for ax in fig.axes[:2]:
        assert "(" in ax.get_xlabel()
    assert "(%)" in fig.axes[0].get_ylabel()
    mixed = plots.draw_panels([("probe", [s], True), ("attention", [s], False, "MAE (attention weight)")],
                              xlabel="n_shared (swept value)", ylabel="score (%)", percent=True)
    assert [ax.get_ylabel() for ax in mixed.axes[:2]] == ["score (%)", "MAE (attention weight)"]


def test_attention_heatmap_colour_bar_says_what_it_measures(tmp_path, monkeypatch):
    saved = []
    monkeypatch.setattr(plots, "_savefig", lambda fig, path: saved.append(fig))
    plots.attention_heatmap({"audio": np.full((2, 5), 0.2), "video": np.full((2, 5), 0.3), "layer": "layer1"},
                            tmp_path / "heat.png")
    (fig,) = saved
    labels = [ax.get_ylabel() for ax in fig.axes]
    assert "attention weight (softmax, 0-1)" in labels and "audio input\nhead" in labels
    # Uniform attention (1/T everywhere, up to float noise) is mid-scale, not stretched to both ends.
    flat = np.full((2, 5), 0.2)
    lo, hi = plots.heatmap_range(flat, flat + 1e-6)
    assert lo == pytest.approx(0.18) and hi == pytest.approx(0.22)
    peaked = np.array([[0.6, 0.1, 0.1, 0.1, 0.1]])
    assert plots.heatmap_range(peaked, flat) == (pytest.approx(0.1), pytest.approx(0.6))  # a real range is kept


@pytest.mark.parametrize("xs", [[218.0, 314.0, 1905.0, 2202.0], [12.0, 120.0, 10500.0, 10600.0], [0.5, 3e6]])
def test_log_axes_never_overlap_their_labels(xs):
    pts = [plots.Point(f"#{i}", x, 0.3) for i, x in enumerate(xs)]
    fig = plots.draw_scatter(pts, xlabel="parameters (count)", ylabel="fused acc (%)", log_x=True)
    fig.canvas.draw()
    ax = fig.axes[0]
    ticks = [t for t in ax.get_xticklabels() if t.get_text() and t.get_visible()
             and ax.get_xlim()[0] <= t.get_position()[0] <= ax.get_xlim()[1]]
    assert len(ticks) >= 2 and not _overlaps([t.get_window_extent() for t in ticks])
