"""UAVM and its two baselines, built as the authors built them (Gong et al., "UAVM").

One file for the model family, as timm keeps one file per family (over 400 lines on purpose: the three
models share their blocks, their initialisation and their key map to the authors' checkpoints).

The three models follow the authors' ``src/models/mm_trans.py`` (YuanGongND/uavm) layer for layer,
so their released ``.pth`` files load (``avbench eval --checkpoint``, ``run --init-from``) and give
their logits:

* ``uavm`` (their ``UnifiedTrans``): per modality ``n_specific`` (N) layers, then one shared stack of
  ``n_shared`` (N_s) layers of width ``s_dim`` and one shared head. Each training batch is one
  modality: audio with probability ``lambda_mt``, else video. Fused inference is the mean of the
  two passes' logits.
* ``independent`` (their ``SeperateTrans``, used by ``run_ind_trans.sh``): the same, with the second
  stack and its head duplicated per modality, so nothing is shared.
* ``cross_attention`` (their ``FullAttTrans``): modality layers, then both token sequences
  concatenated in time (2T tokens) through one joint stack with 2T learned positions (which is how
  it tells the modalities apart) and one head; it sees both modalities in every step.

A *stack* (their ``SingleTrans``) is: LayerNorm(eps 1e-6) over its input; a Linear projection only
when its input width differs from its own width; a learned position embedding (trunc-normal 0.02);
pre-LN blocks (4 heads, MLP ratio 4, qkv without bias, no dropout; ``avbench.nn.Block``). The shared
(or joint, or per-modality top) stack has all three of its own, on top of the modality layers. A
head is mean pooling over time, LayerNorm(eps 1e-6) and a Linear.

Edge cases, as the authors wrote them: with N = 0 each modality gets LayerNorm + Linear to
``embed_dim`` (always, even when the widths match), and the shared stack then projects to ``s_dim``
if that differs. With N_s = 0 there is no second stack: each modality has its own head on its
``embed_dim`` output (fully modal-independent; ``uavm`` and ``independent`` are then the same model).
``cross_attention`` needs N_s >= 1 (the authors' forward returns no logits without joint layers).

Initialisation (``init``): ``authors`` (default) is what their code does: PyTorch's default Linear
and LayerNorm initialisation, trunc-normal(0.02) position embeddings. ``timm`` is the ViT recipe
(trunc-normal(0.02) Linear weights, zero biases) that avbench used before; it is kept as a switch.
The authors' parameters that their forward never uses (a modality stack's head, a projection between
equal widths) are not built here; the checkpoint loader checks their shapes and sets them aside.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn

from avbench.api import Batch, Capabilities, FeatureSpec, Strategy, TaskSpec
from avbench.config import in_range  # value ranges, checked by every --set
from avbench.errors import UserError
from avbench.nn import Block, init_weights


@dataclass
class UAVMConfig:
    embed_dim: int = in_range(1024, "[1, inf)")  # width of the modality-specific layers
    num_heads: int = 4
    n_specific: int = in_range(3, "[0, inf)")  # N: modality-specific layers per modality
    n_shared: int = in_range(3, "[0, inf)")  # N_s: shared (uavm), per-modality top (independent) or joint (cross_attention) layers
    s_dim: int = in_range(0, "[0, inf)")  # S_dim: width of the second stack; 0 means embed_dim
    lambda_mt: float = in_range(0.5, "[0, 1]")  # probability that a training batch is audio
    mlp_ratio: float = in_range(4.0, "(0, inf)")
    fused_attention: bool = True  # fused/batched kernels; False = the authors' explicit softmax path
    init: Literal["authors", "timm"] = "authors"  # see module docstring
    # Expected input widths; 0 takes the cache's. Pin them (e.g. 1024 for the released VGGSound
    # features) to refuse a cache from another extractor instead of silently projecting it.
    audio_dim: int = in_range(0, "[0, inf)")
    video_dim: int = in_range(0, "[0, inf)")


class Stack(nn.Module):
    """The authors' ``SingleTrans`` body: input LayerNorm, projection when widths differ, positions, blocks."""

    def __init__(self, in_dim: int, dim: int, steps: int, depth: int, cfg: UAVMConfig):
        super().__init__()
        self.norm = nn.LayerNorm(in_dim, eps=1e-6)
        self.proj = nn.Linear(in_dim, dim) if in_dim != dim else None
        self.pos = nn.Parameter(torch.zeros(1, steps, dim))
        self.blocks = nn.ModuleList(Block(dim, cfg.num_heads, cfg.mlp_ratio, fused=cfg.fused_attention)
                                    for _ in range(depth))

    def stem(self, x: Tensor) -> Tensor:
        x = self.norm(x)
        if self.proj is not None:
            x = self.proj(x)
        return x + self.pos

    def forward(self, x: Tensor, trace: list[Tensor] | None = None, capture: bool = False,
                trace_stem: bool = False) -> Tensor:
        x = self.stem(x)
        if trace is not None and trace_stem:
            trace.append(x)
        for blk in self.blocks:
            x = blk(x, capture=capture)
            if trace is not None:
                trace.append(x)
        return x


class InProj(nn.Module):
    """N = 0: the authors' per-modality LayerNorm(eps 1e-6) + Linear into ``embed_dim``."""

    def __init__(self, in_dim: int, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(in_dim, eps=1e-6)
        self.proj = nn.Linear(in_dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(self.norm(x))


class Head(nn.Module):
    """Mean over time, LayerNorm(eps 1e-6), Linear (their ``mlp_head`` / ``a_mlp`` / ``v_mlp``)."""

    def __init__(self, dim: int, num_classes: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.norm(x.mean(dim=1)))


class UAVMFamily(Strategy):
    """The shared machinery; subclasses pick the variant (see module docstring).

    Module names: ``a_stem``/``v_stem`` (N > 0) or ``a_in``/``v_in`` (N = 0); then ``shared`` + ``head``
    (uavm, cross_attention), ``a_top``/``v_top`` + ``a_head``/``v_head`` (independent), or only
    ``a_head``/``v_head`` (N_s = 0).
    """

    Config: ClassVar[type] = UAVMConfig
    variant: ClassVar[str] = "unified"
    # Named configurations for ``--preset`` (``Strategy.presets``): the paper's size, and the width
    # the synth card recommends on CPU.
    presets: ClassVar[Mapping[str, Mapping[str, object]]] = {
        "paper": {"embed_dim": 1024, "num_heads": 4, "n_specific": 3, "n_shared": 3, "s_dim": 0},
        "cpu": {"embed_dim": 128, "num_heads": 4, "n_specific": 3, "n_shared": 3, "s_dim": 0},
    }

    @classmethod
    def canonical_config(cls, cfg: UAVMConfig) -> UAVMConfig:
        """``s_dim=0`` means "the model width": it builds the same model as ``s_dim=embed_dim``."""
        return dataclasses.replace(cfg, s_dim=cfg.s_dim or cfg.embed_dim)

    def __init__(self, cfg: UAVMConfig, features: FeatureSpec, task: TaskSpec):
        super().__init__(cfg, features, task)
        self.check_compatible(cfg, features, task)
        d, s, t, c = cfg.embed_dim, cfg.s_dim or cfg.embed_dim, features.num_steps, task.num_classes
        if cfg.n_specific > 0:
            self.a_stem = Stack(features.audio_dim, d, t, cfg.n_specific, cfg)
            self.v_stem = Stack(features.video_dim, d, t, cfg.n_specific, cfg)
        else:
            self.a_in = InProj(features.audio_dim, d)
            self.v_in = InProj(features.video_dim, d)
        if cfg.n_shared == 0:
            self.a_head, self.v_head = Head(d, c), Head(d, c)
        elif self.variant == "independent":
            self.a_top = Stack(d, s, t, cfg.n_shared, cfg)
            self.v_top = Stack(d, s, t, cfg.n_shared, cfg)
            self.a_head, self.v_head = Head(s, c), Head(s, c)
        else:
            steps = 2 * t if self.variant == "cross_attention" else t
            self.shared = Stack(d, s, steps, cfg.n_shared, cfg)
            self.head = Head(s, c)
        self._init(cfg.init)

    def _init(self, how: str) -> None:
        if how == "timm":
            for m in self.modules():
                if isinstance(m, (nn.Linear, nn.LayerNorm)):
                    init_weights(m)
        # "authors": nn.Linear / nn.LayerNorm are already PyTorch's defaults.
        for m in self.modules():
            if isinstance(m, Stack):
                nn.init.trunc_normal_(m.pos, std=0.02)

    @classmethod
    def check_compatible(cls, cfg: UAVMConfig, features: FeatureSpec, task: TaskSpec) -> None:
        for name in ("embed_dim", "num_heads"):
            if getattr(cfg, name) < 1:
                raise UserError(f"--set {name} must be at least 1")
        if cfg.n_specific < 0 or cfg.n_shared < 0 or cfg.s_dim < 0:
            raise UserError("--set n_specific, n_shared and s_dim must be non-negative")
        s = cfg.s_dim or cfg.embed_dim
        for width, name in ((cfg.embed_dim, "embed_dim"), (s, "s_dim")):
            if width % cfg.num_heads:
                raise UserError(f"--set {name}={width} is not divisible by num_heads={cfg.num_heads}")
        if not 0.0 <= cfg.lambda_mt <= 1.0:
            raise UserError(f"--set lambda_mt={cfg.lambda_mt} must be in [0, 1]")
        if cfg.init not in ("authors", "timm"):
            raise UserError(f"--set init={cfg.init}: authors or timm")
        if features.num_steps < 1:
            raise UserError("the cache has no time steps")
        for side, want, got in (("audio", cfg.audio_dim, features.audio_dim), ("video", cfg.video_dim, features.video_dim)):
            if want and want != got:
                raise UserError(f"the cache's {side} features are {got}-d but {side}_dim={want} is set; "
                                f"use a cache from the matching extractor or --set {side}_dim=0")

    # --- forward pieces -------------------------------------------------------------------------
    def _specific(self, x: Tensor, m: str, trace=None, capture=False) -> Tensor:
        """Modality layers (their ``a_trans``/``v_trans``, or ``a_in_proj`` when N = 0)."""
        if self.cfg.n_specific > 0:
            stem = self.a_stem if m == "a" else self.v_stem
            return stem(x, trace=trace, capture=capture, trace_stem=True)
        x = (self.a_in if m == "a" else self.v_in)(x)
        if trace is not None and self.cfg.n_shared == 0:
            trace.append(x)
        return x

    def _top(self, m: str) -> tuple[Stack | None, Head]:
        if self.cfg.n_shared == 0:
            return None, (self.a_head if m == "a" else self.v_head)
        if self.variant == "independent":
            return (self.a_top, self.a_head) if m == "a" else (self.v_top, self.v_head)
        return self.shared, self.head

    def _upper(self, x: Tensor, m: str, trace=None, capture=False) -> Tensor:
        """The second stack; its stem output is a layer of its own only when N = 0 (their extract_feat)."""
        stack, _ = self._top(m)
        if stack is None:
            return x
        return stack(x, trace=trace, capture=capture, trace_stem=self.cfg.n_specific == 0)

    def forward_modality(self, x: Tensor, m: str) -> Tensor:
        return self._top(m)[1](self._upper(self._specific(x, m), m))

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
        """The authors' ``extract_feat`` layers: layer 0 is the first stack's stem output (LayerNorm,
        projection, positions), then every block in order."""
        if (audio is None) == (video is None):
            raise ValueError("embed takes exactly one modality")
        x, m = (audio, "a") if audio is not None else (video, "v")
        trace: list[Tensor] = []
        self._upper(self._specific(x, m, trace=trace), m, trace=trace)
        return {f"layer{i}": t for i, t in enumerate(trace)}

    def attention_maps(self, audio: Tensor | None, video: Tensor | None) -> dict[str, Tensor]:
        if (audio is None) == (video is None):
            raise ValueError("attention_maps takes exactly one modality")
        x, m = (audio, "a") if audio is not None else (video, "v")
        self._upper(self._specific(x, m, capture=True), m, capture=True)
        blocks = list(self.a_stem.blocks if m == "a" else self.v_stem.blocks) if self.cfg.n_specific else []
        stack = self._top(m)[0]
        blocks += list(stack.blocks) if stack is not None else []
        return {f"layer{i + 1}": blk.last_attn for i, blk in enumerate(blocks)}

    # --- the authors' checkpoints (avbench.authors_checkpoint) ------------------------------------
    def reference_key_map(self) -> tuple[dict[str, str], dict[str, tuple[int, ...]]]:
        """(this model's key -> the authors' key, for every key) and (authors' key -> shape) for the
        parameters their code creates but never uses."""
        return reference_keys(self)

    @staticmethod
    def reference_hint(state: Mapping[str, Tensor]) -> str:
        """What an authors' state dict is, in ``--set`` terms (for error messages)."""
        return describe_reference(state)


class UAVM(UAVMFamily):
    name: ClassVar[str] = "uavm"
    variant: ClassVar[str] = "unified"
    capabilities: ClassVar[Capabilities] = Capabilities(embeddings=True, attention=True, cross_modal=True,
                                                        fusion_is_mean=True)  # UAVMFamily.predict


class Independent(UAVMFamily):
    """Modal-independent baseline (the authors' ``SeperateTrans``): the same layers, none shared.

    Each modality has ``n_specific`` layers, then its own ``n_shared``-layer stack (with its own input
    LayerNorm, projection and positions) and its own head: parameters double against ``uavm``.
    """

    name: ClassVar[str] = "independent"
    variant: ClassVar[str] = "independent"
    capabilities: ClassVar[Capabilities] = Capabilities(
        embeddings=True, attention=True, cross_modal=False, fusion_is_mean=True,  # UAVMFamily.predict
        reasons={"cross_modal": "separate heads per modality: a head trained on one modality never sees the other"})


class CrossAttention(UAVMFamily):
    """Concatenated cross-modal attention (the authors' ``FullAttTrans``): 2T tokens through the joint
    stack; needs both modalities."""

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
        a = self._specific(audio, "a")
        v = self._specific(video, "v")
        return self.head(self.shared(torch.cat([a, v], dim=1)))

    def training_step(self, batch: Batch, step: int) -> dict[str, Tensor]:
        if batch.audio is None or batch.video is None:
            raise ValueError("cross_attention trains on both modalities")
        return {"loss": self.loss_fn(self.joint(batch.audio, batch.video), batch.targets)}

    def predict(self, audio: Tensor | None, video: Tensor | None) -> Tensor:
        if audio is None or video is None:
            raise ValueError("cross_attention predicts only from both modalities")
        return self.joint(audio, video)


# --- the authors' state-dict layout ---------------------------------------------------------------
# Facts about YuanGongND/uavm ``mm_trans.py`` state dicts: a ``SingleTrans`` stack ``P`` holds
# ``P.pos_embed``, ``P.in_layernorm.*``, ``P.in_proj.*`` (created even when unused), ``P.blocks.<i>.*``
# (same names as avbench.nn.Block) and ``P.mlp_head.0.*`` (LayerNorm) / ``P.mlp_head.1.*`` (Linear).
# Modality stacks are ``a_trans``/``v_trans`` (their heads unused), N = 0 uses ``a_in_proj.0/1``,
# the second stack is ``s_trans`` (UnifiedTrans, FullAttTrans) or ``a_s_trans``/``v_s_trans``
# (SeperateTrans), and N_s = 0 uses heads ``a_mlp.0/1``/``v_mlp.0/1``.
_STACK = {"norm": "in_layernorm", "proj": "in_proj", "pos": "pos_embed"}
_HEAD = {"norm": "0", "fc": "1"}


def _stack_keys(ours: str, theirs: str, stack: Stack, out: dict[str, str], unused: dict[str, tuple[int, ...]]) -> None:
    for key in stack.state_dict():
        first, _, rest = key.partition(".")
        out[f"{ours}.{key}"] = f"{theirs}.{_STACK.get(first, first)}" + (f".{rest}" if rest else "")
    if stack.proj is None:  # created by their code, skipped in its forward when widths are equal
        dim, in_dim = stack.pos.shape[-1], stack.norm.weight.shape[0]
        unused[f"{theirs}.in_proj.weight"] = (dim, in_dim)
        unused[f"{theirs}.in_proj.bias"] = (dim,)


def _head_keys(ours: str, theirs: str, out: dict[str, str], head: Head) -> None:
    for key in head.state_dict():
        first, _, rest = key.partition(".")
        out[f"{ours}.{key}"] = f"{theirs}.{_HEAD[first]}.{rest}"


def reference_keys(model: UAVMFamily) -> tuple[dict[str, str], dict[str, tuple[int, ...]]]:
    out: dict[str, str] = {}
    unused: dict[str, tuple[int, ...]] = {}
    c = model.task.num_classes
    if model.cfg.n_specific > 0:
        for m in ("a", "v"):
            stack = getattr(model, f"{m}_stem")
            _stack_keys(f"{m}_stem", f"{m}_trans", stack, out, unused)
            d = stack.pos.shape[-1]  # their modality stacks carry a head their forward never calls
            unused.update({f"{m}_trans.mlp_head.0.weight": (d,), f"{m}_trans.mlp_head.0.bias": (d,),
                           f"{m}_trans.mlp_head.1.weight": (c, d), f"{m}_trans.mlp_head.1.bias": (c,)})
    else:
        for m in ("a", "v"):
            for key in getattr(model, f"{m}_in").state_dict():
                first, _, rest = key.partition(".")
                out[f"{m}_in.{key}"] = f"{m}_in_proj.{'0' if first == 'norm' else '1'}.{rest}"
    if model.cfg.n_shared == 0:
        for m in ("a", "v"):
            _head_keys(f"{m}_head", f"{m}_mlp", out, getattr(model, f"{m}_head"))
    elif model.variant == "independent":
        for m in ("a", "v"):
            _stack_keys(f"{m}_top", f"{m}_s_trans", getattr(model, f"{m}_top"), out, unused)
            _head_keys(f"{m}_head", f"{m}_s_trans.mlp_head", out, getattr(model, f"{m}_head"))
    else:
        _stack_keys("shared", "s_trans", model.shared, out, unused)
        _head_keys("head", "s_trans.mlp_head", out, model.head)
    return out, unused


def _depth(state: Mapping[str, Tensor], prefix: str) -> int:
    idx = {int(k[len(prefix):].split(".")[0]) for k in state if k.startswith(prefix)}
    return max(idx) + 1 if idx else 0


def describe_reference(state: Mapping[str, Tensor]) -> str:
    """The configuration an authors' state dict was built with, as avbench names it."""
    def shape(key: str) -> tuple[int, ...] | None:
        return tuple(state[key].shape) if key in state else None

    if any(k.startswith("a_s_trans.") for k in state):
        kind, top = "SeperateTrans (--strategy independent)", "a_s_trans"
    elif any(k.startswith("s_trans.") for k in state):
        kind, top = "UnifiedTrans (uavm) or FullAttTrans (cross_attention)", "s_trans"
    elif "a_mlp.1.weight" in state:
        kind, top = "a model without shared layers (uavm or independent with n_shared=0)", None
    else:
        return "not a UAVM-family state dict (no a_s_trans, s_trans or a_mlp keys)"
    n_spec = _depth(state, "a_trans.blocks.")
    first = shape("a_trans.pos_embed")
    embed = first[-1] if first else (shape("a_in_proj.1.weight") or (0,))[0]
    audio_in = (shape("a_trans.in_layernorm.weight") or shape("a_in_proj.0.weight") or (0,))[0]
    video_in = (shape("v_trans.in_layernorm.weight") or shape("v_in_proj.0.weight") or (0,))[0]
    parts = [f"n_specific={n_spec}", f"embed_dim={embed}"]
    steps = first[1] if first else None
    if top is not None:
        pos = shape(f"{top}.pos_embed") or (0, 0, 0)
        parts += [f"n_shared={_depth(state, f'{top}.blocks.')}", f"s_dim={pos[-1]}"]
        classes = (shape(f"{top}.mlp_head.1.weight") or (0,))[0]
        if top == "s_trans" and steps:
            kind = "FullAttTrans (--strategy cross_attention)" if pos[1] == 2 * steps else "UnifiedTrans (--strategy uavm)"
        steps = steps or pos[1]
    else:
        parts.append("n_shared=0")
        classes = (shape("a_mlp.1.weight") or (0,))[0]
    return (f"the checkpoint is the authors' {kind} with {' '.join('--set ' + p for p in parts)}; "
            f"{classes} classes, audio {audio_in}-d, video {video_in}-d" + (f", T={steps}" if steps else ""))
