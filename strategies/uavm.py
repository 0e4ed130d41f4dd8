"""UAVM and its two baselines: one configurable Transformer family (Gong et al., "UAVM").

* ``uavm``: modality-specific layers (``n_specific``) then shared layers (``n_shared``, width
  ``s_dim``) and one shared head. Each training batch is one modality: audio with probability
  ``lambda_mt``, else video. Fused inference is the mean of the two passes' logits.
* ``independent``: the same layers with the second stack duplicated per modality (reference
  ``SeperateTrans``): nothing is shared, each modality has its own head.
* ``cross_attention``: modality layers, then the two token sequences concatenated in time (2T tokens)
  through joint layers and one head; it sees both modalities in every step.

Reference details (public UAVM code, ``src/models/mm_trans.py``): input LayerNorm(eps 1e-6); a Linear
projection only when the input width differs from ``embed_dim``; learned positional embedding
(trunc-normal 0.02); pre-LN blocks, 4 heads, MLP ratio 4, qkv without bias, no dropout; mean pool over
time; head LayerNorm(eps 1e-6) + Linear. With ``n_specific = 0`` each modality gets LayerNorm +
Linear into the shared width. With ``n_shared = 0`` the heads are per modality, so nothing is shared. The paper
configuration (width 1024, 3 + 3 layers) is the default.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from avbench.api import Batch, Capabilities, FeatureSpec, Strategy, TaskSpec
from avbench.errors import UserError
from avbench.nn import Block, init_weights


@dataclass
class UAVMConfig:
    embed_dim: int = 1024  # width of the modality-specific layers
    num_heads: int = 4
    n_specific: int = 3  # N: modality-specific layers per modality
    n_shared: int = 3  # N_s: shared layers
    s_dim: int = 0  # S_dim: width of the shared layers; 0 means embed_dim
    lambda_mt: float = 0.5  # probability that a training batch is audio
    mlp_ratio: float = 4.0
    fused_attention: bool = True  # scaled_dot_product_attention; False = reference softmax path
    # Expected input widths; 0 takes the cache's. Pin them (e.g. 1024 for the released VGGSound
    # features) to refuse a cache from another extractor instead of silently projecting it.
    audio_dim: int = 0
    video_dim: int = 0


class ModalityStem(nn.Module):
    """Input LayerNorm, projection when widths differ, learned positions, then N blocks."""

    def __init__(self, in_dim: int, dim: int, steps: int, depth: int, cfg: UAVMConfig):
        super().__init__()
        self.norm = nn.LayerNorm(in_dim, eps=1e-6)
        self.proj = nn.Linear(in_dim, dim) if in_dim != dim else nn.Identity()
        self.pos = nn.Parameter(torch.zeros(1, steps, dim))
        nn.init.trunc_normal_(self.pos, std=0.02)
        self.blocks = nn.ModuleList(Block(dim, cfg.num_heads, cfg.mlp_ratio, fused=cfg.fused_attention)
                                    for _ in range(depth))

    def forward(self, x: Tensor, trace: list[Tensor] | None = None, capture: bool = False) -> Tensor:
        x = self.proj(self.norm(x)) + self.pos
        if trace is not None:
            trace.append(x)
        for blk in self.blocks:
            x = blk(x, capture=capture)
            if trace is not None:
                trace.append(x)
        return x


class Head(nn.Module):
    def __init__(self, dim: int, num_classes: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.norm(x.mean(dim=1)))


class UAVMFamily(Strategy):
    """The shared machinery; subclasses pick the variant (see module docstring)."""

    Config: ClassVar[type] = UAVMConfig
    variant: ClassVar[str] = "unified"

    def __init__(self, cfg: UAVMConfig, features: FeatureSpec, task: TaskSpec):
        super().__init__(cfg, features, task)
        self.check_compatible(cfg, features, task)
        d = cfg.embed_dim
        s = cfg.s_dim or d
        t = features.num_steps
        if cfg.n_specific > 0:
            self.a_stem = ModalityStem(features.audio_dim, d, t, cfg.n_specific, cfg)
            self.v_stem = ModalityStem(features.video_dim, d, t, cfg.n_specific, cfg)
            width = d
        else:  # reference: per-modality LayerNorm + Linear straight into the shared width
            self.a_stem = ModalityStem(features.audio_dim, s, t, 0, cfg)
            self.v_stem = ModalityStem(features.video_dim, s, t, 0, cfg)
            width = s
        # "separate" = the modal-independent baseline: the second stack exists once per modality.
        self.separate = self.variant == "independent" or cfg.n_shared == 0
        top = s if cfg.n_shared > 0 else width

        def stack() -> nn.ModuleList:
            return nn.ModuleList(Block(s, cfg.num_heads, cfg.mlp_ratio, fused=cfg.fused_attention)
                                 for _ in range(cfg.n_shared))

        def bridge() -> nn.Module:
            return nn.Linear(width, s) if (cfg.n_shared > 0 and width != s) else nn.Identity()

        if self.separate:
            self.a_top, self.v_top = stack(), stack()
            self.a_bridge, self.v_bridge = bridge(), bridge()
            self.a_head, self.v_head = Head(top, task.num_classes), Head(top, task.num_classes)
        else:
            self.shared, self.bridge = stack(), bridge()
            self.head = Head(top, task.num_classes)
        self._init()

    def _init(self) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.LayerNorm)):
                init_weights(m)

    @classmethod
    def check_compatible(cls, cfg: UAVMConfig, features: FeatureSpec, task: TaskSpec) -> None:
        for name in ("embed_dim", "num_heads"):
            if getattr(cfg, name) < 1:
                raise UserError(f"--set {name} must be at least 1")
        if cfg.n_specific < 0 or cfg.n_shared < 0:
            raise UserError("--set n_specific and n_shared must be non-negative")
        s = cfg.s_dim or cfg.embed_dim
        for width, name in ((cfg.embed_dim, "embed_dim"), (s, "s_dim")):
            if width % cfg.num_heads:
                raise UserError(f"--set {name}={width} is not divisible by num_heads={cfg.num_heads}")
        if not 0.0 <= cfg.lambda_mt <= 1.0:
            raise UserError(f"--set lambda_mt={cfg.lambda_mt} must be in [0, 1]")
        if features.num_steps < 1:
            raise UserError("the cache has no time steps")
        for side, want, got in (("audio", cfg.audio_dim, features.audio_dim), ("video", cfg.video_dim, features.video_dim)):
            if want and want != got:
                raise UserError(f"the cache's {side} features are {got}-d but {side}_dim={want} is set; "
                                f"use a cache from the matching extractor or --set {side}_dim=0")

    # --- forward pieces -------------------------------------------------------------------------
    def _stem(self, x: Tensor, modality: str, trace=None, capture=False) -> Tensor:
        stem = self.a_stem if modality == "a" else self.v_stem
        return stem(x, trace=trace, capture=capture)

    def _top(self, modality: str) -> tuple[nn.Module, nn.ModuleList, Head]:
        if self.separate:
            if modality == "a":
                return self.a_bridge, self.a_top, self.a_head
            return self.v_bridge, self.v_top, self.v_head
        return self.bridge, self.shared, self.head

    def _shared(self, x: Tensor, modality: str, trace=None, capture=False) -> Tensor:
        bridge, blocks, _ = self._top(modality)
        x = bridge(x)
        for blk in blocks:
            x = blk(x, capture=capture)
            if trace is not None:
                trace.append(x)
        return x

    def forward_modality(self, x: Tensor, modality: str) -> Tensor:
        return self._top(modality)[2](self._shared(self._stem(x, modality), modality))

    # --- Strategy interface ---------------------------------------------------------------------
    def training_step(self, batch: Batch, step: int) -> dict[str, Tensor]:
        if batch.audio is None and batch.video is None:
            raise ValueError("a training batch needs at least one modality")
        if batch.video is None:
            use_audio = True
        elif batch.audio is None:
            use_audio = False
        else:  # one modality per batch; drawn from torch's RNG so the seed fixes it
            use_audio = bool(torch.rand(()) < self.cfg.lambda_mt)
        logits = self.forward_modality(batch.audio if use_audio else batch.video, "a" if use_audio else "v")
        return {"loss": self.loss_fn(logits, batch.targets), "audio_batch": torch.tensor(float(use_audio))}

    def predict(self, audio: Tensor | None, video: Tensor | None) -> Tensor:
        logits = []
        if audio is not None:
            logits.append(self.forward_modality(audio, "a"))
        if video is not None:
            logits.append(self.forward_modality(video, "v"))
        if not logits:
            raise ValueError("predict needs at least one modality")
        return torch.stack(logits).mean(0)

    def embed(self, audio: Tensor | None, video: Tensor | None) -> dict[str, Tensor]:
        """Layer 0 is the projected input; then every specific and shared block, in order."""
        if (audio is None) == (video is None):
            raise ValueError("embed takes exactly one modality")
        x, m = (audio, "a") if audio is not None else (video, "v")
        trace: list[Tensor] = []
        self._shared(self._stem(x, m, trace=trace), m, trace=trace)
        return {f"layer{i}": t for i, t in enumerate(trace)}

    def attention_maps(self, audio: Tensor | None, video: Tensor | None) -> dict[str, Tensor]:
        if (audio is None) == (video is None):
            raise ValueError("attention_maps takes exactly one modality")
        x, m = (audio, "a") if audio is not None else (video, "v")
        self._shared(self._stem(x, m, capture=True), m, capture=True)
        stem = self.a_stem if m == "a" else self.v_stem
        blocks = list(stem.blocks) + list(self._top(m)[1])
        return {f"layer{i + 1}": blk.last_attn for i, blk in enumerate(blocks)}


class UAVM(UAVMFamily):
    name: ClassVar[str] = "uavm"
    variant: ClassVar[str] = "unified"
    capabilities: ClassVar[Capabilities] = Capabilities(embeddings=True, attention=True, cross_modal=True)


class Independent(UAVMFamily):
    """Modal-independent baseline (reference ``SeperateTrans``): the same layers, none shared.

    Each modality has ``n_specific`` layers, then its own copy of the ``n_shared`` stack and its own
    head, so parameters double against ``uavm`` and nothing is shared.
    """

    name: ClassVar[str] = "independent"
    variant: ClassVar[str] = "independent"
    capabilities: ClassVar[Capabilities] = Capabilities(
        embeddings=True, attention=True, cross_modal=False,
        reasons={"cross_modal": "separate heads per modality: a head trained on one modality never sees the other"})


class CrossAttention(UAVMFamily):
    """Concatenated cross-modal attention: 2T tokens through the joint layers; needs both modalities."""

    name: ClassVar[str] = "cross_attention"
    variant: ClassVar[str] = "cross_attention"
    capabilities: ClassVar[Capabilities] = Capabilities(
        audio_only=False, video_only=False, embeddings=False, attention=False, cross_modal=False,
        reasons={"audio_only": "joint attention over both modalities' tokens needs both inputs",
                 "video_only": "joint attention over both modalities' tokens needs both inputs",
                 "cross_modal": "it trains on both modalities jointly",
                 "embeddings": "its joint layers mix both modalities, so there are no per-modality layers to compare",
                 "attention": "its joint layers mix both modalities, so there are no per-modality layers to compare"})

    @classmethod
    def check_compatible(cls, cfg: UAVMConfig, features: FeatureSpec, task: TaskSpec) -> None:
        super().check_compatible(cfg, features, task)
        if cfg.n_shared < 1:
            raise UserError("cross_attention needs n_shared >= 1 joint layers")

    def joint(self, audio: Tensor, video: Tensor) -> Tensor:
        a = self._stem(audio, "a")
        v = self._stem(video, "v")
        return self.head(self._shared(torch.cat([a, v], dim=1), "av"))

    def training_step(self, batch: Batch, step: int) -> dict[str, Tensor]:
        if batch.audio is None or batch.video is None:
            raise ValueError("cross_attention trains on both modalities")
        return {"loss": self.loss_fn(self.joint(batch.audio, batch.video), batch.targets)}

    def predict(self, audio: Tensor | None, video: Tensor | None) -> Tensor:
        if audio is None or video is None:
            raise ValueError("cross_attention predicts only from both modalities")
        return self.joint(audio, video)
