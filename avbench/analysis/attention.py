"""Audio-vs-video attention maps (UAVM Fig. 5).

*Difference per layer* (left): the mean absolute difference between the attention probabilities a
layer produces for a clip's audio and for the same clip's video, averaged over clips, heads, queries
and keys. Fewer shared layers gave smaller differences in UAVM: modality-specific layers learn to
align the informative parts of the two streams in time.

*Temporal heatmap* (right): for one clip and one layer, the attention each time step receives,
averaged over queries, per head, for the audio input and for the video input.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor


def _maps(strategy: Any, modality: str, x: Tensor) -> dict[str, Tensor]:
    return strategy.attention_maps(x, None) if modality == "audio" else strategy.attention_maps(None, x)


@torch.no_grad()
def attention_difference(strategy: Any, left: tuple[str, Tensor], right: tuple[str, Tensor],
                         batch_size: int = 128) -> dict[str, float]:
    """MAE per layer between the maps of ``left`` and ``right`` inputs, each ``(modality, [N, T, D])``.

    Paired clips: ``(("audio", A), ("video", V))``. Giving the same modality and input on both sides
    returns exact zeros (the sanity check).
    """
    (ml, xl), (mr, xr) = left, right
    if xl.shape[0] != xr.shape[0]:
        raise ValueError(f"{xl.shape[0]} left inputs against {xr.shape[0]} right inputs")
    sums: dict[str, float] = {}
    n = xl.shape[0]
    for s in range(0, n, batch_size):
        a = _maps(strategy, ml, xl[s:s + batch_size])
        b = _maps(strategy, mr, xr[s:s + batch_size])
        for layer in a:
            if layer not in b or a[layer].shape != b[layer].shape:
                continue
            diff = (a[layer].float() - b[layer].float()).abs()
            sums[layer] = sums.get(layer, 0.0) + float(diff.mean(dim=(1, 2, 3)).sum())
    return {k: v / n for k, v in sums.items()}


@torch.no_grad()
def temporal_heatmap(strategy: Any, audio: Tensor, video: Tensor, layer: str | None = None) -> dict[str, Any]:
    """One clip (``[1, T, D]`` each): ``{"layer", "audio": [heads, T], "video": [heads, T]}`` where
    entry (h, t) is the attention step t receives from all queries of head h (rows sum to 1)."""
    ma = strategy.attention_maps(audio, None)
    mv = strategy.attention_maps(None, video)
    layer = layer or list(ma)[-1]
    out = {"layer": layer}
    for side, maps in (("audio", ma), ("video", mv)):
        m = maps[layer][0].float()  # [heads, Tq, Tk]
        out[side] = m.mean(dim=1).cpu().numpy()
    return out


def run_attention(run: Any, idx: np.ndarray, clip: int = 0) -> dict[str, Any]:
    """Paired audio/video difference per layer over ``idx``, the same-input control, and one clip's
    heatmap (``clip`` indexes ``idx``)."""
    strategy = run.strategy
    audio, video = [], []
    for _, raw in run.batches(idx):
        b = run.prepare(raw)
        audio.append(b.audio)
        video.append(b.video)
    a = torch.cat(audio)
    v = torch.cat(video)
    paired = attention_difference(strategy, ("audio", a), ("video", v))
    # Unpaired control: audio of clip i against video of clip i+1. When paired ~ unpaired, the maps
    # do not depend on the clip's content in a modality-consistent way.
    shifted = attention_difference(strategy, ("audio", a), ("video", torch.roll(v, 1, dims=0)))
    heat = temporal_heatmap(strategy, a[clip:clip + 1], v[clip:clip + 1])
    layers = list(paired)
    return {"layers": layers, "per_layer": {k: {"mae": paired[k], "mae_unpaired": shifted.get(k, float("nan"))}
                                           for k in layers},
            "clips": int(len(idx)), "heatmap": {"clip_index": int(idx[clip]), "clip_id": run.split.ids[int(idx[clip])],
                                                 "layer": heat["layer"], "audio": heat["audio"].tolist(),
                                                 "video": heat["video"].tolist()}}
