"""Step-defined schedules, exact run lengths, the validation curve and the convergence flag."""

import dataclasses
import math

import numpy as np
import pytest

from avbench import runner
from avbench.train.engine import Engine
from avbench.train.recipe import Recipe
from avbench.train.schedule import chance_map, convergence, lr_factor, lr_integral

# Easy enough that a linear head learns in a few dozen steps; 80 validation clips.
DATA = ["data.classes=4", "data.train_clips=800", "data.test_clips=40", "data.steps=8", "data.audio_dim=16",
        "data.video_dim=12", "data.snr=1.5", "train.batch_size=16", "train.eval_every_epoch=false"]


def _resolve(tmp_path, *sets):
    req = runner.RunRequest(strategy="late_fusion", dataset="synth", results_dir=str(tmp_path / "r"),
                            progress=False, save_model=False,
                            overrides=dict(s.split("=", 1) for s in [*DATA, *sets]))
    return req, runner.resolve(req)


def _fit(tmp_path, *sets):
    _, r = _resolve(tmp_path, *sets)
    model = r.strategy_cls(r.strategy_cfg, r.cache.features, r.cache.task)
    return Engine(model, r.cache, r.recipe, seed=0, progress=False).fit()


def test_learning_rate_schedules():
    ref = Recipe(lr=1.0, lr_decay=0.5)
    assert [lr_factor(ref, s, 10, 40) for s in (0, 9, 10, 25, 39)] == [1, 1, 0.5, 0.25, 0.125]  # the reference
    cos = dataclasses.replace(ref, schedule="cosine", warmup_steps=10)
    assert [lr_factor(cos, s, 10, 110) for s in (0, 4, 9)] == [0.1, 0.5, 1.0]  # linear warm-up
    assert lr_factor(cos, 10, 10, 110) == 1.0 and lr_factor(cos, 60, 10, 110) == pytest.approx(0.5)
    assert lr_factor(cos, 109, 10, 110) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.99)))
    step = dataclasses.replace(ref, schedule="step", lr_decay=0.1)
    assert [lr_factor(step, s, 10, 100) for s in (0, 49, 50, 74, 75, 99)] == pytest.approx([1, 1, .1, .1, .01, .01])
    assert lr_factor(dataclasses.replace(ref, schedule="constant"), 99, 10, 100) == 1.0


def test_convergence_rule_on_curves():
    rising = [(s, 0.3 + 0.01 * s) for s in range(1, 21)]
    assert convergence(rising, 20)["status"] == "not converged"
    plateau = [(s, 0.8 - 0.5 / s ** 2) for s in range(1, 21)]
    assert convergence(plateau, 20)["status"] == "converged"
    wobble = [(s, 0.8 - 0.5 / s + (0.004 if s % 2 else -0.004)) for s in range(1, 21)]
    assert convergence(wobble, 20)["converged"] is True  # a noisy plateau is not flagged
    short = convergence([(5, 0.5), (10, 0.5), (15, 0.5)], 15)
    assert short["converged"] is None and short["status"] == "too short" and "at least 4" in short["reason"]


def test_a_curve_flat_at_chance_is_not_learning_never_converged():
    rng = np.random.default_rng(0)
    labels = np.eye(12)[rng.integers(0, 12, 96)]
    mean, std = chance_map(labels)
    assert 1 / 12 < mean < 0.2 and std > 0  # random scores on 96 clips score above prevalence
    flat = [(s, mean + 0.3 * std * (-1) ** s) for s in range(1, 21)]
    assert convergence(flat, 20)["converged"] is True  # flat: without the chance level it would pass
    got = convergence(flat, 20, chance=(mean, std))
    assert got["status"] == "not learning" and got["converged"] is False
    learned = [(s, 0.9) for s in range(1, 21)]
    assert convergence(learned, 20, chance=(mean, std))["status"] == "converged"


def test_under_a_decaying_schedule_the_window_is_the_last_fifth_of_the_learning_rate():
    # A low-lr cosine run still climbing in learning-rate time: over steps its curve flattens (the rate
    # is near zero at the end), so a window of the last 20% of steps sees a plateau.
    cos = Recipe(lr=1.0, schedule="cosine")
    total = 500
    progress = lr_integral(cos, 100, total)
    assert progress[0] == 0 and progress[-1] == pytest.approx(1.0)
    assert progress[int(0.8 * total)] == pytest.approx(0.987, abs=1e-3)  # 1.3% of the rate in the last 20%
    curve = [(s, 0.1 + 0.5 * progress[s]) for s in range(25, total + 1, 25)]  # linear in learned amount
    assert convergence(curve, total)["converged"] is True  # judged over steps: looks flat
    judged = convergence(curve, total, progress=progress)
    assert judged["status"] == "not converged" and judged["rise"] > 0.09
    assert judged["window_from_step"] == 225  # the last 20% of the integral starts at 48% of the steps
    done = [(s, 0.8 - 0.7 * (1 - progress[s]) ** 8) for s in range(25, total + 1, 25)]
    assert convergence(done, total, progress=progress)["status"] == "converged"


def test_max_steps_trains_exactly_that_many_steps(tmp_path):
    fit = _fit(tmp_path, "train.max_steps=7", "train.schedule=cosine", "train.val_points=7")
    v = fit.validation
    assert v["steps"] == 7 and [s for s, _ in v["curve"]] == list(range(1, 8))
    assert len(fit.history) == 1 and fit.history[-1]["lr"] == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * 6 / 7)))
    assert v["split"] == "train" and v["clips"] == 80 and not v["in_sample"]


def test_a_run_stopped_early_is_flagged_and_one_trained_long_is_not(tmp_path):
    early = _fit(tmp_path, "train.max_steps=8", "train.schedule=constant", "train.lr=1e-2").validation
    long = _fit(tmp_path, "train.max_steps=400", "train.schedule=cosine", "train.lr=1e-2").validation
    assert early["converged"] is False and early["rise"] > 0.02
    assert long["converged"] is True and abs(long["rise"]) < 0.01
    assert long["convergence_curve"][-1][1] > early["convergence_curve"][-1][1] + 0.2  # it did learn more


def test_the_flag_reaches_the_run_result(tmp_path):
    req, _ = _resolve(tmp_path, "train.max_steps=8", "train.schedule=constant", "train.lr=1e-2")
    out = runner.run(req)
    assert out["seeds"][0]["metrics"]["converged"] == 0.0
