"""Recipe augmentations on a device batch: per-step L2 norm, feature mixup with label smoothing,
and a time roll shared by both modalities.

Two switches follow the UAVM authors' ``dataloader_mm.py`` where avbench's default differs:
``label_arithmetic="reference"`` gives an unmixed clip's labels 1 - ls (their loader overwrites the
ls/C start), where ``"uniform"`` gives every target ls/C + (1 - ls) * label; and
``mixup_partner="split"`` draws a clip's partner uniformly from the whole training split (their
``random.randint(0, num_samples - 1)``), where ``"batch"`` draws it from the (balanced) batch.

All randomness comes from a NumPy generator the engine seeds with (seed, global step): the draws are
tiny, the result is identical on CPU and GPU, and a resumed run needs no RNG state to continue.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


def l2_normalize_steps(x: Tensor) -> Tensor:
    return F.normalize(x, dim=-1)


def smooth_targets(labels: Tensor, smoothing: float, arithmetic: str = "uniform") -> Tensor:
    """Unmixed targets: labels * (1 - ls) + ls / C ("uniform"), or 1 - ls on the labels and ls / C
    elsewhere ("reference", the authors' loader). Also used for multilabel."""
    c = labels.shape[-1]
    if arithmetic == "reference":
        return torch.where(labels > 0, 1.0 - smoothing, smoothing / c).float()
    return labels.float() * (1.0 - smoothing) + smoothing / c


def mixed_targets(labels: Tensor, partner_labels: Tensor, lam: Tensor, smoothing: float,
                  arithmetic: str = "uniform") -> Tensor:
    """Mixup targets: start at ls/C, the clip's labels get +lambda(1 - ls), the partner's
    +(1 - lambda)(1 - ls). Clips with lambda = 1 were not mixed: with ``arithmetic="reference"`` they
    get the authors' unmixed targets (``smooth_targets``)."""
    c = labels.shape[-1]
    lab, plab = labels.float(), partner_labels.float()
    lam = lam.float()
    targets = smoothing / c + (1 - smoothing) * (lam[:, None] * lab + (1 - lam[:, None]) * plab)
    if arithmetic == "reference":
        targets = torch.where((lam < 1)[:, None], targets, smooth_targets(labels, smoothing, arithmetic))
    return targets


def split_partners(rows: np.ndarray, partner_rows: np.ndarray, lam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Partners drawn from the whole split (``mixup_partner="split"``): the rows to gather (the batch's
    own ``rows``, then each distinct partner row of a mixed clip) and, per clip, its partner's position
    among them (an unmixed clip points at itself: its partner has weight 0)."""
    n = len(rows)
    mixed = lam < 1
    ext, inv = np.unique(partner_rows[mixed], return_inverse=True)
    partner = np.arange(n)
    partner[mixed] = n + inv
    return np.concatenate([rows, ext]), partner


def mixup(audio: Tensor | None, video: Tensor | None, labels: Tensor, prob: float, alpha: float,
          smoothing: float, rng: np.random.Generator) -> tuple[Tensor | None, Tensor | None, Tensor, Tensor, Tensor]:
    """Mix each clip with probability ``prob`` with a uniformly drawn partner of the batch.

    The same lambda mixes audio and video. Targets follow the reference: start at ls/C, the clip gets
    +lambda(1 - ls) on its labels and the partner's labels get +(1 - lambda)(1 - ls). Returns
    (audio, video, targets, partner index, lambda) with lambda = 1 for clips that were not mixed.
    """
    b = labels.shape[0]
    dev = labels.device
    partner_np = rng.integers(0, b, b)
    lam_np = rng.beta(alpha, alpha, b) if alpha > 0 else np.ones(b)
    lam_np = np.where(rng.random(b) < prob, lam_np, 1.0)
    partner = torch.from_numpy(partner_np).to(dev)
    lam = torch.from_numpy(lam_np).float().to(dev)
    targets = mixed_targets(labels, labels[partner], lam, smoothing)

    def mix(x: Tensor | None) -> Tensor | None:
        if x is None:
            return None
        w = lam.to(x.dtype)[:, None, None]
        return w * x + (1 - w) * x[partner]

    return mix(audio), mix(video), targets, partner, lam


def time_roll(shift: Tensor, *xs: Tensor | None) -> list[Tensor | None]:
    """Roll each [B, T, ...] tensor along time by ``shift[b]`` (``torch.roll`` semantics per clip)."""
    out: list[Tensor | None] = []
    for x in xs:
        if x is None:
            out.append(None)
            continue
        t = x.shape[1]
        idx = (torch.arange(t, device=x.device)[None, :] - shift[:, None].to(x.device)) % t
        if x.dim() == 3:
            idx3 = idx[..., None].expand(-1, -1, x.shape[2])
            out.append(torch.gather(x, 1, idx3))
        else:
            out.append(torch.gather(x, 1, idx))
    return out


def random_shifts(b: int, t: int, rng: np.random.Generator) -> Tensor:
    """Shifts in [-T/2, T/2 - 1] (the reference's randint(-15, 15) for T = 30)."""
    return torch.from_numpy(rng.integers(-(t // 2), t - t // 2, b))
