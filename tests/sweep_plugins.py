"""A small real strategy for sweep tests: mean-pooled features, a linear head per modality; boom=1
raises inside training (a failure only a job can hit: the config itself is valid)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from avbench.api import Capabilities, Strategy


@dataclass
class BoomConfig:
    hidden: int = 8
    boom: int = 0


class BoomPool(Strategy):
    name = "boompool"
    Config = BoomConfig
    capabilities = Capabilities()

    def __init__(self, cfg, features, task):
        super().__init__(cfg, features, task)
        self.a = nn.Sequential(nn.Linear(features.audio_dim, cfg.hidden), nn.ReLU(), nn.Linear(cfg.hidden, task.num_classes))
        self.v = nn.Sequential(nn.Linear(features.video_dim, cfg.hidden), nn.ReLU(), nn.Linear(cfg.hidden, task.num_classes))

    def training_step(self, batch, step):
        if self.cfg.boom:
            raise RuntimeError(f"boom at step {step}")
        loss = self.loss_fn(self.a(batch.audio.mean(1)), batch.targets) + self.loss_fn(self.v(batch.video.mean(1)), batch.targets)
        return {"loss": loss}

    def predict(self, audio, video):
        outs = ([self.a(audio.mean(1))] if audio is not None else []) + ([self.v(video.mean(1))] if video is not None else [])
        return torch.stack(outs).mean(0)
