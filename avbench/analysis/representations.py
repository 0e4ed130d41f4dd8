"""Per-layer, time-pooled representations of a test subset, one modality at a time.

UAVM's probe, retrieval and t-SNE (Figs. 3 and 4) all read ``strategy.embed`` outputs mean-pooled
over time; this module gathers them batch by batch so a large test set never sits in memory as
``[N, T, D]`` for every layer.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


@torch.no_grad()
def pooled_embeddings(run: Any, idx: np.ndarray | None = None, batch_size: int | None = None
                      ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """``({layer: [N, D]} for audio input, same for video input)``, float32, in ``idx`` order.

    Computed in fp32 (no autocast): representation geometry, not throughput, is what is measured.
    """
    strategy = run.strategy
    out_a: dict[str, list[np.ndarray]] = {}
    out_v: dict[str, list[np.ndarray]] = {}
    for _, raw in run.batches(idx, batch_size):
        b = run.prepare(raw)
        for side, store in ((("a"), out_a), (("v"), out_v)):
            layers = strategy.embed(b.audio, None) if side == "a" else strategy.embed(None, b.video)
            for name, t in layers.items():
                store.setdefault(name, []).append(t.float().mean(dim=1).cpu().numpy())
    return ({k: np.concatenate(v) for k, v in out_a.items()}, {k: np.concatenate(v) for k, v in out_v.items()})


@torch.no_grad()
def unimodal_logits(run: Any, idx: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray] | None:
    """Audio-only and video-only logits (the classifier head as a last "layer", UAVM Fig. 4), or
    None when the strategy cannot predict from one modality."""
    caps = run.capabilities
    if not (caps.audio_only and caps.video_only):
        return None
    la, lv = [], []
    for _, raw in run.batches(idx):
        b = run.prepare(raw)
        la.append(run.strategy.predict(b.audio, None).float().cpu().numpy())
        lv.append(run.strategy.predict(None, b.video).float().cpu().numpy())
    return np.concatenate(la), np.concatenate(lv)


def paired_layers(audio: dict[str, np.ndarray], video: dict[str, np.ndarray], skipped: dict[str, str],
                  min_clips: int, too_few: str) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Layers that have audio and video representations of one width and at least ``min_clips``
    clips, in layer order; the rest go to ``skipped`` with the reason."""
    out = []
    for name in audio:
        a, v = audio[name], video.get(name)
        if v is None:
            skipped[name] = "no video representation at this layer"
        elif a.shape != v.shape:
            skipped[name] = f"audio {a.shape[1:]} and video {v.shape[1:]} representations differ in width"
        elif len(a) < min_clips:
            skipped[name] = too_few.format(n=len(a))
        else:
            out.append((name, a, v))
    return out
