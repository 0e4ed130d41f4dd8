"""``avbench report``: one dataset's comparison as Markdown and as a self-contained HTML page.

Everything comes from MLflow: the comparison rows (parent runs, their finished seeds), the per-clip
predictions of every seed (for the paired bootstrap), the analyses ``avbench analyze`` logged, and
the sweep tags ``avbench sweep`` set. The report is built as a list of blocks and rendered twice:
Markdown next to PNG files in ``figures/``, and HTML with the same PNGs inlined as base64, so the
page can be mailed or attached on its own.

Regeneration is deterministic up to timing: rows, seeds and layers are sorted, no run ids, paths or
dates are printed, bootstrap and t-SNE are seeded, and PNGs carry no timestamp. Throughput numbers
(and the two plots that use them) change from one training to the next.

What is missing is said, never dropped: strategies without runs, rows with one seed, analyses not run
or skipped (with the strategy's reason), columns a strategy does not evaluate, and sweeps.
"""

from __future__ import annotations

import base64
import functools
import html
import json
import math
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from avbench import results
from avbench.errors import UserError
from avbench.metrics.stats import mean_std_ci
from avbench.report import plots
from avbench.report import significance as sig
from avbench.report.table import COLUMNS, TableRow, collect_rows, config_label, format_count

TITLES = {"audio": "Audio", "video": "Video", "fusion": "Fusion"}
ANALYSES = ("probe", "retrieval", "attention", "tsne", "robustness", "event-types")
SWEEP_PREFIX = "avbench.sweep."
CREATED_BY = "avbench.created_by"


# --- document blocks ----------------------------------------------------------------------------
@dataclass
class Heading:
    level: int
    text: str


@dataclass
class Para:
    text: str  # may use **bold** and `code`


@dataclass
class Bullets:
    items: list[str]


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]


@dataclass
class Figure:
    path: str  # relative to the output directory
    caption: str


@dataclass
class Pre:
    text: str


Block = Heading | Para | Bullets | Table | Figure | Pre


def _md_cell(s: Any) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def to_markdown(blocks: list[Block]) -> str:
    out: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            out.append("#" * b.level + " " + b.text)
        elif isinstance(b, Para):
            out.append(b.text)
        elif isinstance(b, Bullets):
            out.append("\n".join(f"- {i}" for i in b.items))
        elif isinstance(b, Table):
            lines = ["| " + " | ".join(_md_cell(h) for h in b.headers) + " |",
                     "|" + "|".join("---" for _ in b.headers) + "|"]
            lines += ["| " + " | ".join(_md_cell(c) for c in r) + " |" for r in b.rows]
            out.append("\n".join(lines))
        elif isinstance(b, Figure):
            out.append(f"![{b.caption}]({b.path})\n\n*{b.caption}*")
        elif isinstance(b, Pre):
            out.append("```\n" + b.text + "\n```")
    return "\n\n".join(out) + "\n"


def _inline_html(text: str) -> str:
    t = html.escape(text)
    t = re.sub(r"`([^`]+)`", r"<code>\1</code>", t)
    t = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", t)
    t = re.sub(r"\[([^\]]+)\]\(#([A-Za-z0-9_\-]+)\)", r'<a href="#\2">\1</a>', t)
    return t


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1200px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
table{border-collapse:collapse;margin:1em 0;font-size:0.85em}th,td{border:1px solid #ccc;padding:3px 6px;
text-align:left;vertical-align:top}th{background:#f3f3f3}tr:nth-child(even) td{background:#fafafa}
code,pre{background:#f5f5f5;font-size:0.9em}pre{padding:0.6em;overflow-x:auto}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #eee}figcaption{font-size:0.85em;color:#555}
"""


def to_html(blocks: list[Block], root: Path, title: str) -> str:
    parts = [f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
             f"<style>{CSS}</style></head><body>"]
    for b in blocks:
        if isinstance(b, Heading):
            slug = re.sub(r"[^a-z0-9]+", "-", b.text.lower()).strip("-")
            parts.append(f"<h{b.level} id=\"{slug}\">{html.escape(b.text)}</h{b.level}>")
        elif isinstance(b, Para):
            parts.append(f"<p>{_inline_html(b.text)}</p>")
        elif isinstance(b, Bullets):
            parts.append("<ul>" + "".join(f"<li>{_inline_html(i)}</li>" for i in b.items) + "</ul>")
        elif isinstance(b, Table):
            head = "".join(f"<th>{html.escape(str(h))}</th>" for h in b.headers)
            body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in b.rows)
            parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif isinstance(b, Figure):
            data = base64.b64encode((root / b.path).read_bytes()).decode("ascii")
            parts.append(f"<figure><img alt=\"{html.escape(b.caption)}\" src=\"data:image/png;base64,{data}\">"
                         f"<figcaption>{html.escape(b.caption)}</figcaption></figure>")
        elif isinstance(b, Pre):
            parts.append(f"<pre>{html.escape(b.text)}</pre>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


# --- data from MLflow ---------------------------------------------------------------------------
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
    infos: list[RowInfo] = []
    for i, r in enumerate(rows, start=1):
        parent = tracker.client.get_run(r.parent_run_id)
        kids = sorted(tracker.children(r.parent_run_id), key=lambda c: int(c.data.tags.get("avbench.seed", 0)))
        sweeps = {}
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
                       params=dict(parent.data.params))
        if kids:
            res = _download_json(tracker, kids[0].info.run_id, "result.json") or {}
            info.skipped_columns = dict(res.get("skipped") or {})
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


# --- formatting ---------------------------------------------------------------------------------
def pct(v: float | None, digits: int = 2) -> str:
    return "-" if v is None or not math.isfinite(v) else f"{100 * v:.{digits}f}"


def cell(s: dict[str, float] | None, metric: str = "acc") -> str:
    """``mean ± std (ci_low–ci_high)`` in percent; CI only with 2+ seeds, clipped to the metric's range."""
    if not s or s.get("n", 0) == 0 or not _finite(s.get("mean")):
        return "-"
    if s["n"] == 1:
        return f"{pct(s['mean'])} (1 seed)"
    lo, hi = results.clip_interval(s, metric)
    return f"{pct(s['mean'])} ± {pct(s['std'])} ({pct(lo)}–{pct(hi)})"


def mean_std_text(values: list[float], scale: float = 100.0, digits: int = 2, signed: bool = False) -> str:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return "-"
    s = mean_std_ci(vals)
    f = f"{{:{'+' if signed else ''}.{digits}f}}"
    mean = scale * s["mean"]
    m = f.format(0.0 if abs(mean) < 0.5 * 10 ** -digits else mean)  # no "-0.00"
    return m if s["n"] == 1 else f"{m} ± {scale * s['std']:.{digits}f}"


def _rate(s: dict[str, float] | None) -> str:
    return "-" if not s or not math.isfinite(s.get("mean", float("nan"))) else f"{s['mean']:.0f}"


def converged_count(s: dict[str, float] | None) -> tuple[int, int] | None:
    """``(seeds converged, seeds with a recorded flag)`` from the mean of the 0/1 ``converged`` metric."""
    if not s or not s.get("n"):
        return None
    n = int(s["n"])
    return int(round(s["mean"] * n)), n


def _converged(s: dict[str, float] | None) -> str:
    got = converged_count(s)
    return "-" if got is None else f"{got[0]}/{got[1]}" + ("" if got[0] == got[1] else " ⚠")


def _converged_json(s: dict[str, float] | None) -> dict[str, int] | None:
    got = converged_count(s)
    return None if got is None else {"seeds_converged": got[0], "seeds_flagged": got[1]}


def _params(s: dict[str, float] | None) -> str:
    if not s or not math.isfinite(s.get("mean", float("nan"))):
        return "-"
    return format_count(s["mean"])


# --- significance -------------------------------------------------------------------------------
def comparable_groups(infos: list[RowInfo]) -> list[list[RowInfo]]:
    """Rows that may be compared: same protocol, same cache, same primary metric."""
    groups: dict[tuple[str, str, str], list[RowInfo]] = {}
    for r in infos:
        groups.setdefault((r.row.protocol, r.cache_key, r.row.primary), []).append(r)
    return [groups[k] for k in sorted(groups)]


def best_marks(group: list[RowInfo], n_boot: int | None) -> dict[tuple[int, str], str]:
    """Per (row index, column): ★ best; † below the best, called and intervals apart; ‡ called though
    the intervals overlap. Calls are Holm-corrected over every pair of ``group`` in that column."""
    marks: dict[tuple[int, str], str] = {}
    for col in COLUMNS:
        have = [r for r in group if col in r.row.cells and _finite(r.row.cells[col]["mean"])]
        if len(have) < 2:
            continue
        best = max(have, key=lambda r: (r.row.cells[col]["mean"], -r.index))
        marks[(best.index, col)] = "★"
        for r in have:
            if r is best:
                continue
            v = verdict(r, best, col, n_boot, have)
            if v.sign < 0:
                marks[(r.index, col)] = "†" if v.apart else "‡"
    return marks


def _finite(x: Any) -> bool:
    return x is not None and math.isfinite(x)


_FAMILIES: dict[tuple[tuple[int, ...], str], dict[tuple[int, int], sig.Verdict]] = {}


def family(rows: list[RowInfo], col: str, n_boot: int | None) -> dict[tuple[int, int], sig.Verdict]:
    """Holm-corrected verdicts of every pair of ``rows`` (one table's rows that have ``col``)."""
    key = (tuple(id(r) for r in rows), col)
    if key not in _FAMILIES:
        items = {r.index: (r.row.cells[col], r.scores.get(col), r.ids) for r in rows}
        labels = next((r.labels for r in rows if r.labels is not None), None)
        _FAMILIES[key] = sig.compare_family(items, labels, rows[0].row.primary, n_boot)
    return _FAMILIES[key]


def verdict(a: RowInfo, b: RowInfo, col: str, n_boot: int | None, rows: list[RowInfo]) -> sig.Verdict:
    """Row ``a`` against row ``b`` within the family ``rows`` (which holds both)."""
    return family(rows, col, n_boot)[(a.index, b.index)]


def chance_levels(group: list[RowInfo]) -> dict[str, float | None]:
    """Per column, the chance level of the group's primary metric on its test split."""
    primary = group[0].row.primary
    labels = next((r.labels for r in group if r.labels is not None), None)
    classes = next((int(float(r.params[k])) for r in group for k in ("num_classes", "data.classes")
                    if _is_number(r.params.get(k))), None)
    level = results.chance_level(primary, labels=labels, num_classes=classes)
    return {c: level for c in COLUMNS}


def _param_value(v: str) -> Any:
    """An MLflow param string back to what ``--set`` accepts (lists were logged as JSON)."""
    if v.startswith(("[", "{")):
        try:
            return json.loads(v)
        except json.JSONDecodeError:
            return v
    return v


def canonical_key(r: RowInfo) -> str | None:
    """A key equal for rows that build the same model and train and test it the same way: the
    strategy's ``canonical_config`` of the row's config, with the recipe, data, cache and protocol.
    None when the strategy cannot be loaded (its config cannot be read back then)."""
    import dataclasses

    from avbench import config as cfgmod
    from avbench import registry

    target = r.params.get("strategy_target") or r.row.strategy
    try:
        cls = registry.load_strategy(target)
        raw = {k[len("model."):]: _param_value(v) for k, v in r.params.items() if k.startswith("model.")}
        cfg = cls.canonical_config(cfgmod.apply_overrides(cls.Config(), raw, where=f"row {r.short}"))
    except Exception:  # a plugin that is gone, or params from an older config: never merge those
        return None
    rest = {k: v for k, v in r.params.items() if k.startswith(("train.", "data."))}
    return json.dumps([cls.name, dataclasses.asdict(cfg), rest, r.cache_key, r.row.protocol,
                       r.params.get("train_modality", ""), r.row.primary], sort_keys=True, default=str)


def merge_identical(infos: list[RowInfo]) -> dict[int, RowInfo]:
    """Rows with equal ``canonical_key``: the one with most seeds (then the lowest number) is shown,
    the others map to it."""
    groups: dict[str, list[RowInfo]] = {}
    for r in infos:
        key = canonical_key(r)
        if key is not None:
            groups.setdefault(key, []).append(r)
    merged: dict[int, RowInfo] = {}
    for rows in groups.values():
        keep = min(rows, key=lambda r: (-len(r.seeds), r.index))
        merged.update({r.index: keep for r in rows if r is not keep})
    return merged


# --- the report ---------------------------------------------------------------------------------
@dataclass
class ReportResult:
    markdown: Path
    html: Path
    figures: list[Path]
    missing: list[str]
    summary: dict[str, Any]


class _Builder:
    def __init__(self, out: Path, dataset: str, infos: list[RowInfo], n_boot: int | None):
        self.out = out
        self.dataset = dataset
        self.infos = infos
        self.n_boot = n_boot
        self.blocks: list[Block] = []
        self.missing: list[str] = []
        self.figures: list[Path] = []
        self.merged = merge_identical(infos)  # dropped row index -> the row shown for it
        self.chance = {id(g[0]): chance_levels(g) for g in comparable_groups(infos)}

    def shown(self, rows: list[RowInfo]) -> list[RowInfo]:
        """``rows`` without those merged into an identical row."""
        return [r for r in rows if r.index not in self.merged]

    def chance_of(self, r: RowInfo) -> dict[str, float | None]:
        for g in comparable_groups(self.infos):
            if r in g:
                return self.chance[id(g[0])]
        return {}

    def add(self, *blocks: Block) -> None:
        self.blocks.extend(blocks)

    def figure(self, name: str, caption: str, draw) -> None:
        """Draw once per format: PNG (shown, inlined in the HTML) and PDF/SVG beside it for papers."""
        path = self.out / "figures" / f"{name}.png"
        if draw(path) is not None:
            self.figures.append(path)
            for ext in plots.VECTOR_FORMATS:
                draw(path.with_suffix(f".{ext}"))
            self.add(Figure(f"figures/{name}.png", caption))

    # --- sections ---
    def settings(self) -> None:
        """The recipe and data settings of the runs: shared values once, varying keys named."""
        keys = sorted({k for r in self.infos for k in r.params if k.startswith(("train.", "data."))})
        shared, varying = [], []
        for k in keys:
            vals = {r.params.get(k, "-") for r in self.infos}
            (shared if len(vals) == 1 else varying).append((k, sorted(vals)))
        if shared:
            self.add(Para("Settings shared by every row: " + ", ".join(f"`{k}={v[0]}`" for k, v in shared) + "."))
        if varying:
            self.add(Para("Settings that differ between rows: " + ", ".join(
                f"`{k}` ({', '.join(v)})" for k, v in varying) + "."))

    def comparison(self) -> None:
        main = self.shown([r for r in self.infos if not r.from_sweep])
        swept = self.shown([r for r in self.infos if r.from_sweep])
        self.add(Heading(2, "Comparison"))
        self.add(Para("Primary metric of each row in % on the test split: mean ± std over seeds, then the 95% "
                      "t-interval of the mean over seeds in parentheses. Parameters and throughput (clips/s, "
                      "training and inference) are means over seeds; throughput depends on the machine and its "
                      "load and is the only part of this report that changes when it is regenerated."))
        self._table(main, "Main rows")
        if swept:
            self.add(Heading(3, "Sweep points"))
            self.add(Para("Rows created by `avbench sweep` (plotted in [Sweeps](#sweeps))."))
            self._table(swept, "")
        self.add(Heading(3, "How differences are called"))
        self.add(Para("Multiple comparisons are controlled: within one table column (rows on the same test split, "
                      "protocol and metric), every pair of rows gets a p-value, from a seed-matched paired bootstrap "
                      "over test clips where both rows have per-clip predictions of shared seeds (2000 resamples for "
                      "accuracy, 200 otherwise; two-sided, from the bootstrap standard error), else from Welch's "
                      "t-test over seeds. Holm's step-down method adjusts the p-values of all pairs of that table "
                      "column, and a difference is called only when its adjusted p-value is below 0.05, so the "
                      "chance of calling any difference that is not there is at most 5% per table column."))
        self.add(Para("In the tables: ★ is the column's best row among rows on the same test split and protocol; "
                      "† marks a row called below the best whose 95% interval over seeds does not overlap the "
                      "best's; ‡ marks a row called below the best although the intervals overlap. No mark: no "
                      "difference from the best is called. ° marks a cell not above chance (see below). In the "
                      "pairwise matrices below, the cell in row i, column j compares row i with row j:"))
        self.add(Bullets([f"`{m}`: {t}" for m, t in sig.LEGEND]))
        self.chance_section()
        self.convergence_section()
        if self.merged:
            self.add(Para("Rows whose resolved configurations are identical (same model after the strategy "
                          "resolves its defaults, same recipe, data, cache and protocol) are shown once:"))
            by_index = {r.index: r for r in self.infos}
            self.add(Bullets([f"{by_index[d].short} {by_index[d].label} is {k.short} {k.label}"
                              for d, k in sorted(self.merged.items())]))
        for col in COLUMNS:
            self._pairwise(main, col)

    def chance_section(self) -> None:
        """The chance level of each table and every cell that is not above it, said in words."""
        self.add(Heading(3, "Chance level"))
        lines, flagged = [], []
        for g in comparable_groups(self.shown(self.infos)):
            ch = self.chance_of(g[0])
            have = {c: v for c, v in ch.items() if v is not None}
            if not have:
                lines.append(f"{g[0].row.primary}, {g[0].row.protocol}: unknown (no per-clip predictions and no "
                             f"class count recorded)")
                continue
            lines.append(f"{g[0].row.primary} ({g[0].row.protocol}): " + ", ".join(
                f"{TITLES[c]} {pct(v)}%" for c, v in have.items()))
            for r in g:
                cols = [TITLES[c] for c in COLUMNS if results.not_above_chance(r.row.cells.get(c) or {}, have.get(c))]
                if cols:
                    flagged.append(f"{r.short} {r.label}: {', '.join(cols)}")
        self.add(Para("What a classifier that knows nothing scores on the test split: for accuracy, always "
                      "predicting the most frequent test class (1/C with balanced classes); for mAP, the mean "
                      "class prevalence; 0.5 for mAUC. It is the dotted line in the figures. A cell is marked ° "
                      "when it is not shown to be above chance: the lower end of its 95% interval over seeds "
                      "(its value, with one seed) is at or below the chance level."))
        self.add(Bullets(lines))
        if flagged:
            self.add(Para("**Not above chance** (these rows learned nothing the test can see, in these columns):"))
            self.add(Bullets(flagged))
            self.missing += [f"not above chance: {f}" for f in flagged]

    def convergence_section(self) -> None:
        """Which rows stopped while their validation metric was still rising, said in words."""
        self.add(Heading(3, "Convergence"))
        self.add(Para("The converged column counts the seeds whose training had converged: each run records its "
                      "validation mAP at evenly spaced steps, and a run is *not converged* when that metric still "
                      "rose over its last 20% of steps (least-squares rise above 0.01 and above two standard "
                      "errors; README \"A fair comparison protocol\"). With `train.validation=train-on-all` the "
                      "curve is measured on training clips. A row with a seed not converged (⚠) may rank below "
                      "what its strategy can reach with more steps."))
        late = []
        for r in self.shown(self.infos):
            got = converged_count(r.row.extra.get("converged"))
            if got is not None and got[0] < got[1]:
                late.append(f"{r.short} {r.label}: {got[1] - got[0]} of {got[1]} seed(s) not converged")
        if late:
            self.add(Bullets(late))
            self.missing += [f"not converged: {x}" for x in late]
        else:
            self.add(Para("Every seed of every row with a recorded validation curve converged."))

    def _table(self, rows: list[RowInfo], _title: str) -> None:
        if not rows:
            self.add(Para("(no rows)"))
            return
        marks: dict[tuple[int, str], str] = {}
        for g in comparable_groups(rows):
            marks.update(best_marks(g, self.n_boot))
        body = []
        for r in rows:
            t = r.row
            chance = self.chance_of(r)
            cells = [cell(t.cells.get(c), t.primary) + marks.get((r.index, c), "")
                     + ("°" if results.not_above_chance(t.cells.get(c) or {}, chance.get(c)) else "")
                     for c in COLUMNS]
            body.append([r.short, t.name, config_label(t, [x.row for x in self.infos]) or "default",
                         t.protocol, t.primary, len(r.seeds)] + cells
                        + [_converged(t.extra.get("converged")), _params(t.extra.get("parameters")),
                           _rate(t.extra.get("train_clips_per_s")),
                           _rate(t.extra.get("eval_clips_per_s")), r.group])
        self.add(Table(["#", "strategy", "config", "protocol", "metric", "seeds", "Audio", "Video", "Fusion",
                        "converged", "params", "train clips/s", "infer clips/s", "group"], body))

    def _pairwise(self, rows: list[RowInfo], col: str) -> None:
        for g in comparable_groups(rows):
            have = [r for r in g if col in r.row.cells and _finite(r.row.cells[col]["mean"])]
            if len(have) < 2:
                continue
            body = []
            for a in have:
                line = [f"{a.short} {a.label}"]
                for b in have:
                    line.append("" if a is b else sig.pretty(verdict(a, b, col, self.n_boot, have).mark))
                body.append(line)
            proto = g[0].row.protocol
            suffix = f" ({proto})" if proto != "standard" else ""
            self.add(Heading(4, f"Pairwise: {TITLES[col]} {g[0].row.primary}{suffix}"))
            self.add(Table(["row vs column"] + [r.short for r in have], body))
            if any(verdict(a, b, col, self.n_boot, have).mark == "n/a" for a in have for b in have if a is not b):
                self.missing.append(f"some {TITLES[col]} comparisons are n/a: rows with fewer than 2 seeds and no "
                                    f"shared seed with per-clip predictions")

    def sweeps(self) -> None:
        self.add(Heading(2, "Sweeps"))
        names = sorted({n for r in self.infos for n in r.sweeps})
        if not names:
            self.add(Para("No sweep in MLflow for this dataset."))
            self.missing.append(f"no sweep: run e.g. `avbench sweep --strategy uavm --dataset {self.dataset} "
                                f"--grid \"s_dim=16,32,64,128\" --seeds 0,1,2`")
            return
        for name in names:
            members = [r for r in self.infos if name in r.sweeps]
            x_key = members[0].sweeps[name].get("x", "")
            axes = members[0].sweeps[name].get("axes", [x_key])
            others = [a for a in axes if a != x_key]
            self.add(Heading(3, f"Sweep `{name}`"))
            self.add(Para(f"x axis: `{x_key}`" + (f"; other swept keys: {', '.join(f'`{o}`' for o in others)}"
                                                   if others else "") + f"; {len(members)} point(s)."))
            xs = [r.sweeps[name]["point"].get(x_key, "") for r in members]
            numeric = all(_is_number(x) for x in xs)
            lines: dict[str, list[RowInfo]] = {}
            for r in members:
                key = r.row.name + "".join(f", {o}={r.sweeps[name]['point'].get(o)}" for o in others
                                           if not _derived(o, x_key, members, name))
                lines.setdefault(key, []).append(r)

            def xval(r: RowInfo, name: str = name, x_key: str = x_key, numeric: bool = numeric) -> Any:
                v = r.sweeps[name]["point"].get(x_key, "")
                return float(v) if numeric else v

            fx = [float(x) for x in xs] if numeric else []
            log_x = numeric and min(fx) > 0 and max(fx) / min(fx) >= 8
            groups = []
            for col in COLUMNS:
                series = []
                for label, rs in sorted(lines.items()):
                    rs = sorted([r for r in rs if col in r.row.cells],
                                key=lambda r: xval(r) if numeric else str(xval(r)))
                    if rs:
                        series.append(plots.Series(label, [xval(r) for r in rs], [r.row.cells[col]["mean"] for r in rs],
                                                   [r.row.cells[col]["std"] for r in rs]))
                if series:
                    groups.append((TITLES[col], series))
            primary = members[0].row.primary
            chance = self.chance_of(members[0]).get("fusion")
            if groups:
                self.figure(f"sweep_{_slug(name)}",
                            f"Sweep {name}: {primary} (%) against {x_key}, mean ± std over seeds; dotted: chance",
                            functools.partial(plots.panels, groups, xlabel=x_key, ylabel=f"{primary} (%)",
                                              categorical=not numeric, percent=True, log_x=log_x, hline=chance))
            agroups = self._sweep_analysis_groups(lines, xval, numeric)
            if agroups:
                self.figure(f"sweep_{_slug(name)}_analyses",
                            f"Sweep {name}: last-layer analyses against {x_key} (UAVM Figs. 3A, 4 left and 5 left)",
                            functools.partial(plots.panels, agroups, xlabel=x_key, ylabel="%",
                                              categorical=not numeric, percent=True, log_x=log_x))
            body = []
            for r in sorted(members, key=lambda r: (r.row.name, str(sorted(r.sweeps[name]["point"].items())))):
                body.append([r.short, r.row.name, ", ".join(f"{k}={v}" for k, v in r.sweeps[name]["point"].items()),
                             len(r.seeds)] + [cell(r.row.cells.get(c), r.row.primary) for c in COLUMNS])
            self.add(Table(["#", "strategy", "point", "seeds", "Audio", "Video", "Fusion"], body))

    def _sweep_analysis_groups(self, lines: dict[str, list[RowInfo]], xval, numeric: bool) -> list:
        specs = [("probe", "modality probe, last layer", lambda res: _last_layer(res, "acc"), True),
                 ("retrieval", "A→V R@1, last layer", lambda res: _last_layer(res, "a2v_R@1", skip=("logits",)), True),
                 ("attention", "attention MAE A vs V, last layer", lambda res: _last_layer(res, "mae"), False)]
        groups = []
        for what, title, get, percent in specs:
            series = []
            for label, rs in sorted(lines.items()):
                pts = []
                for r in rs:
                    vals = [v for v in (get(res) for res in r.analyses.get(what, [])) if v is not None]
                    if vals:
                        sd = float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0
                        pts.append((xval(r), float(np.mean(vals)), sd))
                pts.sort(key=lambda t: t[0] if numeric else str(t[0]))
                if pts:
                    series.append(plots.Series(label, [p[0] for p in pts], [p[1] for p in pts], [p[2] for p in pts]))
            if series:
                groups.append((title, series, percent))
        return groups

    def analyses(self) -> None:
        self.add(Heading(2, "Representation analyses (UAVM Figs. 3-5)"))
        self.add(Para("From `avbench analyze`, on each row's seeds; lines are means over seeds, shaded ± std."))
        self._per_layer("probe", "Modality probe per layer",
                        "L1 logistic regression predicting the input modality from each layer's time-pooled "
                        "representation, trained on the first half of the test clips and tested on the second "
                        "(UAVM Fig. 3B). 50% = the modalities share one space; 100% = separable.",
                        [("probe accuracy", "acc")], ylabel="accuracy (%)")
        self._per_layer("retrieval", "Cross-modal retrieval per layer",
                        "A→V and V→A recall on the stratified 5-per-class test subset, cosine similarity of "
                        "time-pooled representations; `logits` is the classifier output (UAVM Fig. 4).",
                        [("A→V R@1", "a2v_R@1"), ("V→A R@1", "v2a_R@1"), ("A→V R@5", "a2v_R@5")], ylabel="recall (%)")
        self._per_layer("attention", "Attention difference per layer",
                        "Mean absolute difference between the attention maps of a clip's audio and of its video "
                        "(UAVM Fig. 5 left); the unpaired control pairs each audio with another clip's video.",
                        [("paired A vs V", "mae"), ("unpaired control", "mae_unpaired")], ylabel="MAE", percent=False)
        self._pictures("attention", "Temporal attention heatmaps (UAVM Fig. 5 right)",
                       lambda res, p, title: plots.attention_heatmap(res["heatmap"], p, title))
        self._pictures("tsne", "t-SNE per layer (UAVM Fig. 3D)", lambda res, p, title: plots.tsne_grid(res, p, title))
        self._skipped_list(("probe", "retrieval", "attention", "tsne"))

    def _have(self, what: str) -> list[RowInfo]:
        return [r for r in self.infos if r.analyses.get(what)]

    def _per_layer(self, what: str, title: str, text: str, metrics: list[tuple[str, str]], ylabel: str,
                   percent: bool = True) -> None:
        self.add(Heading(3, title))
        rows = self._have(what)
        if not rows:
            self.add(Para(f"No {what} analysis recorded."))
            return
        self.add(Para(text))
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
        self.figure(f"{what}_per_layer", title + ", mean ± std over seeds",
                    lambda p: plots.panels(groups, p, xlabel="layer", ylabel=ylabel, categorical=True, percent=percent))
        body = []
        key = metrics[0][1]
        for r in rows:
            layers, mean, std = _layer_stats(r.analyses[what], key)
            fmt = (lambda m: f"{100 * m:.1f}") if percent else (lambda m: f"{m:.4f}")
            per = " · ".join(f"{lay} {fmt(m)}" for lay, m in zip(layers, mean))
            body.append([r.short, r.label, len(r.analyses[what]), per])
        self.add(Table(["#", "row", "seeds", f"{metrics[0][0]} per layer (mean over seeds)"], body))
        notes = sorted({f"{r.short} {r.label}: {layer} skipped: {why}" for r in rows for res in r.analyses[what]
                        for layer, why in (res.get("skipped") or {}).items()})
        if notes:
            self.add(Para("Layers left out:"))
            self.add(Bullets(notes))
        if what == "probe":
            coefs = [(f"{r.short} {r.label}", _last(r.analyses["probe"][0])["coef_sorted"]) for r in rows]
            self.figure("probe_coefficients", "Sorted |coefficients| of the modality probe at each row's last layer, "
                        "first seed (UAVM Fig. 3C): no single dominant dimension means the modality is spread out",
                        lambda p: plots.lines([plots.Series(label, list(range(1, len(c) + 1)), c) for label, c in coefs],
                                              p, xlabel="rank", ylabel="|coefficient|"))

    def _pictures(self, what: str, title: str, draw) -> None:
        rows = [r for r in self._have(what) if not r.from_sweep]  # one picture per main row
        if not rows:
            return
        self.add(Heading(3, title))
        for r in rows:
            res = r.analyses[what][0]
            self.figure(f"{what}_{r.index}", f"{r.short} {r.label}, seed {r.seeds[0]}",
                        lambda p, res=res, r=r: draw(res, p, f"{r.short} {r.label}"))

    def _skipped_list(self, whats: Iterable[str], by_reason: bool = False) -> None:
        """Skipped analyses with the strategy's reason: one line per row, or per reason."""
        whats = list(whats)
        per_row: list[str] = []
        per_reason: dict[str, list[str]] = {}
        for r in self.infos:
            reasons: dict[str, list[str]] = {}
            for what in whats:
                state = r.analysis_state.get(what, "missing")
                if state.startswith("skipped"):
                    reasons.setdefault(state.split(":", 1)[-1].strip(), []).append(what)
            if reasons:
                per_row.append(f"{r.short} {r.label}: " + "; ".join(f"{', '.join(w)} skipped: {why}"
                                                                     for why, w in reasons.items()))
            for why in reasons:
                per_reason.setdefault(why, []).append(r.short)
        if by_reason and per_reason:
            self.add(Para(f"{', '.join(whats)} skipped, with the strategy's reason:"))
            self.add(Bullets([f"{', '.join(rows)}: {why}" for why, rows in per_reason.items()]))
        elif per_row:
            self.add(Para("Skipped, with the strategy's reason:"))
            self.add(Bullets(per_row))

    def robustness(self) -> None:
        self.add(Heading(2, "Robustness"))
        rows = self._have("robustness")
        if not rows:
            self.add(Para("No robustness analysis recorded."))
            return
        self.add(Para("Fused primary metric with one modality dropped, with Gaussian noise mixed into one modality's "
                      "features (each step becomes (1 − level)·x + level·n, n Gaussian of the step's norm, before the "
                      "recipe's L2 norm: level 1 is pure noise), and with audio shifted in time against video "
                      "(level × T steps, circular). Relative robustness is the area under the curve (MultiBench); "
                      "effective robustness is MultiBench's Σ(f − (b + f₀ − b₀)) against the named baseline run "
                      "(seed-matched), without MultiBench's min-max normalisation."))
        curves = list(rows[0].analyses["robustness"][0]["curves"])
        groups = []
        for name in curves:
            series = []
            for r in rows:
                vals = [res["curves"][name]["values"] for res in r.analyses["robustness"] if name in res["curves"]]
                if not vals:
                    continue
                arr = np.asarray(vals, dtype=float)
                levels = r.analyses["robustness"][0]["curves"][name]["levels"]
                series.append(plots.Series(f"{r.short} {r.label}", levels, arr.mean(0),
                                           arr.std(0, ddof=1) if len(arr) > 1 else None))
            groups.append((name, series))
        primary = rows[0].analyses["robustness"][0].get("primary", "")
        self.figure("robustness_curves", "Robustness curves, mean ± std over the seeds analysed",
                    lambda p: plots.panels(groups, p, xlabel="level", ylabel=f"fused {primary} (%)", percent=True))
        body = []
        for r in rows:
            res = r.analyses["robustness"]
            line = [r.short, r.label, len(res), mean_std_text([x["clean"] for x in res]),
                    mean_std_text([x["drop"]["audio"]["value"] for x in res]),
                    mean_std_text([x["drop"]["video"]["value"] for x in res])]
            line += [mean_std_text([x["curves"][c]["relative"] for x in res if c in x["curves"]]) for c in curves]
            line += [mean_std_text([x["curves"][c].get("effective") for x in res if c in x["curves"]], signed=True)
                     for c in curves]
            bases = sorted({x.get("baseline") or "none" for x in res})
            line.append(", ".join(bases))
            body.append(line)
        self.add(Table(["#", "row", "seeds", "clean", "drop audio", "drop video"] + [f"rel. {c}" for c in curves]
                       + [f"eff. {c}" for c in curves] + ["baseline"], body))
        hows = sorted({f"{r.short} {r.label}: drop {side} = {r.analyses['robustness'][0]['drop'][side]['how']}"
                       for r in rows for side in ("audio", "video")
                       if "zero" in r.analyses["robustness"][0]["drop"][side]["how"]})
        if hows:
            self.add(Para("Strategies that cannot predict from one modality get zeros for the dropped one:"))
            self.add(Bullets(hows))
        if any(x.get("baseline") is None for r in rows for x in r.analyses["robustness"]):
            self.missing.append("effective robustness is missing where no baseline run (default: late_fusion on the "
                                "same cache, same seed) was found")
        self._skipped_list(("robustness",))

    def event_types(self) -> None:
        rows = self._have("event-types")
        self.add(Heading(2, "Event types"))
        if not rows:
            self.add(Para("No event-type analysis recorded (strategies with named heads, e.g. `event_layers`)."))
            self._skipped_list(("event-types",), by_reason=True)
            return
        self.add(Para("Categories whose clips are mostly assigned to each head (paper 003, Table 4), first seed; "
                      "on synth, how often the assigned head is the head built for the clip's generating type."))
        for r in rows:
            res = r.analyses["event-types"][0]
            heads = res["heads"]
            body = [["categories"] + [res["category_counts"][h] for h in heads],
                    ["clip share"] + [f"{res['clip_share'][h]:.3f}" for h in heads]]
            self.add(Heading(4, f"{r.short} {r.label}"))
            self.add(Table([""] + heads, body))
            tm = res.get("type_match")
            if tm:
                self.add(Table(["generating type", "its head", "clips", "match"],
                               [[t, d["head"], d["n"], f"{d['match_rate']:.3f}"] for t, d in tm["by_type"].items()]
                               + [["all", "", tm["n"], f"{tm['overall']:.3f}"]]))
            line = class_match_line(r.analyses["event-types"])
            if line:
                self.add(Para(line))
        self._skipped_list(("event-types",), by_reason=True)

    def efficiency(self) -> None:
        self.add(Heading(2, "Accuracy against cost"))
        rows = self.shown([r for r in self.infos if not r.from_sweep and "fusion" in r.row.cells])
        if not rows:
            self.add(Para("No row with a fused column."))
            return
        primary = rows[0].row.primary
        for key, name, log_x in (("train_clips_per_s", "training throughput (clips/s)", True),
                                 ("eval_clips_per_s", "inference throughput (clips/s)", True),
                                 ("parameters", "parameters", True)):
            pts = [plots.Point(r.short, r.row.extra[key]["mean"], r.row.cells["fusion"]["mean"],
                               yerr=r.row.cells["fusion"]["std"] if r.row.cells["fusion"]["n"] > 1 else 0.0)
                   for r in rows if key in r.row.extra and math.isfinite(r.row.extra[key]["mean"])]
            if pts:
                self.figure(f"cost_{key}", f"Fused {primary} against {name} (main rows; labels are row numbers)",
                            lambda p, pts=pts, name=name, log_x=log_x: plots.scatter(
                                pts, p, xlabel=name, ylabel=f"fused {primary} (%)", log_x=log_x,
                                hline=self.chance_of(rows[0]).get("fusion")))

    def missing_section(self) -> None:
        from avbench import registry

        have = {r.row.strategy for r in self.infos}
        absent = [n for n in registry.strategies.names() if n not in have]
        if absent:
            self.missing.append(f"registered strategies without a finished run on {self.dataset}: {', '.join(absent)}")
        for r in self.infos:
            if len(r.seeds) < 2:
                self.missing.append(f"{r.short} {r.label}: {len(r.seeds)} seed, so no confidence interval")
            for col, why in sorted(r.skipped_columns.items()):
                if col in COLUMNS:
                    self.missing.append(f"{r.short} {r.label}: no {TITLES[col]} column ({why})")
        for what in ANALYSES:
            notrun = [r for r in self.infos if r.analysis_state.get(what) == "missing"]
            if notrun and len(notrun) == len(self.infos):
                self.missing.append(f"{what}: not run for any row "
                                    f"(`avbench analyze --dataset {self.dataset} --what {what}`)")
            elif notrun:
                self.missing.append(f"{what}: not run for {', '.join(f'{r.short} {r.label}' for r in notrun)}")
        self.add(Heading(2, "Missing pieces"))
        if self.missing:
            self.add(Bullets(sorted(dict.fromkeys(self.missing), key=self.missing.index)))
        else:
            self.add(Para("Nothing missing."))


def class_match_line(per_seed: list[dict[str, Any]]) -> str:
    """Paper 003 Table 4's vote scored against synth's truth: the share of classes whose majority head
    is the head of their true dominant event type, first seed and mean over seeds, with chance."""
    got = [res["class_match"] for res in per_seed if (res.get("class_match") or {}).get("classes")]
    if not got:
        return ""
    first = got[0]
    text = (f"Classes voted to the head of their true dominant event type: {first['matched']}/{first['classes']} "
            f"({100 * first['fraction']:.1f}%) on the first seed")
    if len(got) > 1:
        text += f", {100 * float(np.mean([g['fraction'] for g in got])):.1f}% on average over {len(got)} seeds"
    return text + f"; chance {100 * first['chance']:.1f}% (one of the heads at random)."


def _is_number(x: Any) -> bool:
    try:
        float(x)
        return True
    except (TypeError, ValueError):
        return False


def _derived(key: str, x_key: str, members: list[RowInfo], name: str) -> bool:
    """A swept key determined by the x key (a tie or a zipped partner): not a separate line."""
    seen: dict[str, str] = {}
    for r in members:
        pt = r.sweeps[name]["point"]
        x, v = str(pt.get(x_key)), str(pt.get(key))
        if seen.setdefault(x, v) != v:
            return False
    return True


def _layer_kind(layers: list[str]) -> str:
    """``layer0..layer5, logits`` -> "layer/logits": rows whose layers differ in kind are not drawn on
    one categorical axis (a quantized code is not "layer 1")."""
    return "/".join(sorted({re.sub(r"[0-9]+$", "", str(x)) or str(x) for x in layers}))


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_\-]+", "_", s)


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


def build_report(tracker: Any, dataset: str, out: str | Path, *, n_boot: int | None = None,
                 command: str | None = None) -> ReportResult:
    import avbench

    out = Path(out)
    infos = gather(tracker, dataset)
    if not infos:
        raise UserError(f"no finished runs for dataset '{dataset}' in {tracker.uri} "
                        f"(run 'avbench run --dataset {dataset} ...' first)")
    _FAMILIES.clear()
    figs = out / "figures"
    if figs.exists():
        shutil.rmtree(figs)
    figs.mkdir(parents=True)
    b = _Builder(out, dataset, infos, n_boot)
    title = f"avbench report: {dataset}"
    b.add(Heading(1, title))
    b.add(Para(f"Generated by avbench {avbench.__version__} from the MLflow runs of dataset `{dataset}`"
               + (f" with `{command}`" if command else "") + f": {len(infos)} row(s), "
               f"{sum(len(r.seeds) for r in infos)} finished seed run(s)."))
    b.add(Para("Contents: [Comparison](#comparison) · [Sweeps](#sweeps) · "
               "[Representation analyses](#representation-analyses-uavm-figs-3-5) · [Robustness](#robustness) · "
               "[Event types](#event-types) · [Accuracy against cost](#accuracy-against-cost) · "
               "[Missing pieces](#missing-pieces)"))
    b.settings()
    b.comparison()
    b.sweeps()
    b.analyses()
    b.robustness()
    b.event_types()
    b.efficiency()
    b.missing_section()
    md = out / "report.md"
    md.write_text(to_markdown(b.blocks))
    page = out / "report.html"
    page.write_text(to_html(b.blocks, out, title))
    summary = {"dataset": dataset, "rows": [
        {"index": r.index, "strategy": r.row.strategy, "label": r.label, "group": r.group, "protocol": r.row.protocol,
         "seeds": r.seeds, "primary": r.row.primary, "from_sweep": r.from_sweep,
         "cells": {c: r.row.cells[c] for c in r.row.cells}, "analyses": r.analysis_state,
         "converged": _converged_json(r.row.extra.get("converged"))} for r in infos],
        "missing": list(dict.fromkeys(b.missing)), "figures": [str(p.relative_to(out)) for p in b.figures],
        "merged": {str(k): v.index for k, v in b.merged.items()}}
    for row in summary["rows"]:
        info = next(r for r in infos if r.index == row["index"])
        row["chance"] = b.chance_of(info)
        row["not_above_chance"] = [c for c in COLUMNS if results.not_above_chance(info.row.cells.get(c) or {},
                                                                                  row["chance"].get(c))]
    summary = results.finalize("report", summary)  # the results contract; written as report.json
    results.write(out / "report.json", summary)
    return ReportResult(md, page, b.figures, summary["missing"], summary)
