"""The fusion baselines people expect beside any new method, on temporally pooled frozen features.

Every baseline mean-pools each modality over the T steps (the "global pool" of paper 003's Naive AV
and of OGM-GE's heads, whose encoders output one vector per clip) and fuses the two vectors:

===========  =========================================================  ===========================
name         fused logits                                               audio-only / video-only
===========  =========================================================  ===========================
late_fusion  (f_a(a) + f_v(v)) / 2, two unimodal classifiers, each      each classifier alone
             trained with its own loss
naive_av     W [v; a] + b (paper 003 "Naive AV": concat, pool, FC)      split W: W_a a + b/2 (OGM-GE)
sum          W_a a + b_a + W_v v + b_v (OGM-GE SumFusion)               each branch alone (OGM-GE)
film         W (gamma(a) * v + beta(a)) + b, [gamma; beta] = L(a)       not defined (see reasons)
             (OGM-GE FiLM, audio conditions video)
gated        W (sigmoid(W_a a) * W_v v) + b (OGM-GE GatedFusion,        not defined (see reasons)
             audio gates video)
===========  =========================================================  ===========================

OGM-GE evaluates its concatenation head per modality by splitting the head's weight matrix and
halving the bias (``out_a = a W_a^T + b / 2``); ``naive_av`` does exactly that, ``sum`` uses each
branch with its own bias. FiLM and gating multiply the modalities, so no part of the head is a
unimodal classifier: those columns are skipped with the reason stated in ``capabilities``.
Widths follow OGM-GE: FiLM modulates the video vector at its own width; the gated head maps both
modalities to ``embed_dim`` (OGM-GE: 512) first. ``film_condition``/``gate_condition`` swap which
modality conditions (OGM-GE's ``x_film`` / ``x_gate`` switches). None of these can train on one
modality and be tested on the other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from avbench.api import Batch, Capabilities, FeatureSpec, Strategy, TaskSpec
from avbench.config import in_range  # value ranges, checked by every --set
from avbench.errors import UserError

_NO_CROSS = ("no representation is shared between the modalities: a head trained on one modality's "
             "features cannot read the other's")
_NO_LAYERS = "a single fusion head on pooled features has no per-layer representations"
_NO_ATTN = "the head pools and does not attend"


def pooled(x: Tensor) -> Tensor:
    """Mean over the T steps: ``[B, T, D] -> [B, D]`` (float32 for the heads)."""
    return x.float().mean(1)


def _need_both(name: str, audio: Tensor | None, video: Tensor | None) -> None:
    if audio is None or video is None:
        raise UserError(f"{name}: fused prediction needs both audio and video")


class _PooledFusion(Strategy):
    """Shared plumbing: loss on the fused logits, per-modality dispatch in ``predict``."""

    def fused(self, a: Tensor, v: Tensor) -> Tensor:
        raise NotImplementedError

    def audio_logits(self, a: Tensor) -> Tensor:
        raise UserError(f"{self.name}: {self.capabilities.why_not('audio_only')}")

    def video_logits(self, v: Tensor) -> Tensor:
        raise UserError(f"{self.name}: {self.capabilities.why_not('video_only')}")

    def training_step(self, batch: Batch, step: int) -> dict[str, Tensor]:
        _need_both(self.name, batch.audio, batch.video)
        logits = self.fused(pooled(batch.audio), pooled(batch.video))
        return {"loss": self.loss_fn(logits, batch.targets)}

    def predict(self, audio: Tensor | None, video: Tensor | None) -> Tensor:
        if audio is not None and video is not None:
            return self.fused(pooled(audio), pooled(video))
        if audio is not None:
            return self.audio_logits(pooled(audio))
        if video is not None:
            return self.video_logits(pooled(video))
        raise UserError(f"{self.name}: predict needs at least one modality")


# ---------------------------------------------------------------------------------------------
@dataclass
class LateFusionConfig:
    pass


class LateFusion(_PooledFusion):
    """Two unimodal linear classifiers on pooled features; fused logits are their mean.

    Each classifier is trained with its own loss (the sum is minimised), so each is a genuine
    unimodal model and the audio-only / video-only columns are those classifiers alone.
    """

    name = "late_fusion"
    Config = LateFusionConfig
    capabilities = Capabilities(audio_only=True, video_only=True, fusion=True, cross_modal=False,
                                reasons={"cross_modal": _NO_CROSS, "embeddings": _NO_LAYERS,
                                         "attention": _NO_ATTN})

    def __init__(self, cfg: LateFusionConfig, features: FeatureSpec, task: TaskSpec):
        super().__init__(cfg, features, task)
        self.fc_a = nn.Linear(features.audio_dim, task.num_classes)
        self.fc_v = nn.Linear(features.video_dim, task.num_classes)

    def audio_logits(self, a: Tensor) -> Tensor:
        return self.fc_a(a)

    def video_logits(self, v: Tensor) -> Tensor:
        return self.fc_v(v)

    def fused(self, a: Tensor, v: Tensor) -> Tensor:
        return 0.5 * (self.fc_a(a) + self.fc_v(v))

    def training_step(self, batch: Batch, step: int) -> dict[str, Tensor]:
        _need_both(self.name, batch.audio, batch.video)
        la = self.loss_fn(self.fc_a(pooled(batch.audio)), batch.targets)
        lv = self.loss_fn(self.fc_v(pooled(batch.video)), batch.targets)
        return {"loss": la + lv, "loss_audio": la.detach(), "loss_video": lv.detach()}


# ---------------------------------------------------------------------------------------------
@dataclass
class NaiveAVConfig:
    pass


class NaiveAV(_PooledFusion):
    """Paper 003's "Naive AV": concat(v, a) of globally pooled features, one FC layer.

    Audio-only / video-only split the FC weight as OGM-GE does: ``W_a a + b / 2`` and ``W_v v + b / 2``.
    """

    name = "naive_av"
    Config = NaiveAVConfig
    capabilities = Capabilities(audio_only=True, video_only=True, fusion=True, cross_modal=False,
                                reasons={"cross_modal": _NO_CROSS, "embeddings": _NO_LAYERS,
                                         "attention": _NO_ATTN})

    def __init__(self, cfg: NaiveAVConfig, features: FeatureSpec, task: TaskSpec):
        super().__init__(cfg, features, task)
        self.dv = features.video_dim
        self.fc = nn.Linear(features.video_dim + features.audio_dim, task.num_classes)

    def fused(self, a: Tensor, v: Tensor) -> Tensor:
        return self.fc(torch.cat([v, a], dim=-1))

    def audio_logits(self, a: Tensor) -> Tensor:
        return a @ self.fc.weight[:, self.dv:].t() + self.fc.bias / 2

    def video_logits(self, v: Tensor) -> Tensor:
        return v @ self.fc.weight[:, :self.dv].t() + self.fc.bias / 2


# ---------------------------------------------------------------------------------------------
@dataclass
class SumFusionConfig:
    pass


class SumFusion(_PooledFusion):
    """OGM-GE's SumFusion: ``fc_a(a) + fc_v(v)``; each branch alone gives the unimodal columns."""

    name = "sum"
    Config = SumFusionConfig
    capabilities = Capabilities(audio_only=True, video_only=True, fusion=True, cross_modal=False,
                                reasons={"cross_modal": _NO_CROSS, "embeddings": _NO_LAYERS,
                                         "attention": _NO_ATTN})

    def __init__(self, cfg: SumFusionConfig, features: FeatureSpec, task: TaskSpec):
        super().__init__(cfg, features, task)
        self.fc_a = nn.Linear(features.audio_dim, task.num_classes)
        self.fc_v = nn.Linear(features.video_dim, task.num_classes)

    def fused(self, a: Tensor, v: Tensor) -> Tensor:
        return self.fc_a(a) + self.fc_v(v)

    def audio_logits(self, a: Tensor) -> Tensor:
        return self.fc_a(a)

    def video_logits(self, v: Tensor) -> Tensor:
        return self.fc_v(v)


# ---------------------------------------------------------------------------------------------
_NO_SPLIT = ("the {kind} head multiplies the two modalities, so no part of it is a unimodal "
             "classifier (OGM-GE reports unimodal accuracy only for heads it can split)")


@dataclass
class FiLMFusionConfig:
    film_condition: Literal["audio", "video"] = "audio"  # the modality that produces gamma, beta


class FiLMFusion(_PooledFusion):
    """OGM-GE's FiLM: ``[gamma; beta] = L(c)``, logits ``W (gamma * x + beta) + b``.

    ``c`` is the conditioning modality (audio by default, OGM-GE's ``x_film=True``) and ``x`` the
    modulated one, at its own width.
    """

    name = "film"
    Config = FiLMFusionConfig
    capabilities = Capabilities(audio_only=False, video_only=False, fusion=True, cross_modal=False,
                                reasons={"audio_only": _NO_SPLIT.format(kind="FiLM"),
                                         "video_only": _NO_SPLIT.format(kind="FiLM"),
                                         "cross_modal": _NO_CROSS, "embeddings": _NO_LAYERS,
                                         "attention": _NO_ATTN})

    def __init__(self, cfg: FiLMFusionConfig, features: FeatureSpec, task: TaskSpec):
        super().__init__(cfg, features, task)
        if cfg.film_condition not in ("audio", "video"):
            raise UserError(f"film: film_condition must be audio or video, got {cfg.film_condition!r}")
        dc, dx = ((features.audio_dim, features.video_dim) if cfg.film_condition == "audio"
                  else (features.video_dim, features.audio_dim))
        self.film = nn.Linear(dc, 2 * dx)
        self.fc_out = nn.Linear(dx, task.num_classes)

    def fused(self, a: Tensor, v: Tensor) -> Tensor:
        cond, x = (a, v) if self.cfg.film_condition == "audio" else (v, a)
        gamma, beta = self.film(cond).chunk(2, dim=-1)
        return self.fc_out(gamma * x + beta)


# ---------------------------------------------------------------------------------------------
@dataclass
class GatedFusionConfig:
    embed_dim: int = in_range(512, "[1, inf)")  # OGM-GE GatedFusion dim
    gate_condition: Literal["audio", "video"] = "audio"  # the modality whose sigmoid gates the other


class GatedFusion(_PooledFusion):
    """OGM-GE's GatedFusion: ``W (sigmoid(W_g g) * W_x x) + b`` with both mapped to ``embed_dim``."""

    name = "gated"
    Config = GatedFusionConfig
    capabilities = Capabilities(audio_only=False, video_only=False, fusion=True, cross_modal=False,
                                reasons={"audio_only": _NO_SPLIT.format(kind="gated"),
                                         "video_only": _NO_SPLIT.format(kind="gated"),
                                         "cross_modal": _NO_CROSS, "embeddings": _NO_LAYERS,
                                         "attention": _NO_ATTN})

    def __init__(self, cfg: GatedFusionConfig, features: FeatureSpec, task: TaskSpec):
        super().__init__(cfg, features, task)
        self.check_compatible(cfg, features, task)
        self.fc_a = nn.Linear(features.audio_dim, cfg.embed_dim)
        self.fc_v = nn.Linear(features.video_dim, cfg.embed_dim)
        self.fc_out = nn.Linear(cfg.embed_dim, task.num_classes)

    @classmethod
    def check_compatible(cls, cfg: GatedFusionConfig, features: FeatureSpec, task: TaskSpec) -> None:
        if cfg.embed_dim < 1:
            raise UserError(f"gated: embed_dim must be at least 1, got {cfg.embed_dim}")
        if cfg.gate_condition not in ("audio", "video"):
            raise UserError(f"gated: gate_condition must be audio or video, got {cfg.gate_condition!r}")

    def fused(self, a: Tensor, v: Tensor) -> Tensor:
        ea, ev = self.fc_a(a), self.fc_v(v)
        gate, x = (ea, ev) if self.cfg.gate_condition == "audio" else (ev, ea)
        return self.fc_out(torch.sigmoid(gate) * x)
