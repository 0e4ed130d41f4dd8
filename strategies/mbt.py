"""``mbt``: attention bottlenecks (MBT, Nagrani et al. 2021) adapted to frozen per-step features.

This is an ADAPTATION. MBT itself trains end to end on raw spectrogram and RGB patches with
per-modality ViT-Base towers initialised from ImageNet-21k. Here the tokens are the cache's frozen
per-step features (T per modality), each mapped to ``embed_dim`` by a learned Linear (MBT's patch
embedding) plus a learned per-modality positional embedding; everything else follows the public
Scenic implementation (projects/mbt):

* **input normalisation** (``input_norm=true``): MBT's patch embedding reads normalised pixels and
  normalised log-mel spectrograms; the frozen features here arrive L2-normalised per step (norm 1
  spread over hundreds of dimensions, with a large offset shared by every clip), so each modality's
  features go through a LayerNorm (eps 1e-6, as UAVM's stacks start) before the patch embedding.
  Without it the towers do not learn on synth (issue 17: 10.8% after 20 constant-lr epochs; 49.8%
  after 4 with it). ``input_norm=false`` is the unnormalised path;

* separate (unshared) pre-LN Transformer blocks per modality; layers before ``fusion_layer`` run on
  each modality's own tokens;
* from ``fusion_layer`` on, each modality's block sees ``[own tokens ; bottleneck tokens]`` and the
  bottleneck outputs are averaged across modalities after every layer (``num_bottlenecks`` = 4
  learned tokens, normal(0.02) init, no positional embedding);
* a final LayerNorm per modality, the ``gap`` classifier (mean over the modality's tokens, the
  bottlenecks excluded), one zero-initialised linear head shared by the modalities, and the
  modalities' logits averaged.

Defaults are MBT's ViT-Base (width 768, 12 layers, fusion from layer 8, 12 heads of width 64, qkv
with bias); ``num_heads`` unset means ``embed_dim // 64`` so narrower CPU widths stay valid.
Audio-only and video-only evaluation run MBT's own code path for a single modality: that stream
alone, its bottleneck tokens updated by that modality only, its logits from the shared head.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from avbench.api import Batch, Capabilities, FeatureSpec, Strategy, TaskSpec
from avbench.config import in_range  # value ranges, checked by every --set
from avbench.errors import UserError
from avbench.nn import Block, init_weights

MODALITIES = ("audio", "video")


@dataclass
class MBTConfig:
    embed_dim: int = in_range(768, "[1, inf)")  # ViT-Base width
    depth: int = in_range(12, "[1, inf)")
    fusion_layer: int = in_range(8, "[0, inf)")  # first layer (0-based) with bottleneck exchange; depth = no fusion
    num_bottlenecks: int = in_range(4, "[1, inf)")
    num_heads: int | None = None  # None: embed_dim // 64 (ViT-Base's head width)
    mlp_ratio: float = in_range(4.0, "(0, inf)")
    qkv_bias: bool = True  # Scenic/flax attention uses biases
    # LayerNorm(eps 1e-6) on each modality's frozen features before the patch embedding (see docstring)
    input_norm: bool = True


def resolve_heads(cfg: MBTConfig) -> int:
    return cfg.num_heads if cfg.num_heads is not None else max(1, cfg.embed_dim // 64)


class MBT(Strategy):
    """Multimodal bottleneck Transformer on frozen features (an adaptation; see module docstring)."""

    name = "mbt"
    Config = MBTConfig
    capabilities = Capabilities(
        audio_only=True, video_only=True, fusion=True, cross_modal=False, embeddings=False,
        attention=False,
        reasons={
            "cross_modal": "each modality has its own tower: a model trained on one modality leaves the "
                           "other tower untrained",
            "embeddings": "per-layer representations are not exposed: after the fusion layer each tower "
                          "mixes in the shared bottleneck tokens",
            "attention": "attention maps are not exposed by this adaptation",
        },
    )

    def __init__(self, cfg: MBTConfig, features: FeatureSpec, task: TaskSpec):
        super().__init__(cfg, features, task)
        self.check_compatible(cfg, features, task)
        d, t = cfg.embed_dim, features.num_steps
        heads = resolve_heads(cfg)
        dims = {"audio": features.audio_dim, "video": features.video_dim}
        self.input_norm = nn.ModuleDict({m: nn.LayerNorm(dims[m], eps=1e-6) if cfg.input_norm else nn.Identity()
                                         for m in MODALITIES})
        self.patch_embed = nn.ModuleDict({m: nn.Linear(dims[m], d) for m in MODALITIES})
        self.pos = nn.ParameterDict({m: nn.Parameter(torch.zeros(1, t, d)) for m in MODALITIES})
        self.blocks = nn.ModuleDict({
            m: nn.ModuleList(Block(d, heads, cfg.mlp_ratio, qkv_bias=cfg.qkv_bias) for _ in range(cfg.depth))
            for m in MODALITIES})
        self.norm = nn.ModuleDict({m: nn.LayerNorm(d, eps=1e-6) for m in MODALITIES})
        self.bottleneck = nn.Parameter(torch.zeros(1, cfg.num_bottlenecks, d))
        self.head = nn.Linear(d, task.num_classes)
        self.apply(init_weights)
        for m in MODALITIES:
            nn.init.trunc_normal_(self.pos[m], std=0.02)
        nn.init.normal_(self.bottleneck, std=0.02)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    @classmethod
    def check_compatible(cls, cfg: MBTConfig, features: FeatureSpec, task: TaskSpec) -> None:
        heads = resolve_heads(cfg)
        if cfg.embed_dim < 1 or cfg.depth < 1:
            raise UserError(f"mbt: embed_dim and depth must be at least 1 (got {cfg.embed_dim}, {cfg.depth})")
        if cfg.embed_dim % heads:
            raise UserError(f"mbt: embed_dim {cfg.embed_dim} is not divisible by num_heads {heads}")
        if not 0 <= cfg.fusion_layer <= cfg.depth:
            raise UserError(f"mbt: fusion_layer must be in 0..depth ({cfg.depth}), got {cfg.fusion_layer}")
        if cfg.num_bottlenecks < 1:
            raise UserError(f"mbt: num_bottlenecks must be at least 1, got {cfg.num_bottlenecks}")

    def encode(self, audio: Tensor | None, video: Tensor | None) -> dict[str, Tensor]:
        """Final per-modality token sequences ``{modality: [B, T, D]}`` for the given modalities."""
        inputs = {m: x for m, x in zip(MODALITIES, (audio, video)) if x is not None}
        if not inputs:
            raise UserError("mbt: predict needs at least one modality")
        steps = self.pos["audio"].shape[1]
        x = {}
        for m, feat in inputs.items():
            if feat.shape[1] != steps:
                raise UserError(f"mbt: {m} has {feat.shape[1]} steps, the model was built for {steps}")
            feat = self.input_norm[m](feat.to(self.patch_embed[m].weight.dtype))
            x[m] = self.patch_embed[m](feat) + self.pos[m]
        b = next(iter(x.values())).shape[0]
        bott = self.bottleneck.expand(b, -1, -1)
        for i in range(self.cfg.depth):
            if i < self.cfg.fusion_layer:
                for m in x:
                    x[m] = self.blocks[m][i](x[m])
                continue
            updated = []
            for m in x:
                y = self.blocks[m][i](torch.cat([x[m], bott], dim=1))
                x[m], bm = y[:, :steps], y[:, steps:]
                updated.append(bm)
            bott = torch.stack(updated).mean(0)
        return {m: self.norm[m](v) for m, v in x.items()}

    def forward_logits(self, audio: Tensor | None, video: Tensor | None) -> Tensor:
        tokens = self.encode(audio, video)
        logits = [self.head(t.mean(1)) for t in tokens.values()]
        return torch.stack(logits).mean(0)

    def training_step(self, batch: Batch, step: int) -> dict[str, Tensor]:
        return {"loss": self.loss_fn(self.forward_logits(batch.audio, batch.video), batch.targets)}

    def predict(self, audio: Tensor | None, video: Tensor | None) -> Tensor:
        return self.forward_logits(audio, video)
