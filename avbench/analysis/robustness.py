"""Robustness to missing, noisy and misaligned modalities, with MultiBench's summary numbers.

Perturbations of the test features (the primary metric of the fused prediction is measured):

* **drop**: one modality removed. A strategy that predicts from one modality gets ``None`` for the
  dropped side (its audio-only / video-only column); one that cannot is given zeros instead, and
  the result says so.
* **noise_audio / noise_video**: Gaussian noise mixed into one modality's cache features, *before*
  the recipe's per-step L2 norm: each step becomes ``(1 - level) * x_t + level * n_t`` where ``n_t``
  is Gaussian with per-element std ``||x_t|| / sqrt(D)`` (the norm of the step itself). Level 0 is
  the clean input and level 1 pure noise, so every curve runs from clean to chance whatever the
  features' own noise (plain additive noise of the step's norm barely moves a model that pools 30
  steps). Levels 0, 0.1, ..., 1 as in MultiBench. The noise comes from a generator seeded per
  (modality, level): every run sees the same noise.
* **shift**: audio rolled in time against video by ``round(level * T)`` steps, levels 0 .. 0.5.

MultiBench (Liang et al. 2021, ``eval_scripts/robustness.py``) summarises a curve ``f`` over levels
0..1 by *relative robustness*, the area under it (trapezoids), and *effective robustness*,
``sum(f - (b + f[0] - b[0]))``: the gap to a baseline's curve ``b`` (late fusion) shifted to start
where ``f`` starts. MultiBench then min-max normalises both across the methods of its table of
published numbers; here the raw values are reported and the baseline is a run from MLflow. For
the shift curve (levels 0..0.5) the area is divided by the level range, i.e. the mean over levels.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

NOISE_LEVELS = tuple(round(0.1 * i, 1) for i in range(11))
SHIFT_LEVELS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)


def relative_robustness(curve: list[float] | np.ndarray, levels: list[float] | np.ndarray) -> float:
    """Trapezoidal area under ``curve`` over ``levels``, divided by the level range when it is not 1."""
    y = np.asarray(curve, dtype=np.float64)
    x = np.asarray(levels, dtype=np.float64)
    if len(y) < 2:
        return float(y[0]) if len(y) else float("nan")
    area = float(np.sum((y[1:] + y[:-1]) * np.diff(x) / 2.0))
    span = float(x[-1] - x[0])
    return area if abs(span - 1.0) < 1e-9 else area / span


def effective_robustness(curve: list[float] | np.ndarray, baseline: list[float] | np.ndarray) -> float:
    """MultiBench's ``sum(f - (b + f[0] - b[0]))``."""
    f = np.asarray(curve, dtype=np.float64)
    b = np.asarray(baseline, dtype=np.float64)
    if f.shape != b.shape:
        raise ValueError(f"curve has {f.shape} points, baseline {b.shape}")
    return float(np.sum(f - (b + f[0] - b[0])))


def add_noise(x: Tensor, level: float, generator: torch.Generator) -> Tensor:
    """``(1 - level) * x + level * n``, ``n`` Gaussian with the norm of each step of ``x`` (in expectation)."""
    if level == 0:
        return x
    x = x.float()
    scale = x.norm(dim=-1, keepdim=True) / np.sqrt(x.shape[-1])
    noise = torch.randn(x.shape, generator=generator, dtype=torch.float32).to(x.device)
    return (1.0 - level) * x + level * scale * noise


def _metric(primary: str) -> Callable[[np.ndarray, np.ndarray], float]:
    from avbench.metrics.classification import classification_metrics, mean_average_precision, topk_accuracy

    if primary == "acc":
        return lambda s, y: topk_accuracy(s, (y > 0).astype(np.int64), 1)
    if primary == "mAP":
        return lambda s, y: mean_average_precision(s, (y > 0).astype(np.int64))
    return lambda s, y: classification_metrics(s, y)[primary]


@torch.no_grad()
def evaluate(run: Any, perturb: Callable[[dict[str, Tensor], int], dict[str, Tensor]] | None = None,
             drop: str | None = None, primary: str = "acc") -> tuple[float, str]:
    """The fused primary metric on the whole test split under a perturbation of the raw features.

    ``drop`` ("audio"/"video") removes a modality. Returns ``(value, how)``, where ``how`` says how
    the prediction was made ("fusion", "audio-only", "fusion with zero video", ...).
    """
    strategy = run.strategy
    caps = run.capabilities
    scores, labels = [], []
    how = "fusion"
    for k, (_, raw) in enumerate(run.batches()):
        raw = dict(raw)
        if perturb is not None:
            raw = perturb(raw, k)
        if drop is not None and not getattr(caps, "video_only" if drop == "audio" else "audio_only"):
            raw[drop] = torch.zeros_like(raw[drop])
        b = run.prepare(raw)
        with run.autocast():
            if drop == "audio":
                if caps.video_only:
                    out, how = strategy.predict(None, b.video), "video-only"
                else:
                    out, how = strategy.predict(b.audio, b.video), "fusion with zero audio"
            elif drop == "video":
                if caps.audio_only:
                    out, how = strategy.predict(b.audio, None), "audio-only"
                else:
                    out, how = strategy.predict(b.audio, b.video), "fusion with zero video"
            elif caps.fusion:
                out = strategy.predict(b.audio, b.video)
            else:
                raise ValueError(f"{run.strategy_name} has no fused prediction")
        scores.append(out.float().cpu().numpy())
        labels.append(b.labels.cpu().numpy())
    return _metric(primary)(np.concatenate(scores), np.concatenate(labels)), how


def robustness_curves(run: Any, primary: str = "acc", noise_levels=NOISE_LEVELS,
                      shift_levels=SHIFT_LEVELS) -> dict[str, Any]:
    """Every perturbation's curve for one run (no baseline involved)."""
    clean, _ = evaluate(run, primary=primary)
    out: dict[str, Any] = {"primary": primary, "clean": clean, "drop": {}, "curves": {}}
    for side in ("audio", "video"):
        value, how = evaluate(run, drop=side, primary=primary)
        out["drop"][side] = {"value": value, "how": how}
    for side in ("audio", "video"):
        vals = []
        for level in noise_levels:
            gen = torch.Generator().manual_seed(int(round(level * 1000)) + (0 if side == "audio" else 1_000_003))

            def perturb(raw: dict[str, Tensor], k: int, side=side, level=level, gen=gen) -> dict[str, Tensor]:
                raw[side] = add_noise(raw[side], level, gen)
                return raw

            vals.append(clean if level == 0 else evaluate(run, perturb, primary=primary)[0])
        out["curves"][f"noise_{side}"] = {"levels": list(noise_levels), "values": vals}
    t = run.cache.features.num_steps
    vals, steps = [], []
    for level in shift_levels:
        k_steps = int(round(level * t))
        steps.append(k_steps)

        def perturb(raw: dict[str, Tensor], k: int, s=k_steps) -> dict[str, Tensor]:
            raw["audio"] = torch.roll(raw["audio"], shifts=s, dims=1)
            return raw

        vals.append(clean if k_steps == 0 else evaluate(run, perturb, primary=primary)[0])
    out["curves"]["shift"] = {"levels": list(shift_levels), "values": vals, "steps": steps}
    for c in out["curves"].values():
        c["relative"] = relative_robustness(c["values"], c["levels"])
    return out


def add_effective(result: dict[str, Any], baseline: dict[str, Any] | None, baseline_label: str = "") -> dict[str, Any]:
    """Effective robustness of every curve against the baseline's curve at the same levels."""
    result["baseline"] = baseline_label or None
    for name, c in result["curves"].items():
        b = (baseline or {}).get("curves", {}).get(name)
        if b is not None and list(b["levels"]) == list(c["levels"]):
            c["effective"] = effective_robustness(c["values"], b["values"])
            c["baseline_values"] = list(b["values"])
        else:
            c["effective"] = None
    return result
