"""``mbt``: attention bottlenecks (MBT, Nagrani et al. 2021) adapted to frozen per-step features.

This is an ADAPTATION. MBT itself trains end to end on raw spectrogram and RGB patches with
per-modality ViT-Base towers initialised from ImageNet-21k. Here the tokens are the cache's frozen
per-step features (T per modality), each mapped to ``embed_dim`` by a learned Linear (MBT's patch
embedding: Scenic's Conv with a 1x1 patch over one step is exactly this Linear) plus a learned
per-modality positional embedding. The rest is the public Scenic implementation (projects/mbt at
4a38d47, ``model.py``), each place where a choice exists a switch; ``--preset scenic`` sets every
switch to Scenic's value and ``--recipe scenic`` is its optimizer and augmentation. With the switches
at Scenic's values and copied weights, Scenic's own ``MBT`` module gives the same logits
(``benchmarks/equivalence/mbt_scenic.py``; docs/equivalence.md, mbt).

* **input normalisation** (``input_norm=true``, not in Scenic): MBT's patch embedding reads normalised
  pixels and normalised log-mel spectrograms; the frozen features here arrive L2-normalised per step
  (norm 1 spread over hundreds of dimensions, with a large offset shared by every clip), so each
  modality's features go through a LayerNorm (eps 1e-6) before the patch embedding. Without it the
  towers do not learn on synth (issue 17: 10.8% after 20 constant-lr epochs; 49.8% after 4 with it).
* separate (unshared) pre-LN Transformer blocks per modality; layers before ``fusion_layer`` run on
  each modality's own tokens; from ``fusion_layer`` on, each modality's block sees ``[own tokens ;
  bottleneck tokens]`` and the bottleneck outputs are averaged across modalities after every layer
  (``num_bottlenecks`` learned tokens, normal(0.02), no positional embedding; one more with the token
  classifier, as Scenic adds it).
* **final norm** (``encoder_norm``): Scenic applies one ``encoder_norm`` LayerNorm to the
  concatenated tokens of both modalities (``shared``, model.py:378); ``per_modality`` (default, as
  earlier versions) gives each modality its own LayerNorm (its own scale and shift).
* **classifier**: ``gap`` (default; Scenic's config value): the mean over the modalities' tokens
  (bottlenecks excluded), one zero-initialised linear head; with equal token counts the mean over
  the concatenated tokens is the modalities' means averaged, so the logits are the per-modality
  logits averaged. ``token`` (the paper's Fig. 2; model.py:458-467, 498-504): a zero-initialised CLS
  token prepended to each modality (the positional embedding covers it), the CLS outputs through
  the shared zero-initialised head, logits averaged over modalities at evaluation; in training
  Scenic's loss is the mean of the per-modality losses, and so is this one's.
* **single-modality evaluation** (the audio-only / video-only columns): ``unimodal_bottlenecks=false``
  (default) is Scenic's single-modality path (model.py:339): that modality's tower alone, no
  bottleneck tokens at any layer, its logits from the shared head. ``true`` runs the tower with the
  bottleneck tokens from ``fusion_layer`` on, updated by that modality only (earlier versions).
  Either way those columns are the *joint* model evaluated on one modality; MBT's paper reports
  separately trained single-modality models.
* **stochastic depth** (``stochastic_depth``, Scenic's config 0.3; default 0): Scenic's per-example
  layer drop, rate rising linearly from 0 at the first layer to the value at the last, an independent
  draw for each of a block's two residual branches, and the kept branch *not* rescaled (Scenic's
  ``x * (1 - drop) + inputs``); training only.
* **numerics**: ``block_ln_eps`` (default 1e-5, PyTorch's; flax's LayerNorm 1e-6), ``gelu``
  (``exact`` default; ``tanh``, flax's ``nn.gelu``), ``init`` (``trunc_normal`` default, timm's ViT:
  trunc-normal(0.02) Linear weights; ``xavier``, Scenic's: xavier-uniform attention (q, k, v and
  output each a D x D kernel) and MLP kernels, MLP biases normal(1e-6), lecun-normal patch embedding,
  normal(0.02) positional embeddings). The final norm's eps is 1e-6 (flax's) in both settings.

Defaults equal to Scenic's: width 768, 12 layers, fusion from layer 8, 4 bottlenecks, 12 heads of
width 64 with qkv biases, MLP ratio 4, no dropout (Scenic's config 0), ``gap``, the zero-init head,
the single-modality path. Defaults that are not Scenic's (``--preset scenic`` sets them):
``encoder_norm``, ``stochastic_depth``, ``block_ln_eps``, ``gelu``, ``init``. ``num_heads`` unset
means ``embed_dim // 64`` so narrower CPU widths stay valid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal, Mapping

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
    num_bottlenecks: int = in_range(4, "[1, inf)")  # Scenic: 4 (+1 with classifier=token)
    num_heads: int | None = None  # None: embed_dim // 64 (ViT-Base's head width)
    mlp_ratio: float = in_range(4.0, "(0, inf)")
    qkv_bias: bool = True  # Scenic/flax attention uses biases
    input_norm: bool = True  # LayerNorm(eps 1e-6) on each modality's features before the patch embedding; not in Scenic
    encoder_norm: Literal["per_modality", "shared"] = "per_modality"  # final norm; Scenic: shared (one over all tokens)
    classifier: Literal["gap", "token"] = "gap"  # Scenic's config: gap; token = CLS per modality (paper Fig. 2)
    unimodal_bottlenecks: bool = False  # A/V-only columns with bottlenecks; Scenic (false): none, model.py:339
    stochastic_depth: float = in_range(0.0, "[0, 1)")  # layer drop at the last layer, linear from 0; Scenic 0.3
    block_ln_eps: float = in_range(1e-5, "(0, 1)")  # the blocks' LayerNorm eps: PyTorch 1e-5, flax (Scenic) 1e-6
    gelu: Literal["exact", "tanh"] = "exact"  # "tanh": flax's nn.gelu (approximate), Scenic's
    init: Literal["trunc_normal", "xavier"] = "trunc_normal"  # "xavier": Scenic's kernel init (docstring)


def resolve_heads(cfg: MBTConfig) -> int:
    return cfg.num_heads if cfg.num_heads is not None else max(1, cfg.embed_dim // 64)


def drop_rates(depth: int, rate: float) -> list[float]:
    """Scenic's per-layer drop probability: ``layer / max(depth - 1, 1) * rate``."""
    return [i / max(depth - 1, 1) * rate for i in range(depth)]


def _keep(x: Tensor, p: float, training: bool) -> Tensor | float:
    """Scenic's per-example drop pattern turned into a keep mask ``[B, 1, 1]`` (1.0 when not dropping)."""
    if not training or p <= 0.0:
        return 1.0
    return (torch.rand(x.shape[0], 1, 1, device=x.device) >= p).to(x.dtype)


def run_block(block: Block, x: Tensor, p: float, training: bool) -> Tensor:
    """``block``'s pre-LN residual step with Scenic's stochastic depth (``p`` = drop probability):
    each branch dropped per example by its own draw, the kept branch not rescaled."""
    if not training or p <= 0.0:
        return block(x)
    x = x + block.attn(block.norm1(x)) * _keep(x, p, training)
    return x + block.mlp(block.norm2(x)) * _keep(x, p, training)


def _xavier_(w: Tensor, fan_in: int, fan_out: int) -> None:
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    nn.init.uniform_(w, -bound, bound)


def _lecun_normal_(w: Tensor, fan_in: int) -> None:
    """flax's default kernel init: truncated normal (+-2 std) with variance 1 / fan_in."""
    std = math.sqrt(1.0 / fan_in) / 0.87962566103423978  # flax's correction for the truncation
    nn.init.trunc_normal_(w, std=std, a=-2 * std, b=2 * std)


class MBT(Strategy):
    """Multimodal bottleneck Transformer on frozen features (an adaptation; see module docstring)."""

    name = "mbt"
    Config = MBTConfig
    # ``--preset scenic``: every model switch at the value Scenic's code and MBT-base config use.
    presets: ClassVar[Mapping[str, Mapping[str, object]]] = {
        "scenic": {"encoder_norm": "shared", "classifier": "gap", "unimodal_bottlenecks": False,
                   "stochastic_depth": 0.3, "block_ln_eps": 1e-6, "gelu": "tanh", "init": "xavier"},
    }
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
        token = cfg.classifier == "token"
        self.input_norm = nn.ModuleDict({m: nn.LayerNorm(dims[m], eps=1e-6) if cfg.input_norm else nn.Identity()
                                         for m in MODALITIES})
        self.patch_embed = nn.ModuleDict({m: nn.Linear(dims[m], d) for m in MODALITIES})
        # With the token classifier the positional embedding covers the CLS token too (Scenic adds it after).
        self.pos = nn.ParameterDict({m: nn.Parameter(torch.zeros(1, t + int(token), d)) for m in MODALITIES})
        self.cls = (nn.ParameterDict({m: nn.Parameter(torch.zeros(1, 1, d)) for m in MODALITIES})
                    if token else None)
        self.blocks = nn.ModuleDict({
            m: nn.ModuleList(Block(d, heads, cfg.mlp_ratio, qkv_bias=cfg.qkv_bias) for _ in range(cfg.depth))
            for m in MODALITIES})
        if cfg.encoder_norm == "shared":
            self.norm: nn.Module = nn.LayerNorm(d, eps=1e-6)
        else:
            self.norm = nn.ModuleDict({m: nn.LayerNorm(d, eps=1e-6) for m in MODALITIES})
        self.bottleneck = nn.Parameter(torch.zeros(1, cfg.num_bottlenecks + int(token), d))
        self.head = nn.Linear(d, task.num_classes)
        self.drop_rates = drop_rates(cfg.depth, cfg.stochastic_depth)
        for m in MODALITIES:
            for blk in self.blocks[m]:
                blk.norm1.eps = blk.norm2.eps = cfg.block_ln_eps
                if cfg.gelu == "tanh":
                    blk.mlp.act = nn.GELU(approximate="tanh")
        self.apply(init_weights)
        if cfg.init == "xavier":
            self._init_scenic()
        else:
            for m in MODALITIES:
                nn.init.trunc_normal_(self.pos[m], std=0.02)
        nn.init.normal_(self.bottleneck, std=0.02)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def _init_scenic(self) -> None:
        """Scenic's initialisers (module docstring, ``init=xavier``); CLS tokens stay zero."""
        d = self.cfg.embed_dim
        for m in MODALITIES:
            _lecun_normal_(self.patch_embed[m].weight, self.patch_embed[m].in_features)
            nn.init.zeros_(self.patch_embed[m].bias)
            nn.init.normal_(self.pos[m], std=0.02)
            for blk in self.blocks[m]:
                for i in range(3):  # flax initialises q, k and v as three D x D kernels
                    _xavier_(blk.attn.qkv.weight.data[i * d:(i + 1) * d], d, d)
                _xavier_(blk.attn.proj.weight, d, d)
                for fc in (blk.mlp.fc1, blk.mlp.fc2):
                    _xavier_(fc.weight, fc.in_features, fc.out_features)
                    nn.init.normal_(fc.bias, std=1e-6)

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
        if not 0.0 <= cfg.stochastic_depth < 1.0:
            raise UserError(f"mbt: stochastic_depth must be in [0, 1), got {cfg.stochastic_depth}")

    def encode(self, audio: Tensor | None, video: Tensor | None) -> dict[str, Tensor]:
        """Final per-modality token sequences ``{modality: [B, T (+1 CLS first), D]}`` after the final norm."""
        inputs = {m: x for m, x in zip(MODALITIES, (audio, video)) if x is not None}
        if not inputs:
            raise UserError("mbt: predict needs at least one modality")
        steps = self.pos["audio"].shape[1] - (self.cls is not None)
        x = {}
        for m, feat in inputs.items():
            if feat.shape[1] != steps:
                raise UserError(f"mbt: {m} has {feat.shape[1]} steps, the model was built for {steps}")
            feat = self.input_norm[m](feat.to(self.patch_embed[m].weight.dtype))
            tok = self.patch_embed[m](feat)
            if self.cls is not None:
                tok = torch.cat([self.cls[m].expand(tok.shape[0], -1, -1), tok], dim=1)
            x[m] = tok + self.pos[m]
        n_tok = steps + (self.cls is not None)
        b = next(iter(x.values())).shape[0]
        bott = self.bottleneck.expand(b, -1, -1)
        # Scenic's single-modality path has no bottlenecks (model.py:339).
        fuse = len(x) > 1 or self.cfg.unimodal_bottlenecks
        for i in range(self.cfg.depth):
            p = self.drop_rates[i]
            if i < self.cfg.fusion_layer or not fuse:
                for m in x:
                    x[m] = run_block(self.blocks[m][i], x[m], p, self.training)
                continue
            updated = []
            for m in x:
                y = run_block(self.blocks[m][i], torch.cat([x[m], bott], dim=1), p, self.training)
                x[m], bm = y[:, :n_tok], y[:, n_tok:]
                updated.append(bm)
            bott = torch.stack(updated).mean(0)
        if isinstance(self.norm, nn.ModuleDict):
            return {m: self.norm[m](v) for m, v in x.items()}
        return {m: self.norm(v) for m, v in x.items()}  # one LayerNorm over every token: Scenic's encoder_norm

    def modality_logits(self, audio: Tensor | None, video: Tensor | None) -> dict[str, Tensor]:
        """Per-modality logits ``{modality: [B, C]}``: the head on the CLS output (token) or the mean token (gap)."""
        tokens = self.encode(audio, video)
        if self.cls is not None:
            return {m: self.head(t[:, 0]) for m, t in tokens.items()}
        return {m: self.head(t.mean(1)) for m, t in tokens.items()}

    def forward_logits(self, audio: Tensor | None, video: Tensor | None) -> Tensor:
        # gap with equal token counts: head(mean over the concatenated tokens) = mean of the modalities' logits.
        return torch.stack(list(self.modality_logits(audio, video).values())).mean(0)

    def training_step(self, batch: Batch, step: int) -> dict[str, Tensor]:
        if self.cls is not None:  # Scenic's token classifier: the mean of the per-modality losses
            per = self.modality_logits(batch.audio, batch.video)
            return {"loss": torch.stack([self.loss_fn(v, batch.targets) for v in per.values()]).mean()}
        return {"loss": self.loss_fn(self.forward_logits(batch.audio, batch.video), batch.targets)}

    def predict(self, audio: Tensor | None, video: Tensor | None) -> Tensor:
        return self.forward_logits(audio, video)
