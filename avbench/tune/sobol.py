"""Scrambled Sobol' trials for ``avbench tune --sampler sobol``: a small budget that covers its space.

Why: with a handful of trials, independent random draws can leave out the range where a strategy
learns at all. In issue 23's second replicate, cross_attention's and uavm's six TPE start-up trials
(TPE draws at random until its tenth trial) missed the working learning rates: the two rows fell
12 and 18 points, and their spreads across replicates were the largest of the fused column. The
first 2^m points of a scrambled Sobol' sequence put exactly one point in each 1/2^m of every
parameter's range (of its logarithm where the range is searched on a log scale), so a budget of 8
tries each eighth of the learning-rate range once, whatever the seed. The seed (the strategy's own stream,
``select.strategy_seed``) moves the points within their strata: that is the tuning's randomness,
which ``--replicates`` and the report's Replication section still measure.

Trial n gets the n-th point of the sequence: a function of the seed, the space and n only, so a
resumed study suggests what the uninterrupted one would have, and trials asked while others run get
the next points. (Optuna's own QMCSampler draws its first trial at random to learn the space, and
numbers its points by a counter kept in the study, so the first eight trials would not be one net.)
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
import optuna.distributions as od
from optuna.samplers import BaseSampler


def unit_point(dimensions: int, seed: int, number: int) -> np.ndarray:
    """Point ``number`` (0-based) of the scrambled Sobol' sequence of ``seed`` in [0, 1)^dimensions."""
    from scipy.stats import qmc

    engine = qmc.Sobol(dimensions, scramble=True, rng=np.random.default_rng(seed))
    if number:
        engine.fast_forward(number)
    return engine.random(1)[0]


def value(dist: Any, u: float) -> Any:
    """The value of a distribution at quantile ``u`` in [0, 1): uniform on its (log) scale, in equal
    strata for integers and choices, so a stratum of ``u`` is a stratum of the range."""
    if isinstance(dist, od.CategoricalDistribution):
        return dist.choices[min(int(u * len(dist.choices)), len(dist.choices) - 1)]
    if isinstance(dist, od.IntDistribution):
        if dist.log:
            lo, hi = math.log(dist.low), math.log(dist.high + 1)
            return min(dist.high, int(math.exp(lo + u * (hi - lo))))
        count = (dist.high - dist.low) // dist.step + 1
        return dist.low + min(int(u * count), count - 1) * dist.step
    if dist.log:
        lo, hi = math.log(dist.low), math.log(dist.high)
        return min(dist.high, max(dist.low, math.exp(lo + u * (hi - lo))))
    x = dist.low + u * (dist.high - dist.low)
    if dist.step is not None:
        x = dist.low + round((x - dist.low) / dist.step) * dist.step
    return min(dist.high, max(dist.low, x))


class SobolSampler(BaseSampler):
    """Trial n's parameters: point n of one scrambled Sobol' sequence over every searched parameter
    (in sorted order of their names), each mapped through its distribution by ``value``."""

    def __init__(self, dists: Mapping[str, Any], seed: int) -> None:
        self._keys = sorted(dists)
        self._seed = seed

    def infer_relative_search_space(self, study: Any, trial: Any) -> dict[str, Any]:
        return {}

    def sample_relative(self, study: Any, trial: Any, search_space: Any) -> dict[str, Any]:
        return {}

    def sample_independent(self, study: Any, trial: Any, param_name: str, param_distribution: Any) -> Any:
        if param_name not in self._keys:
            raise KeyError(f"{param_name} is not in the Sobol' space ({', '.join(self._keys)})")
        u = unit_point(len(self._keys), self._seed, trial.number)[self._keys.index(param_name)]
        return value(param_distribution, float(u))
