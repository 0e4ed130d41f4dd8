"""Cross-CPC (Uni-Code, appendix eq. 6): one modality's context predicts another modality's future.

Each modality has an LSTM context network and one Linear predictor per future step. A random anchor
``t`` (shared by the batch) is drawn in ``[min_start, T - K - 1]``; the context of modality m at ``t``
(the LSTM run over steps ``0..t``) predicts step ``t + k`` of every modality. Scores are dot products
between targets and predictions over the batch, ``s[i, j] = z_target_i . pred_j``; the loss is the
InfoNCE of each target against the batch's predictions (log-softmax over ``j``, diagonal), summed
over ordered modality pairs (cross pairs weight 1, a modality predicting itself ``self_weight``, 0.1
in the public code) and averaged over batch and steps. Accuracy is the share of targets whose best
prediction is their own clip's.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class CrossCPC(nn.Module):
    def __init__(self, dim: int, context_dim: int, num_modalities: int = 2, steps: int = 2,
                 num_layers: int = 1, self_weight: float = 0.1, min_start: int = 1):
        super().__init__()
        if steps < 1:
            raise ValueError("Cross-CPC needs at least one prediction step")
        self.steps, self.min_start, self.self_weight = steps, min_start, self_weight
        self.num_modalities = num_modalities
        self.lstms = nn.ModuleList(nn.LSTM(dim, context_dim, num_layers, batch_first=True)
                                   for _ in range(num_modalities))
        self.predictors = nn.ModuleList(nn.ModuleList(nn.Linear(context_dim, dim) for _ in range(steps))
                                        for _ in range(num_modalities))

    def min_length(self) -> int:
        return self.min_start + self.steps + 1

    def forward(self, feats: Sequence[Tensor], anchor: int | None = None) -> tuple[Tensor, dict[tuple[int, int], Tensor]]:
        """``feats``: one ``[B, T, D]`` tensor per modality. Returns ``(loss, {(src, dst): accuracy})``.

        ``(src, dst)`` accuracy: how often modality ``src``'s context picks the right clip's future
        step of modality ``dst``, averaged over the prediction steps.
        """
        if len(feats) != self.num_modalities:
            raise ValueError(f"expected {self.num_modalities} modalities, got {len(feats)}")
        b, t, _ = feats[0].shape
        if t < self.min_length():
            raise ValueError(f"Cross-CPC with {self.steps} steps needs T >= {self.min_length()}, got {t}")
        if anchor is None:
            anchor = int(torch.randint(self.min_start, t - self.steps, (1,)))
        targets = arange = torch.arange(b, device=feats[0].device)
        preds = []
        for m, x in enumerate(feats):
            ctx, _ = self.lstms[m](x[:, :anchor + 1])
            c = ctx[:, anchor]
            preds.append([p(c) for p in self.predictors[m]])
        loss = feats[0].new_zeros(())
        acc: dict[tuple[int, int], Tensor] = {}
        for src in range(self.num_modalities):
            for dst in range(self.num_modalities):
                w = self.self_weight if src == dst else 1.0
                correct = feats[0].new_zeros(())
                for k in range(self.steps):
                    target = feats[dst][:, anchor + 1 + k]
                    dt = torch.promote_types(target.dtype, torch.float32)  # float32, or float64 for double inputs
                    scores = target.to(dt) @ preds[src][k].to(dt).t()  # [B targets, B predictions]
                    if w:
                        loss = loss + w * F.cross_entropy(scores, targets, reduction="sum")
                    correct = correct + (scores.argmax(1) == arange).float().mean()
                acc[(src, dst)] = (correct / self.steps).detach()
        return loss / (b * self.steps), acc
