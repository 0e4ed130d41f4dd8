"""Statistics over seeds: mean, sample std, and a 95% t-interval (what the report's ± means)."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy import stats


def mean_std_ci(values: Sequence[float], level: float = 0.95) -> dict[str, float]:
    """Mean, sample std (ddof 1), and the t-based confidence interval of the mean over seeds."""
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    n = len(x)
    if n == 0:
        return {"mean": float("nan"), "std": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"), "n": 0}
    mean = float(x.mean())
    if n == 1:
        return {"mean": mean, "std": 0.0, "ci_low": float("nan"), "ci_high": float("nan"), "n": 1}
    std = float(x.std(ddof=1))
    half = float(stats.t.ppf(0.5 + level / 2, df=n - 1) * std / math.sqrt(n))
    return {"mean": mean, "std": std, "ci_low": mean - half, "ci_high": mean + half, "n": n}
