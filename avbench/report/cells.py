"""How numbers are written in the report: percentages, ``mean ± std (interval)`` cells, counts, the
converged column, and how a row was configured (tuned, a sweep point, fields set, or the defaults).

Why one place: the same number must read the same in every table of the report and in ``avbench
table``; intervals are clipped to the metric's range here (``results.clip_interval``).
"""

from __future__ import annotations

import math

from avbench import results
from avbench.metrics.stats import mean_std_ci
from avbench.report.table import format_count

TITLES = {"audio": "Audio", "video": "Video", "fusion": "Fusion"}


def _finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


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


def rate(s: dict[str, float] | None) -> str:
    return "-" if not s or not math.isfinite(s.get("mean", float("nan"))) else f"{s['mean']:.0f}"


def converged_count(s: dict[str, float] | None) -> tuple[int, int] | None:
    """``(seeds converged, seeds with a recorded flag)`` from the mean of the 0/1 ``converged`` metric."""
    if not s or not s.get("n"):
        return None
    n = int(s["n"])
    return int(round(s["mean"] * n)), n


def converged(s: dict[str, float] | None) -> str:
    got = converged_count(s)
    return "-" if got is None else f"{got[0]}/{got[1]}" + ("" if got[0] == got[1] else " ⚠")


def converged_json(s: dict[str, float] | None) -> dict[str, int] | None:
    got = converged_count(s)
    return None if got is None else {"seeds_converged": got[0], "seeds_flagged": got[1]}


def params_text(s: dict[str, float] | None) -> str:
    if not s or not math.isfinite(s.get("mean", float("nan"))):
        return "-"
    return format_count(s["mean"])



def round_value(v: object) -> str:
    """A setting as a reader wants it: integers as is, other numbers to 3 significant digits
    (``0.0012345678901234`` -> ``0.00123``), anything else unchanged."""
    text = str(v)
    try:
        x = float(text)
    except ValueError:
        return text
    if not math.isfinite(x):
        return text
    if x == int(x) and abs(x) < 1e15 and "e" not in text.lower() and "." not in text:
        return str(int(x))
    return f"{x:.3g}"


def short_key(key: str) -> str:
    """``train.lr`` -> ``lr``; ``model.s_dim`` -> ``s_dim``; ``data.snr`` stays (data knobs keep their prefix)."""
    return key.split(".", 1)[1] if key.startswith(("train.", "model.")) else key


def tuned_summary(tuned: dict | None) -> str:
    """``tuned: 20 trials, best validation fusion/acc 81.2%`` from avbench tune's stored result
    (``8 Sobol' trials`` when ``--sampler sobol`` proposed them)."""
    if not tuned:
        return ""
    if "missing" in tuned:
        return "tuned (its tuned file is gone)"
    budget = tuned.get("budget") or {}
    trials, kind = budget.get("trials"), (" Sobol'" if budget.get("sampler") == "sobol" else "")
    metric, value = tuned.get("metric", ""), tuned.get("value")
    text = "tuned" + (f": {trials}{kind} trial{'s' if trials != 1 else ''}" if trials is not None else "")
    shown = ""
    if isinstance(value, (int, float)) and math.isfinite(value):
        info = results.metric_info(metric)
        shown = f"validation {metric} " + (f"{100 * value:.1f}%" if info["range"] == [0.0, 1.0] else f"{value:.4g}")
    select, score = tuned.get("select"), tuned.get("score")
    if select and isinstance(score, (int, float)) and math.isfinite(score):  # chosen on a --select score
        shown_score = -score if select == "val_loss" else score  # stored negated, so higher is better
        return text + f", chosen on {select} {shown_score:.3g}" + (f" ({shown})" if shown else "")
    return text + (f", best {shown}" if shown else "")


def tuned_values(tuned: dict | None) -> str:
    """The tuned values, rounded: ``lr=0.00123, max_steps=300`` (the searched ones; the fixed
    ``--set`` values a tuning also stores are the row's settings, listed elsewhere)."""
    if not tuned or "missing" in tuned:
        return ""
    over = tuned.get("params") or tuned.get("overrides") or {}
    return ", ".join(f"{short_key(k)}={round_value(v)}" for k, v in sorted(over.items()))


def configured(tuned: dict | None, sweep: str | None, set_fields: dict[str, str] | None,
               recipe: str | None = None) -> str:
    """The table's short answer to "how was this row configured": tuned (with its budget), a sweep
    point, fields set away from the strategy's defaults, or the defaults; then the named recipe
    (``--recipe``) when it is not the harness's default one."""
    if tuned:
        out = tuned_summary(tuned)
    elif sweep:
        out = f"sweep {sweep}"
    elif set_fields is None:
        out = "unknown (strategy not loadable)"
    else:
        out = f"{len(set_fields)} field(s) set" if set_fields else "defaults"
    return out + (f"; recipe {recipe}" if recipe and recipe != "default" else "")
