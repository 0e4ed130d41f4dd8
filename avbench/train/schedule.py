"""Learning-rate schedules that fit the data, the validation curve, and the convergence flag.

The UAVM reference halves the learning rate after every epoch: made for 184k clips (1,278 steps per
epoch), it stops a small dataset learning after a few dozen steps, and a comparison made that way
ranks strategies by how much training each happened to get. So besides the reference ("epoch":
``lr * lr_decay ** epoch``), a schedule can be defined in optimizer steps: a linear warm-up of
``warmup_steps``, then "cosine" (to zero at the last step), "step" (x ``lr_decay`` at 50% and 75% of
the steps) or "constant"; ``max_steps > 0`` sets the length of every stage in steps (a stage whose
strategy fixes its own epochs keeps them). Learning rates are a pure function of the step, so a
resumed run continues exactly.

Every run records a validation curve: the primary metric on the cache's validation split at
``val_points`` evenly spaced steps of its last labelled stage (held out from training unless the
recipe says ``validation=train-on-all``), and its mAP, which is judged (``convergence``):

- *too short*: fewer than ``MIN_POINTS`` points cannot be judged; the run says so and records no flag;
- *not learning*: the last points are not above what random scores get on the same validation clips
  (the mean + 3 std of the mAP of ``NULL_DRAWS`` seeded random score matrices): never "converged";
- *not converged*: the mAP still rose over the last ``WINDOW`` of the run's *learning-rate integral*
  (the sum of the learning rate over its steps), by more than 0.01 and two standard errors of the
  fitted rise. Judging on the integral rather than on steps matters under a decaying schedule: a
  cosine run's last 20% of steps carry 1.3% of its learning rate, so a run still climbing looks flat
  there (a low-lr trial went 10.6% -> 19.8% -> 47.5% at 164 / 540 / 1,080 steps and was "converged"
  at every length); its last 20% of learning-rate integral starts at 48% of the steps.
- otherwise *converged*.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from avbench.api import PRIMARY
from avbench.metrics import mean_average_precision

log = logging.getLogger(__name__)
WINDOW = 0.2  # the share of the steps at the end whose rise marks a run not converged


def lr_factor(recipe: Any, step: int, steps_per_epoch: int, total_steps: int) -> float:
    """Multiplier of ``recipe.lr`` at stage-local ``step`` (0-based)."""
    warm = recipe.warmup_steps
    if warm > 0 and step < warm:
        return (step + 1) / warm
    if recipe.schedule == "epoch":
        return recipe.lr_decay ** (step // max(1, steps_per_epoch))
    if recipe.schedule == "constant":
        return 1.0
    done = (step - warm) / max(1, total_steps - warm)
    if recipe.schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, done)))
    if recipe.schedule == "step":
        return recipe.lr_decay ** ((done >= 0.5) + (done >= 0.75))
    raise ValueError(f"unknown schedule {recipe.schedule!r}")


def stage_length(strategy: Any, stage: str, recipe: Any, steps_per_epoch: int) -> tuple[int, int]:
    """(epochs, steps) of a stage: the recipe's epochs, or ``max_steps`` when it is set."""
    spe = max(1, steps_per_epoch)
    if recipe.max_steps <= 0:
        n = strategy.stage_epochs(stage, recipe.epochs)
        return n, n * spe
    want = math.ceil(recipe.max_steps / spe)
    n = strategy.stage_epochs(stage, want)
    return n, (recipe.max_steps if n == want else n * spe)


@dataclass
class EpochSchedule:
    """One epoch of a stage: how many steps it runs and the learning rate at each global step."""

    recipe: Any
    epoch: int  # epoch within the stage
    first_step: int  # global step at the epoch's start
    steps_per_epoch: int
    total_steps: int  # of the stage
    labelled: bool = True

    @property
    def steps(self) -> int:
        return max(0, min(self.steps_per_epoch, self.total_steps - self.epoch * self.steps_per_epoch))

    def local(self, step: int) -> int:
        """Stage-local index of global ``step``."""
        return self.epoch * self.steps_per_epoch + (step - self.first_step)

    def lr(self, step: int) -> float:
        return self.recipe.lr * lr_factor(self.recipe, self.local(step), self.steps_per_epoch, self.total_steps)

    def apply(self, optimizer: Any, step: int) -> None:
        lr = self.lr(step)
        for group in optimizer.param_groups:
            group["lr"] = lr


def eval_steps(total_steps: int, points: int) -> set[int]:
    """Stage-local step counts (1..total) after which the validation split is evaluated."""
    return {int(round(total_steps * i / points)) for i in range(1, points + 1)} - {0}


MIN_POINTS = 4  # fewer validation points than this cannot show a plateau
NULL_DRAWS = 16  # random score matrices that give the validation split's chance mAP


def lr_integral(recipe: Any, steps_per_epoch: int, total_steps: int) -> np.ndarray:
    """``out[s]``: the share of the stage's learning-rate integral spent after ``s`` steps (``out[0] = 0``)."""
    lr = np.array([lr_factor(recipe, s, steps_per_epoch, total_steps) for s in range(max(0, total_steps))], float)
    out = np.concatenate([[0.0], np.cumsum(lr)])
    return out / out[-1] if out[-1] > 0 else np.linspace(0.0, 1.0, len(out))


def chance_map(labels: np.ndarray, draws: int = NULL_DRAWS, seed: int = 0) -> tuple[float, float]:
    """(mean, std) of the mAP that seeded random scores get on ``labels`` [N, C]: the curve's chance."""
    y = np.asarray(labels)
    if y.ndim != 2 or len(y) == 0:
        return 0.0, 0.0
    rng = np.random.default_rng(seed)
    vals = [mean_average_precision(rng.random(y.shape), y) for _ in range(draws)]
    return float(np.mean(vals)), float(np.std(vals))


def convergence(curve: list[tuple[int, float]], total_steps: int, *, progress: np.ndarray | None = None,
                chance: tuple[float, float] | None = None) -> dict[str, Any]:
    """Judge a validation curve: converged, not converged, not learning, or too short to say.

    ``curve`` is (step, value) of a continuous metric (mAP: accuracy on a small validation set moves
    in steps of 1/n and hides a slow rise). ``progress[s]`` is the share of the learning-rate integral
    after ``s`` steps (``lr_integral``; default: steps, i.e. a constant rate). The rise is the
    least-squares slope over the last point at or before ``1 - WINDOW`` of the progress and every
    later point, times the window's span. It counts when it is above 0.01 and above two standard
    errors of itself (from the fit's residuals), so a plateau that only wobbles is not flagged while a
    curve still climbing is. ``chance`` is (mean, std) of the metric for random scores
    (``chance_map``): a curve whose last two points average at most mean + 3 std is not learning.

    Returns ``converged`` (True, False, or None when it cannot be judged) and ``status``.
    """
    if len(curve) < MIN_POINTS or total_steps <= 0:
        return {"converged": None, "status": "too short", "rise": None, "threshold": None,
                "reason": f"{len(curve)} validation point(s); at least {MIN_POINTS} are needed to judge"}
    steps = np.array([s for s, _ in curve], int)
    vals = np.array([v for _, v in curve], float)
    xs_all = (np.asarray(progress, float)[np.clip(steps, 0, len(progress) - 1)] if progress is not None
              else steps / float(total_steps))
    before = np.flatnonzero(xs_all <= 1 - WINDOW + 1e-12)
    first = int(before[-1]) if len(before) else 0
    xs, ys = xs_all[first:], vals[first:]
    out: dict[str, Any] = {"window_from_step": int(steps[first]), "points": int(len(xs))}
    if chance is not None:
        level = chance[0] + 3.0 * chance[1]
        out["chance"] = {"mean": chance[0], "std": chance[1], "level": level}
        if float(vals[-2:].mean()) <= level:
            return {**out, "converged": False, "status": "not learning", "rise": None, "threshold": None,
                    "reason": f"validation mAP {vals[-2:].mean():.3f} is not above chance ({level:.3f})"}
    if len(xs) < 2 or float(np.ptp(xs)) <= 0:
        xs, ys = xs_all[-2:], vals[-2:]
    dx = xs - xs.mean()
    slope = float((dx * (ys - ys.mean())).sum() / (dx ** 2).sum())
    span = float(xs[-1] - xs[0])
    resid = ys - (ys.mean() + slope * dx)
    se = math.sqrt(float((resid ** 2).sum()) / (len(xs) - 2) / float((dx ** 2).sum())) * span if len(xs) > 2 else 0.0
    rise = slope * span
    threshold = max(0.01, 2.0 * se)
    ok = bool(rise <= threshold)
    return {**out, "converged": ok, "status": "converged" if ok else "not converged", "rise": rise,
            "threshold": threshold}


class Validator:
    """Records the engine's validation curve; see the module docstring."""

    def __init__(self, engine: Any, evaluate_on: str):
        self.engine = engine
        self.mode = engine.recipe.validation
        self.on = None
        self.curve: list[tuple[int, float]] = []  # (stage step, primary metric)
        self.smooth: list[tuple[int, float]] = []  # (stage step, mAP): what convergence is judged on
        self.metric = ""
        self.total = 0
        self.points: set[int] = set()
        self.callback = None  # called as callback(local_step, value) after each point (tuning, pruning)
        self.progress: np.ndarray | None = None  # share of the stage's learning-rate integral per step
        self.seconds = 0.0  # spent evaluating since the last take_seconds()
        if self.mode == "off":
            return
        cache = engine.cache
        if evaluate_on == "val":
            self.on = (engine.test_src, engine.test_rows)
        elif cache.validation.official:
            from avbench.train.data import BatchSource

            split = cache.val_split()
            self.on = (BatchSource(split, engine.device, engine.recipe.device_resident),
                       np.flatnonzero(split.present.any(axis=1)))
        else:
            self.on = (engine.train_src, cache.validation.rows)
        self.in_sample = self.mode == "train-on-all" and not cache.validation.official

    def begin(self, sched: EpochSchedule) -> None:
        """At the start of a labelled stage: the points are spread over its steps."""
        if self.on is None or not sched.labelled:
            return
        self.total = sched.total_steps
        self.points = eval_steps(self.total, self.engine.recipe.val_points)
        self.progress = lr_integral(sched.recipe, sched.steps_per_epoch, sched.total_steps)
        if sched.epoch == 0:  # a later labelled stage starts a new curve (a resumed run keeps its own)
            self.curve, self.smooth = [], []

    def after_step(self, sched: EpochSchedule, step: int) -> None:
        """Called after global step ``step - 1`` finished (``step`` steps done)."""
        if self.on is None or not sched.labelled:
            return
        done = sched.local(step)
        if done not in self.points or (self.curve and self.curve[-1][0] == done):
            return
        src, rows = self.on
        t0 = time.perf_counter()
        ev = self.engine.evaluate(retrieval=False, on=(src, rows), curve=True)  # the curve's column and metrics only
        self.engine.strategy.train()
        self.seconds += time.perf_counter() - t0
        cols = [c for c in ("fusion", "audio", "video") if f"{c}/{self._primary()}" in ev.metrics]
        if not cols:
            return
        self.metric = f"{cols[0]}/{self._primary()}"
        value = float(ev.metrics[self.metric])
        self.curve.append((done, value))
        self.smooth.append((done, float(ev.metrics.get(f"{cols[0]}/mAP", value))))
        if self.callback is not None:
            self.callback(done, value)

    def state(self) -> dict[str, Any]:
        """The curve so far, saved with each epoch checkpoint so a resumed run keeps its earlier points."""
        return {"curve": list(self.curve), "smooth": list(self.smooth), "metric": self.metric}

    def restore(self, state: dict[str, Any] | None) -> None:
        if state:
            self.curve = [tuple(p) for p in state["curve"]]
            self.smooth = [tuple(p) for p in state["smooth"]]
            self.metric = state["metric"]

    def take_seconds(self) -> float:
        """Seconds spent on validation since the last call (kept out of training throughput)."""
        out, self.seconds = self.seconds, 0.0
        return out

    def _primary(self) -> str:
        return PRIMARY["multilabel" if self.engine.strategy.task.multilabel else "multiclass"]

    def last(self) -> dict[str, float]:
        return {f"val/{self.metric}": self.curve[-1][1]} if self.curve else {}

    def summary(self) -> dict[str, Any]:
        if self.on is None:
            return {}
        out = {"metric": self.metric, "split": self.engine.cache.validation.split, "clips": int(len(self.on[1])),
               "in_sample": self.in_sample, "steps": self.total,
               "curve": [[int(s), float(v)] for s, v in self.curve],
               "convergence_metric": self.metric.split("/")[0] + "/mAP",
               "convergence_curve": [[int(s), float(v)] for s, v in self.smooth],
               **convergence(self.smooth, self.total, progress=self.progress, chance=self._chance())}
        name, status = out["convergence_metric"], out["status"]
        if status == "not converged":
            log.warning("not converged: validation %s still rose by %.3f over the last %d%% of the learning-rate "
                        "integral of %d steps (threshold %.3f); train longer (--set train.max_steps=...) or tune",
                        name, out["rise"], int(100 * WINDOW), self.total, out["threshold"])
        elif status in ("not learning", "too short"):
            log.warning("%s: %s", status, out["reason"])
        return out

    def _chance(self) -> tuple[float, float] | None:
        """The convergence curve's chance level on this validation split (seeded random scores)."""
        src, rows = self.on
        labels = getattr(getattr(src, "split", None), "labels", None)
        return None if labels is None or not len(rows) else chance_map(np.asarray(labels)[rows])


def training_rows(cache: Any, recipe: Any, rows: np.ndarray, evaluate_on: str) -> np.ndarray:
    """The engine's training rows: ``rows`` minus the validation hold-out unless the recipe trains on
    all of the training split. Tuning (``evaluate_on="val"``) never trains on validation clips."""
    if evaluate_on == "val" and recipe.validation != "holdout":
        from avbench.errors import UserError

        raise UserError("evaluating on the validation split needs train.validation=holdout")
    if recipe.validation == "holdout" or evaluate_on == "val":
        return np.setdiff1d(rows, cache.validation.held_out, assume_unique=True)
    return rows
