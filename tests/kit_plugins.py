"""Strategies that break the contract, for tests/test_plugin_kit.py (importable as ``kit_plugins:...``)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from avbench.api import Capabilities, Strategy


@dataclass
class KitConfig:
    hidden: int = 8  # width of the pooled features


class NoPredict(Strategy):
    """Implements training_step only: refused when loaded, before anything runs."""

    name = "nopredict"
    Config = KitConfig

    def __init__(self, cfg, features, task):
        super().__init__(cfg, features, task)
        self.head = nn.Linear(features.audio_dim, task.num_classes)

    def training_step(self, batch, step):
        return {"loss": self.loss_fn(self.head(batch.audio.mean(1)), batch.targets)}


class Dishonest(Strategy):
    """Declares no audio-only column, yet answers it with made-up logits (and gives no reason)."""

    name = "dishonest"
    Config = KitConfig
    capabilities = Capabilities(audio_only=False)

    def __init__(self, cfg, features, task):
        super().__init__(cfg, features, task)
        self.a = nn.Linear(features.audio_dim, task.num_classes)
        self.v = nn.Linear(features.video_dim, task.num_classes)

    def training_step(self, batch, step):
        return {"loss": self.loss_fn(self.a(batch.audio.mean(1)) + self.v(batch.video.mean(1)), batch.targets)}

    def predict(self, audio, video):
        outs = ([self.a(audio.mean(1))] if audio is not None else []) + ([self.v(video.mean(1))] if video is not None else [])
        return torch.stack(outs).sum(0)
