"""t-SNE of each layer's audio and video representations (UAVM Fig. 3D).

Audio and video representations of the same clips are embedded together, per layer; separate
clouds mean the layer keeps the modalities apart. ``sklearn.manifold.TSNE`` with ``random_state=0``
and PCA initialisation, so the picture is reproducible.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np


def tsne_layers(audio: Mapping[str, np.ndarray], video: Mapping[str, np.ndarray],
                perplexity: float = 30.0) -> dict[str, object]:
    """``{"layers": [...], "coords": {layer: [2N, 2]} (audio rows first), "n": N, "skipped": {...}}``."""
    from sklearn.manifold import TSNE

    layers, coords, skipped = [], {}, {}
    n = 0
    for name in audio:
        a, v = audio[name], video.get(name)
        if v is None or a.shape != v.shape:
            skipped[name] = "audio and video representations differ in width"
            continue
        n = len(a)
        if 2 * n < 5:
            skipped[name] = "too few clips for t-SNE"
            continue
        x = np.concatenate([a, v]).astype(np.float64)
        if not np.isfinite(x).all():
            skipped[name] = "non-finite representations"
            continue
        if float(x.std(axis=0).max()) < 1e-9:
            # A collapsed layer (every clip the same vector) makes PCA divide by zero, and the
            # Barnes-Hut code can crash the process on the NaNs that follow.
            skipped[name] = "the representation is the same for every clip (collapsed)"
            continue
        perp = float(min(perplexity, max(2.0, (2 * n - 1) / 3.0)))
        emb = TSNE(n_components=2, perplexity=perp, init="pca", random_state=0, learning_rate="auto").fit_transform(x)
        layers.append(name)
        coords[name] = emb.astype(np.float32)
    return {"layers": layers, "coords": coords, "n": n, "skipped": skipped}
