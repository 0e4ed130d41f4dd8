"""A->V and V->A retrieval per layer on the stratified 5-per-class subset (UAVM Fig. 4).

Each layer's time-pooled audio representation of a clip is a query; the candidates are the video
representations of every clip in the subset (and the other way round). The classifier's logits are
an extra last "layer" when the strategy predicts from one modality, as in Fig. 4 (right). A high
recall at front layers means the shared layers carried A-V correspondence down the stack.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from avbench.analysis.representations import paired_layers
from avbench.metrics.retrieval import retrieval_metrics

LOGITS_LAYER = "logits"


def layer_retrieval(audio: Mapping[str, np.ndarray], video: Mapping[str, np.ndarray]) -> dict[str, object]:
    """``{"layers": [...], "per_layer": {layer: {"a2v_R@1": ..., "v2a_medr": ...}}, "skipped": {...}}``."""
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
