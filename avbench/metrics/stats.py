"""Statistics over seeds: mean, sample std, and a 95% t-interval (what the report's ± means).

scipy is imported only when an interval is computed (two or more values): ``avbench run`` with one
seed summarises through here, and ``scipy.stats`` costs about half a second of start-up (issue 27)."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def mean_std_ci(values: Sequence[float], level: float = 0.95) -> dict[str, float]:
    """Mean, sample std (ddof 1), and the t-based confidence interval of the mean over seeds."""
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    n = len(x)
    if n == 0:
        return {"mean": float("nan"), "std": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"), "n": 0}
    mean = float(x.mean())
    if n == 1:
        return {"mean": mean, "std": 0.0, "ci_low": float("nan"), "ci_high": float("nan"), "n": 1}
    from scipy import stats

    std = float(x.std(ddof=1))
    half = float(stats.t.ppf(0.5 + level / 2, df=n - 1) * std / math.sqrt(n))
    return {"mean": mean, "std": std, "ci_low": mean - half, "ci_high": mean + half, "n": n}
