"""avbench tune --sampler sobol: a small budget that tries every part of each range once."""

import math

import numpy as np
import optuna
import optuna.distributions as od
import pytest

from avbench.tune.select import is_balanced
from avbench.tune.sobol import unit_point, value
from avbench.tune.space import distributions
from avbench.tune.study import TuneRequest, ask

SPACE = {"train.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
         "train.weight_decay": {"type": "float", "low": 1e-7, "high": 1e-2, "log": True},
         "train.max_steps": {"type": "steps", "low": 0.25, "high": 1.0}}


def _asked(sampler: str, seed: int, n: int, space=SPACE) -> list[dict]:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    dists = distributions(space, 540, "test")
    req = TuneRequest(strategies=["uavm"], sampler=sampler, sampler_seed=seed)
    study = optuna.create_study(direction="maximize")
    out = []
    for _ in range(n):
        trial, params = ask(study, req, "uavm", dists)
        study.tell(trial.number, 0.5)
        out.append(params)
    return out


def _eighths(values, low, high):
    u = (np.log(values) - math.log(low)) / (math.log(high) - math.log(low))
    return sorted(np.floor(u * 8).astype(int).tolist())


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_eight_sobol_trials_try_each_eighth_of_every_range_once(seed):
    trials = _asked("sobol", seed, 8)
    assert _eighths([t["train.lr"] for t in trials], 1e-4, 1e-2) == list(range(8))
    assert _eighths([t["train.weight_decay"] for t in trials], 1e-7, 1e-2) == list(range(8))
    assert _eighths([t["train.max_steps"] for t in trials], 135, 541) == list(range(8))  # int, log scale


def test_tpe_start_up_trials_can_leave_out_part_of_the_range():
    """What the Sobol' net is for: TPE's eight random start-up trials, over 20 seeds, leave at least one
    eighth of the learning-rate range out (and most seeds leave out two or more)."""
    missed = [8 - len(set(_eighths([t["train.lr"] for t in _asked("tpe", s, 8)], 1e-4, 1e-2))) for s in range(20)]
    assert min(missed) >= 1 and np.median(missed) >= 2


def test_the_seed_moves_the_points_and_trial_n_is_point_n():
    a, b = _asked("sobol", 0, 4), _asked("sobol", 1, 4)
    assert all(x["train.lr"] != y["train.lr"] for x, y in zip(a, b))
    assert _asked("sobol", 0, 4) == a  # the same seed, the same trials
    from scipy.stats import qmc

    full = qmc.Sobol(3, scramble=True, rng=np.random.default_rng(11)).random(8)
    assert np.allclose([unit_point(3, 11, n) for n in range(8)], full)  # resumed: point n whatever came before


def test_values_fall_in_equal_strata_of_ints_choices_and_steps():
    cat = od.CategoricalDistribution(["a", "b", "c", "d"])
    assert [value(cat, u) for u in (0.0, 0.26, 0.5, 0.99)] == ["a", "b", "c", "d"]
    ints = od.IntDistribution(2, 9)  # 8 values, one per eighth
    assert [value(ints, (k + 0.5) / 8) for k in range(8)] == list(range(2, 10))
    stepped = od.IntDistribution(0, 100, step=25)
    assert [value(stepped, u) for u in (0.0, 0.21, 0.41, 0.61, 0.99)] == [0, 25, 50, 75, 100]
    fixed = od.IntDistribution(540, 540)
    assert value(fixed, 0.9) == 540
    fl = od.FloatDistribution(0.0, 1.0, step=0.25)
    assert value(fl, 0.3) == 0.25 and value(fl, 0.999) == 1.0
    lg = od.FloatDistribution(1e-4, 1e-2, log=True)
    assert value(lg, 0.5) == pytest.approx(1e-3) and 1e-4 <= value(lg, 0.0) < value(lg, 0.999) <= 1e-2


def test_balanced_budgets_are_powers_of_two():
    assert [b for b in range(1, 20) if is_balanced(b)] == [1, 2, 4, 8, 16]
