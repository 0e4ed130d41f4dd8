"""How ``avbench tune`` scores and chooses among its trials: pure functions of the trial records.

Why a module of its own: the choice is the tuning's one decision, and it has to be testable without
training anything. A trial record carries, per training seed, the validation accuracy, mAP and loss
(the cross-entropy of the strategy's logits on the validation rows; BCE for multilabel tasks).

* ``--select`` names the score: ``val_loss`` (negated, so higher is better), ``val_mAP`` or
  ``val_acc``. Accuracy on a small validation split moves in steps of one clip and ties often; among
  configurations that all work it barely ranks them (issue 23: Spearman with test accuracy -0.05 and
  -0.78 among late_fusion's contenders, against 0.70 / 0.80 for the negative loss). The default,
  mAP, is the one benchmarks/tune_selection.py measured best on late_fusion and sum (Spearman with
  test accuracy among contenders 0.90-1.0, against 0.72-1.0 for accuracy and 0.50-1.0 for the loss,
  whose level tracks how confident the logits are as much as how well they rank;
  docs/tuning-and-sweeps.md).
* A trial's score is the mean over its training seeds; its noise is the standard error over those
  seeds (with one seed, accuracy's binomial standard error on the validation clips; the loss and mAP
  then have no noise estimate and only an exact tie is detected).
* ``choose`` returns the best trial and the trials that cannot be told apart from it: an exact tie,
  or a difference within twice the combined standard error. The summary says so instead of
  pretending that trial order settled it.
* ``capped``: chosen values at the top of their range (the search wanted more than it was allowed).
* ``SAMPLERS``: how trials are proposed: TPE, or a scrambled Sobol' net that covers the space
  evenly for small budgets (avbench/tune/sobol.py says why).
* ``RUN_LENGTHS``: whether the run length is one of the choices (``searched``) or the whole step
  budget for every trial (``budget``; the driver takes it out of the space).
"""

from __future__ import annotations

import hashlib
import math
from typing import Any, Mapping, Sequence

import numpy as np

SELECT = {"val_loss": ("loss", -1.0), "val_mAP": ("mAP", 1.0), "val_acc": ("acc", 1.0)}
DEFAULT_SELECT = "val_mAP"  # measured: benchmarks/tune_selection.py, docs/tuning-and-sweeps.md
NOISE_Z = 2.0  # two standard errors of the difference: "cannot be told apart"
TOP_SHARE = 0.05  # a chosen value in the top 5% of its range (log scale if searched so) is "capped"
RUN_LENGTHS = ("searched", "budget")  # --run-length: train.max_steps among the choices, or the whole budget
SAMPLER_NAMES = {"tpe": "TPE", "sobol": "scrambled Sobol'"}  # --sampler: TPE (random until its 10th trial), or sobol.py
SAMPLERS = tuple(SAMPLER_NAMES)


def stable_seed(*parts: Any) -> int:
    """A 32-bit seed from ``parts``, the same in every process and Python (unlike the salted ``hash``)."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:4], "big")


def strategy_seed(sampler_seed: int, strategy: str) -> int:
    """Each strategy's own sampler seed stream, so strategies do not share their random start-up trials."""
    return stable_seed("avbench.tune", sampler_seed, strategy)


def trial_sampler_seed(strategy_seed_: int, number: int) -> int:
    """The sampler seed of trial ``number``: a function of the history's length, not of a sampler's
    hidden state, so a resumed study suggests exactly what the uninterrupted one would have."""
    return stable_seed("trial", strategy_seed_, number)


def is_balanced(budget: int) -> bool:
    """Sobol' points are stratified in every parameter only in groups of a power of two."""
    return budget >= 1 and budget & (budget - 1) == 0


def validation_scores(logits: Any, labels: Any, multilabel: bool) -> dict[str, float]:
    """Accuracy, mAP and loss of one column's logits on the validation rows: what a trial records per
    seed. The loss is the training objective's own form (``avbench.api.classification_loss``:
    soft-target cross-entropy, BCE for multilabel) on the raw logits."""
    import torch

    from avbench.api import classification_loss
    from avbench.metrics.classification import classification_metrics

    logits = np.asarray(logits, np.float32)
    labels = np.asarray(labels, np.float32)
    m = classification_metrics(logits, labels)
    loss = float(classification_loss(torch.from_numpy(logits), torch.from_numpy(labels), multilabel))
    return {"acc": float(m["acc"]), "mAP": float(m["mAP"]), "loss": loss}


def check_select(name: str) -> str:
    from avbench.errors import UserError

    if name not in SELECT:
        raise UserError(f"--select {name}: one of {', '.join(SELECT)}")
    return name


def seed_scores(record: Mapping[str, Any], select: str) -> list[float]:
    """The trial's per-seed scores under ``select`` (higher is better)."""
    key, sign = SELECT[select]
    return [sign * float(v) for v in record["scores"][key]]


def score(record: Mapping[str, Any], select: str) -> float:
    vals = seed_scores(record, select)
    return float(np.mean(vals)) if vals else float("nan")


def noise(record: Mapping[str, Any], select: str) -> float:
    """Standard error of the trial's score: over its seeds, or (one seed, accuracy) binomial on its clips."""
    vals = seed_scores(record, select)
    if len(vals) >= 2:
        return float(np.std(vals, ddof=1) / math.sqrt(len(vals)))
    n = int(record.get("val_clips") or 0)
    if select == "val_acc" and n > 0 and vals:
        p = min(max(vals[0], 0.0), 1.0)
        return math.sqrt(max(p * (1 - p), 1.0 / n) / n)  # at p = 0 or 1 still one clip's worth
    return 0.0


def choose(trials: Sequence[Mapping[str, Any]], select: str) -> dict[str, Any]:
    """The best trial under ``select`` and the trials it cannot be told apart from.

    ``trials`` are records with ``number`` and ``scores``; returns ``best`` (its number), ``score``,
    ``noise``, ``ranking`` (numbers, best first; a tie goes to the lower number, as before), ``tied``
    (the other trials with exactly the best score), ``indistinct`` (the other trials within
    ``NOISE_Z`` combined standard errors) and ``note`` (a sentence, empty when the best is clear)."""
    usable = [t for t in trials if math.isfinite(score(t, select))]
    if not usable:
        return {"best": None, "score": float("nan"), "noise": float("nan"), "ranking": [], "tied": [],
                "indistinct": [], "note": "no trial has a finite score"}
    ranked = sorted(usable, key=lambda t: (-score(t, select), t["number"]))
    best = ranked[0]
    s0, e0 = score(best, select), noise(best, select)
    tied = [t["number"] for t in ranked[1:] if score(t, select) == s0]
    indistinct = [t["number"] for t in ranked[1:]
                  if t["number"] not in tied and s0 - score(t, select) <= NOISE_Z * math.hypot(e0, noise(t, select))]
    note = ""
    if tied or indistinct:
        parts = []
        if tied:
            parts.append(f"exact tie with trial{'s' if len(tied) > 1 else ''} {_list(tied)} "
                         f"(settled by trial order)")
        if indistinct:
            parts.append(f"trial{'s' if len(indistinct) > 1 else ''} {_list(indistinct)} within "
                         f"{NOISE_Z:g} standard errors")
        note = (f"the top trials cannot be told apart on {select}: best trial {best['number']} has "
                + " and ".join(parts))
    return {"best": best["number"], "score": s0, "noise": e0, "ranking": [t["number"] for t in ranked],
            "tied": tied, "indistinct": indistinct, "note": note}


def top(trials: Sequence[Mapping[str, Any]], select: str, n: int) -> list[Mapping[str, Any]]:
    """The ``n`` best trials under ``select`` (ties by trial number): the confirmation stage's entrants."""
    usable = [t for t in trials if math.isfinite(score(t, select))]
    return sorted(usable, key=lambda t: (-score(t, select), t["number"]))[:n]


def capped(params: Mapping[str, Any], dists: Mapping[str, Any]) -> dict[str, Any]:
    """``{key: top of its range}`` for chosen numeric values in the top ``TOP_SHARE`` of their range."""
    import optuna.distributions as od

    out = {}
    for key, value in params.items():
        d = dists.get(key)
        if not isinstance(d, (od.IntDistribution, od.FloatDistribution)) or d.high <= d.low:
            continue
        lo, hi, v = float(d.low), float(d.high), float(value)
        if d.log and lo > 0:
            lo, hi, v = math.log(lo), math.log(hi), math.log(max(v, 1e-300))
        if v >= hi - TOP_SHARE * (hi - lo):
            out[key] = d.high
    return out


def _list(numbers: Sequence[int]) -> str:
    return ", ".join(str(n) for n in numbers)
