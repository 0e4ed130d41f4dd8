"""A->V and V->A retrieval per layer on the stratified 5-per-class subset (UAVM Fig. 4).

Each layer's time-pooled audio representation of a clip is a query; the candidates are the video
representations of every clip in the subset (and the other way round). The classifier's logits are
an extra last "layer" when the strategy predicts from one modality, as in Fig. 4 (right). A high
recall at front layers means the shared layers carried A-V correspondence down the stack.

Inputs: by default the model sees what it saw in training and testing (the recipe's per-step L2 norm).
The authors' retrieval and representation scripts load features with ``feat_norm False`` although
their models were trained on L2-normalised features; ``inputs="raw"`` (``avbench analyze
--retrieval-inputs raw``) reproduces that convention.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from avbench.analysis.representations import paired_layers
from avbench.metrics.retrieval import retrieval_metrics

LOGITS_LAYER = "logits"
INPUTS = ("normalised", "raw")


def with_inputs(run: Any, inputs: str) -> Any:
    """``run`` as an analysis sees it with ("normalised") or without ("raw", the authors' ``feat_norm
    False``) the per-step L2 norm of the inputs; the trained model is shared, not reloaded."""
    if inputs not in INPUTS:
        raise ValueError(f"inputs must be one of {INPUTS}, got {inputs!r}")
    l2 = inputs == "normalised"
    if run.recipe.l2_norm == l2:
        return run
    view = copy.copy(run)
    view.__dict__["recipe"] = dataclasses.replace(run.recipe, l2_norm=l2)
    view.__dict__["strategy"] = run.strategy  # one loaded model for both views
    return view


def layer_retrieval(audio: Mapping[str, np.ndarray], video: Mapping[str, np.ndarray]) -> dict[str, object]:
    """``{"layers": [...], "per_layer": {layer: {"a2v_R_at1": ..., "v2a_medr": ...}}, "skipped": {...}}``."""
    layers, per_layer, skipped = [], {}, {}
    for name, a, v in paired_layers(audio, video, skipped, 2, "fewer than 2 clips"):
        if float(np.ptp(a, axis=0).max()) == 0.0 or float(np.ptp(v, axis=0).max()) == 0.0:
            # Every clip the same vector: all similarities tie, and ranking ties optimistically
            # would report R@1 = 1 for a layer that carries no information.
            skipped[name] = "the representation is the same for every clip (collapsed)"
            continue
        layers.append(name)
        per_layer[name] = retrieval_metrics(a, v)
    return {"layers": layers, "per_layer": per_layer, "skipped": skipped}
