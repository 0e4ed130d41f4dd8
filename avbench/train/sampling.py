"""Which training clips each step sees: balanced sampling (the UAVM/AST recipe) or shuffling.

Every rank draws the same global sequence from a generator seeded by (seed, epoch) and takes its
own slice of each global batch, so data-parallel training keeps the balanced-sampling distribution
exactly and one seed means one sequence, whatever the number of processes.
"""

from __future__ import annotations

import numpy as np
import torch


def balanced_weights(labels: np.ndarray) -> np.ndarray:
    """Per-clip weight: sum over the clip's labels of 1000 / (class_count + 0.01)."""
    labels = np.asarray(labels, dtype=np.float64)
    class_w = 1000.0 / (labels.sum(axis=0) + 0.01)
    return labels @ class_w


def epoch_order(n: int, epoch: int, seed: int, weights: np.ndarray | None) -> np.ndarray:
    """n indices for one epoch: weighted draws with replacement, or a permutation."""
    gen = torch.Generator().manual_seed(hash_seed(seed, epoch))
    if weights is not None:
        w = torch.as_tensor(weights, dtype=torch.float64)
        return torch.multinomial(w, n, replacement=True, generator=gen).numpy()
    return torch.randperm(n, generator=gen).numpy()


def batches(order: np.ndarray, batch_size: int, drop_last: bool, rank: int = 0, world: int = 1) -> list[np.ndarray]:
    """Global batches of ``batch_size`` cut from ``order``; each rank gets its contiguous share."""
    n = len(order)
    stop = (n // batch_size) * batch_size if drop_last else n
    out = []
    for start in range(0, stop, batch_size):
        glob = order[start:start + batch_size]
        share = np.array_split(glob, world)[rank]
        if len(share):
            out.append(share)
    return out


def hash_seed(seed: int, epoch: int) -> int:
    return (int(seed) * 1_000_003 + int(epoch) * 7919 + 17) % (2**63 - 1)
