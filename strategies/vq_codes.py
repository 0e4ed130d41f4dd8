"""``vq_codes``: discrete unified codes for cross-modal generalisation (paper 002, Uni-Code / CMG).

One file for the whole model family, as timm keeps one file per family (over 400 lines on purpose):
a strategy author reads one method end to end here; its building blocks live in avbench/nn/ (vq, club, cpc).

Two stages. **Pretraining** (no labels) maps audio and video into one shared codebook so that steps
with the same meaning get the same code; **downstream** freezes all of it and trains a small decoder
on the codes of one modality, which can then be tested on the other (the cross-modal protocol).

Pretraining, per modality m in {audio, video} (inputs are the harness's per-step features):

* semantic encoder: Linear(D_m, W) then a 2-layer post-LN Transformer (4 heads, FFN 4W, ReLU,
  dropout 0.1, no positional encoding), W = 256;
* specific encoder: Linear(D_m, W) + ReLU;
* shared codebook, 400 x W, nearest code on the detached semantic feature, straight-through;
* MM-EMA codebook update (gamma 0.99, appendix eqs. 1-2) toward own and partner features;
* modified commitment loss: beta toward the own code, beta/2 toward the partner's code at the same
  step (beta = 0.25);
* DCID: CLUB between the quantised semantic feature (straight-through) and the specific feature; the
  estimator takes 5 Adam steps (lr 1e-3, its own optimizer, detached inputs) per training step, then
  its MI bound enters the loss with weight 1;
* Cross-CPC on the semantic features: LSTM context, 2 prediction steps, cross pairs weight 1,
  self pairs 0.1;
* reconstruction: Linear(W, W)(code) concatenated with the specific feature -> Linear(2W, D_m), MSE;
* L_cmcm (the code-matching InfoNCE of Liu et al. 2021, in the public code's total loss), weight 0.5;
* dead-code reset: a code no modality selected for N_re batches is moved onto a random active
  code plus uniform(+-1/1024) noise (N_re scaled to the run, below).

Downstream: Linear(W, W) -> max over T -> Linear(W, C) on the (frozen) codes, no activation between,
trained on ``train_modality`` (cross-modal protocol) or on both modalities' codes in every batch
(standard protocol: each modality's loss, averaged), so audio-only, video-only and fused (the mean of
the two logits) predictions all exist.

Appendix vs public code (haihuangcode/CMG) -- the appendix is the default, each difference a switch:

==========================  =====================================  ===================================
what                        appendix (default)                     public code (``--set``)
==========================  =====================================  ===================================
Cross-CPC prediction steps  2 for audio-visual                     ``cpc_steps=1``
dead-code reset             N_re = 200 batches (scaled: below)     ``reset_after=300``
MM-EMA partner              cross-attention r^b over the clip      ``ema_partner=aligned``
MM-EMA update               one joint update (eq. 2)               ``ema_sequential=true`` (per modality)
Cross-CPC LSTM layers       1 (main paper)                         ``cpc_layers=2``
commitment scale            beta own + beta/2 partner              ``commit_beta=0.5`` (2x both, same ratio)
==========================  =====================================  ===================================

Why the encoder collapsed, and what this harness does about it (each a switch; the public code's
behaviour in brackets). Measured on synth (960 training clips, batch 48, lr 1e-3): with the public
code's choices the semantic encoder's clip spread fell 3.4 -> 0.2 within 20 steps, one code stayed in
use and every column sat at chance. Ablations (each loss alone) showed that Cross-CPC, the
reconstruction and the commitment term *each* collapse it on their own; CLUB and L_cmcm do not:

* ``input_norm=standardize`` [``none``]: every synth step (like VGGish or VGG features) carries a
  large offset shared by all clips. Measured: standardising the inputs alone kept the clip spread
  (6.5 at step 1, 6.8 at step 80; without it 3.4 -> 0.14). The likely mechanism: a gradient with a
  nonzero mean over the batch (the reconstruction residual of an untrained decoder is mostly that
  offset) makes Adam write a rank-one update along the shared input direction, which after the
  post-LN Transformer is the same vector for every clip. Each modality's input is standardised per
  dimension with running statistics fitted during pretraining (cumulative, then frozen; applied
  identically in training and evaluation); the reconstruction target is the standardised input.
* ``cpc_pred_init=zero`` [``default``]: with random predictors the Cross-CPC scores start with a
  large random spread, so its loss starts *above* chance (8.9 vs 2.2 ln B) and its fastest descent
  is to make every target the same vector. Zero-initialised predictors start the InfoNCE exactly
  at chance with no gradient into the targets, so the only way down is to predict. Cross-CPC then
  leaves chance (accuracy 5-6% vs 2% on synth; at chance before).
* ``ema_features=eval`` [``train``]: the EMA and the dead-code bookkeeping read the semantic
  features of a second, dropout-free forward pass, i.e. what evaluation and the downstream stage
  quantise (issue 18 measured, with dropout 0.1, train-mode features 2.26 away from eval-mode
  ones against a content spread of 0.29: 384-394 codes used in train mode, 20-27 in eval mode).
* ``code_search=fp64`` [the code's float64]: the nearest-code search runs outside autocast in
  float64 (issue 18: under bf16 autocast it picked another code than fp32 on 50-99% of steps).
* N_re (``reset_after``, default None = scaled): ``reset_epoch_fraction`` (0.32, the appendix's
  200 batches of 64 on its 40K clips) of a pretraining epoch, between 2 and 200 batches; the epoch
  length is estimated from the first batch's row indices and counted after the first epoch
  (``diag/reset_after`` logs it). At a fixed 200 a run of 80 steps never resets.
* ``decoder_input=standardize`` [``raw``]: the downstream decoder standardises the frozen code
  vectors per dimension with running statistics of the codes it is trained on (issue 18: a probe
  on raw code vectors got 13% where standardised ones got 46%); under the cross-modal protocol
  they are the training modality's statistics.

With these defaults, on the synth default (2160 training clips, seed 0) Cross-CPC accuracy rose from
6.8% to 12.9% over the 6 pretraining epochs (chance 2.1%), L_cmcm fell from 3.85 to 3.46 (ln 48 =
3.87), 132-400 codes were in use per epoch (400 in the last two), and the decoder reached 33.4% fused (audio 30.3, video
28.8; chance 8.3).

Other choices, stated:

* Laplace smoothing of the EMA counts (``ema_epsilon=1e-5``) comes from the code; the appendix's
  ``e = o / N`` is silent on never-used codes. ``ema_epsilon=0`` turns it off (an unused code then
  keeps its vector).
* The code's reset writes only the code vector, which its next EMA step recomputes from the old
  statistics; here the EMA sum is rescaled with the code so the reset sticks (``reset_rescale_ema=false``:
  the code's). Its counters also start at -1 and reset above N_re (``reset_timing=cmg``). The noise is uniform
  in +-``reset_noise`` as in the NeurIPS code (``code/src``); the later copies of the repository
  (ACL25, ICCV25 folders) draw it with a ``uniform_(-a, -a)`` slip, a constant -1/1024.
* The appendix's cross-attention has no stated projections: ``r^b`` is parameter-free attention of a
  step over the partner clip's steps, on detached features.
* CLUB: the code's bound averages over T before dividing by exp(mean_T logvar) (``club_form=cmg``);
  by default it is the sampled CLUB per step (negatives: another clip at the same step), the form of
  Cheng et al. Likelihood and MLP shape
  (4 Linear layers, width 128, tanh on log-variance) follow the code.
* The code's video branches (squeeze-excitation, spatial attention and conv stacks on 7x7x512 VGG
  maps) need spatial maps; the harness has per-step vectors, so video uses the audio-style Linear
  encoders, as the issue specifies.
* The code runs in float64 (``precision=fp64``); by default the nearest-code search is float64, the rest of the codebook
  arithmetic float32 (autocast is switched off for it), and the networks follow the recipe's precision.
* Pretraining is always paired: under the cross-modal protocol the held-out modality is withheld
  only in the labelled (downstream) stage -- :attr:`train_modality` reads ``None`` during
  pretraining, so the engine passes both modalities there.

Recipe notes: by default the run's recipe (the one every strategy shares: Adam betas (0.95, 0.999),
weight decay 5e-7, lr halved every epoch, balanced sampling, per-step L2 norm, time roll, mixup and
label smoothing downstream) drives both stages; ``pretrain_lr``/``downstream_lr``/``grad_clip``
change only the lr and clip of a stage. CMG's own training is ``--recipe cmg --preset cmg``: the
recipe holds the loop (Adam defaults, constant lr, uniform batches, no L2 norm / roll / mixup /
label smoothing, clip 0.5 per model), the preset every switch of this table and the ones below at the
public code's value (lr 4e-4 both stages, float64, CLUB ``club_form=cmg``, ``reset_timing=cmg``, code-only
reset, downstream encoder in train mode, one decoder per modality). Dataset-sized settings stay the
card's (CMG's scripts: ``--set train.batch_size=80``, 30 downstream epochs). docs/equivalence.md lists
every remaining difference.

CMG switches (public code's value in brackets): ``club_form`` [cmg] -- the bound averaged over T
before dividing by exp(mean_T logvar) (CLUB.py:57-58) or per step (default); ``reset_timing`` [cmg] --
counters from -1, reset when above N_re (main_model_2.py:1014,1145) or from 0 at >= N_re (default, one
or two batches earlier); ``reset_rescale_ema`` [false]; ``downstream_encoder`` [train] -- dropout on in
the frozen encoder under no_grad (ave.py:177,201) or eval mode (default); ``downstream_decoders``
[per_modality] -- under the standard protocol one decoder per modality trained on that modality alone
(CMG trains on one modality, ave_va/ave_av; no fused column), or one shared decoder on both
modalities' codes with the fused column the mean of the two logits (default); the cross-modal
protocol is CMG's ave_va/ave_av either way; ``pretrain_sampling`` [uniform]; ``pretrain_time_roll``
[off]; ``precision`` [fp64].
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avbench.api import Batch, Capabilities, FeatureSpec, Strategy, TaskSpec
from avbench.config import in_range  # value ranges, checked by every --set
from avbench.errors import UserError
from avbench.nn.club import CLUBSample, fit_estimator
from avbench.nn.cpc import CrossCPC
from avbench.nn.vq import (
    MMEMACodebook,
    code_matching_loss,
    commitment_loss,
    cross_attention_partner,
    perplexity,
    straight_through,
)

MODALITIES = ("audio", "video")


@dataclass
class VQCodesConfig:
    # encoders and codebook (paper sizes)
    embed_dim: int = in_range(256, "[1, inf)")  # W: semantic / specific / code width
    num_codes: int = 400
    num_heads: int = 4
    num_layers: int = in_range(2, "[1, inf)")  # semantic Transformer layers
    ffn_ratio: float = in_range(4.0, "(0, inf)")
    dropout: float = 0.1
    codebook_init: float = in_range(0.0, "[0, inf)")  # codes ~ uniform(+-codebook_init); 0 means 1 / num_codes (the code)
    # MM-EMA
    ema_decay: float = in_range(0.99, "[0, 1)")
    ema_partner: Literal["cross_attention", "aligned", "none"] = "cross_attention"
    ema_partner_weight: float = in_range(0.5, "[0, 1]")  # (z + r) / 2
    ema_sequential: bool = False  # True: one EMA update per modality in turn (public code)
    ema_epsilon: float = in_range(1e-5, "[0, inf)")  # Laplace smoothing of the counts; 0 disables
    # losses
    commit_beta: float = in_range(0.25, "[0, inf)")
    commit_partner_ratio: float = in_range(0.5, "[0, inf)")  # partner-code commitment weight = beta * ratio
    recon_weight: float = in_range(1.0, "[0, inf)")
    mi_weight: float = in_range(1.0, "[0, inf)")
    club_updates: int = in_range(5, "[0, inf)")  # estimator steps per training step
    club_lr: float = in_range(1e-3, "(0, inf)")
    club_hidden: int = in_range(128, "[1, inf)")
    cpc_weight: float = in_range(1.0, "[0, inf)")
    cpc_steps: int = in_range(2, "[1, inf)")  # appendix: 2 for audio-visual (public code: 1)
    cpc_layers: int = in_range(1, "[1, inf)")
    cpc_self_weight: float = in_range(0.1, "[0, inf)")
    cpc_min_start: int = in_range(1, "[0, inf)")
    cmcm_weight: float = in_range(0.5, "[0, inf)")
    # dead-code reset
    reset_after: int | None = in_range(None, "[0, inf)")  # N_re in batches; None: scaled to the epoch (see docstring); 0 disables
    reset_epoch_fraction: float = in_range(0.32, "(0, 1]")  # auto N_re = this share of a pretraining epoch (appendix: 200 / 625)
    reset_active_window: int = in_range(100, "[1, inf)")
    reset_noise: float = in_range(1.0 / 1024, "[0, inf)")
    # stages
    pretrain_epochs: int = in_range(6, "[0, inf)")
    downstream_epochs: int | None = in_range(None, "[1, inf)")  # None: the recipe's epochs
    # per-stage recipe (None: the run's recipe, shared with every other strategy); paper: 4e-4, 2.5e-4, 0.5
    pretrain_lr: float | None = in_range(None, "(0, inf)")
    downstream_lr: float | None = in_range(None, "(0, inf)")
    grad_clip: float | None = in_range(None, "[0, inf)")  # both stages
    # where this harness departs from the public code (each a switch; the public code's value in brackets)
    input_norm: Literal["standardize", "none"] = "standardize"  # ["none"] per-dimension, running stats
    cpc_pred_init: Literal["zero", "default"] = "zero"  # ["default"] CPC predictors start at chance
    ema_features: Literal["eval", "train"] = "eval"  # ["train"] codebook fitted on dropout-free features
    decoder_input: Literal["standardize", "raw"] = "standardize"  # ["raw"] downstream decoder input
    code_search: Literal["fp64", "fp32"] = "fp64"  # nearest-code search precision, outside autocast
    # CMG's training, each a switch (issue 22; the public code's value in brackets; --recipe cmg docs)
    club_form: Literal["per_step", "cmg"] = "per_step"  # ["cmg"] CLUB bound: per step, or mean over T first (CLUB.py:57-58)
    reset_timing: Literal["avbench", "cmg"] = "avbench"  # ["cmg"] counter from 0, reset at >= N_re; or from -1, reset at > N_re
    reset_rescale_ema: bool = True  # [False] the reset also rescales the EMA sum so it sticks; False: code vector only
    downstream_encoder: Literal["eval", "train"] = "eval"  # ["train"] frozen encoder's mode downstream (train: dropout on)
    downstream_decoders: Literal["shared", "per_modality"] = "shared"  # ["per_modality"] standard protocol: one decoder on both modalities' codes (fused = mean), or one per modality trained on it alone (no fused column)
    pretrain_sampling: Literal["recipe", "uniform"] = "recipe"  # ["uniform"] pretraining batches: the recipe's sampler, or uniform (no labels)
    pretrain_time_roll: Literal["recipe", "off"] = "recipe"  # ["off"] the recipe's roll wraps a seam into Cross-CPC sequences
    precision: Literal["recipe", "fp64"] = "recipe"  # ["fp64"] fp64: every module and input in float64 (use with amp=fp32)


class RunningStandardize(nn.Module):
    """Per-dimension ``(x - mean) / std`` over every step of every clip seen while it updates.

    The statistics are a cumulative average (exact over the clips seen, not an EMA), updated in
    training mode while ``updating`` is on, and always *applied* from the stored estimate, so a step
    is transformed the same way in training and in evaluation once the estimate has settled.
    """

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.updating = True
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("mean", torch.zeros(dim, dtype=torch.float64))
        self.register_buffer("sq_mean", torch.ones(dim, dtype=torch.float64))

    @torch.no_grad()
    def update(self, x: Tensor) -> None:
        flat = x.detach().reshape(-1, x.shape[-1]).double()
        total = self.count + flat.shape[0]  # stays on the device: no host sync per step
        self.mean.mul_(self.count / total).add_(flat.sum(0) / total)
        self.sq_mean.mul_(self.count / total).add_((flat * flat).sum(0) / total)
        self.count.copy_(total)

    def forward(self, x: Tensor) -> Tensor:
        # Before any update, mean 0 and mean square 1: (nearly) the identity.
        if self.training and self.updating:
            self.update(x)
        var = (self.sq_mean - self.mean * self.mean).clamp_min(0.0)
        return (x - self.mean.to(x.dtype)) / torch.sqrt(var + self.eps).to(x.dtype)


class SemanticEncoder(nn.Module):
    """Linear(D, W) then a post-LN Transformer encoder (the public code's InternalTemporalRelationModule)."""

    def __init__(self, in_dim: int, cfg: VQCodesConfig):
        super().__init__()
        self.proj = nn.Linear(in_dim, cfg.embed_dim)
        layer = nn.TransformerEncoderLayer(cfg.embed_dim, cfg.num_heads, int(cfg.embed_dim * cfg.ffn_ratio),
                                           dropout=cfg.dropout, activation="relu", batch_first=True,
                                           norm_first=False)
        self.encoder = nn.TransformerEncoder(layer, cfg.num_layers, enable_nested_tensor=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.encoder(self.proj(x))


class ReconDecoder(nn.Module):
    """Linear(W, W)(code) concatenated with the specific feature -> Linear(2W, D)."""

    def __init__(self, dim: int, out_dim: int):
        super().__init__()
        self.code = nn.Linear(dim, dim)
        self.out = nn.Linear(2 * dim, out_dim)

    def forward(self, code: Tensor, specific: Tensor) -> Tensor:
        return self.out(torch.cat([self.code(code), specific], dim=-1))


class CodeDecoder(nn.Module):
    """The downstream decoder: Linear(W, W) -> max over T -> Linear(W, C), no activation (public code)."""

    def __init__(self, dim: int, num_classes: int, standardize: bool = True):
        super().__init__()
        self.norm = RunningStandardize(dim) if standardize else nn.Identity()
        self.linear = nn.Linear(dim, dim)
        self.classifier = nn.Linear(dim, num_classes)

    def forward(self, codes: Tensor) -> Tensor:
        return self.classifier(self.linear(self.norm(codes.to(self.linear.weight.dtype))).max(dim=1).values)


class VQCodes(Strategy):
    name: ClassVar[str] = "vq_codes"
    Config: ClassVar[type] = VQCodesConfig
    capabilities: ClassVar[Capabilities] = Capabilities(
        audio_only=True, video_only=True, fusion=True, embeddings=True, cross_modal=True)
    stages: ClassVar[tuple[str, ...]] = ("pretrain", "downstream")
    # ``--preset cmg`` (with ``--recipe cmg``): every switch at the public code's value (CMG code/src at
    # 3b31fa0; benchmarks/equivalence/cmg.py checks the modules against it). CMG's scripts use lr 4e-4
    # and clip 0.5 in both stages (pretrain.sh, ave.sh), 6 pretraining epochs, float64.
    presets: ClassVar[Mapping[str, Mapping[str, object]]] = {
        "cmg": {"input_norm": "none", "cpc_pred_init": "default", "ema_features": "train", "decoder_input": "raw",
                "reset_after": 300, "cpc_steps": 1, "cpc_layers": 2, "ema_partner": "aligned",
                "ema_sequential": True, "commit_beta": 0.5, "club_form": "cmg", "reset_timing": "cmg",
                "reset_rescale_ema": False, "downstream_encoder": "train", "downstream_decoders": "per_modality",
                "pretrain_sampling": "uniform", "pretrain_time_roll": "off", "precision": "fp64", "code_search": "fp64",
                "pretrain_lr": 4e-4, "downstream_lr": 4e-4, "grad_clip": 0.5, "pretrain_epochs": 6},
    }

    def __init__(self, cfg: VQCodesConfig, features: FeatureSpec, task: TaskSpec):
        self.check_compatible(cfg, features, task)
        super().__init__(cfg, features, task)
        w = cfg.embed_dim
        dims = {"audio": features.audio_dim, "video": features.video_dim}
        self.semantic = nn.ModuleDict({m: SemanticEncoder(dims[m], cfg) for m in MODALITIES})
        self.specific = nn.ModuleDict({m: nn.Sequential(nn.Linear(dims[m], w), nn.ReLU()) for m in MODALITIES})
        self.recon = nn.ModuleDict({m: ReconDecoder(w, dims[m]) for m in MODALITIES})
        self.input_norm = nn.ModuleDict({m: RunningStandardize(dims[m]) if cfg.input_norm == "standardize"
                                         else nn.Identity() for m in MODALITIES})
        self.codebook = MMEMACodebook(cfg.num_codes, w, decay=cfg.ema_decay, epsilon=cfg.ema_epsilon,
                                      init_bound=cfg.codebook_init or None,
                                      search_dtype=torch.float64 if cfg.code_search == "fp64" else torch.float32,
                                      reset_timing=cfg.reset_timing)
        self.cpc = CrossCPC(w, w, num_modalities=2, steps=cfg.cpc_steps, num_layers=cfg.cpc_layers,
                            self_weight=cfg.cpc_self_weight, min_start=cfg.cpc_min_start)
        if cfg.cpc_pred_init == "zero":
            for preds in self.cpc.predictors:
                for lin in preds:
                    nn.init.zeros_(lin.weight)
                    nn.init.zeros_(lin.bias)
        self.club = nn.ModuleDict({m: CLUBSample(w, w, hidden=cfg.club_hidden) for m in MODALITIES})
        self.decoder = CodeDecoder(w, task.num_classes, standardize=cfg.decoder_input == "standardize")
        if cfg.downstream_decoders == "per_modality":
            # self.decoder serves audio (and the cross-modal protocol's one decoder); video has its own.
            self.video_decoder = CodeDecoder(w, task.num_classes, standardize=cfg.decoder_input == "standardize")
            self.capabilities = dataclasses.replace(type(self).capabilities, fusion=False, reasons={
                "fusion": "downstream_decoders=per_modality: each modality's decoder is trained on it alone "
                          "(CMG's protocol), so no fused prediction is defined"})
        if cfg.precision == "fp64":
            self.double()
        self._dtype = torch.float64 if cfg.precision == "fp64" else torch.float32
        # The CLUB estimators have their own optimizers and are excluded from trainable_parameters().
        self._club_opt = {m: torch.optim.Adam(self.club[m].parameters(), lr=cfg.club_lr) for m in MODALITIES}
        self._reset_generator = torch.Generator().manual_seed(0)
        self._epoch_steps = 0  # pretraining batches in the current epoch (auto N_re)
        self._steps_per_epoch: int | None = None  # estimated, then counted after the first epoch
        self._diag = self._empty_diag()
        self._pending: tuple[dict[str, Tensor], dict[str, Tensor]] | None = None

    @classmethod
    def search_space(cls, recipe: Any) -> dict[str, dict[str, Any]]:
        """The shared default (``train.lr``, which drives the downstream decoder unless ``downstream_lr``
        is set, weight decay, run length) plus the pretraining lr on its own: the unlabelled stage is
        a different problem from training a linear decoder (the paper uses 4e-4 and 2.5e-4), and the
        encoder collapses at too high a rate (issue 18), so one shared lr would tie the two."""
        from avbench.api import default_space

        return {**default_space(recipe), "pretrain_lr": {"type": "float", "low": 1e-4, "high": 2e-3, "log": True}}

    # --- checks -------------------------------------------------------------------------------
    @classmethod
    def check_compatible(cls, cfg: VQCodesConfig, features: FeatureSpec, task: TaskSpec) -> None:
        need = cfg.cpc_min_start + cfg.cpc_steps + 1
        if features.num_steps < need:
            raise UserError(f"vq_codes: Cross-CPC with cpc_steps={cfg.cpc_steps} needs at least {need} time "
                            f"steps; the cache has {features.num_steps} (lower cpc_steps or cpc_min_start)")
        if cfg.embed_dim % cfg.num_heads:
            raise UserError(f"vq_codes: embed_dim {cfg.embed_dim} is not divisible by num_heads {cfg.num_heads}")
        if cfg.num_codes < 2:
            raise UserError("vq_codes: num_codes must be at least 2")
        if cfg.ema_partner not in ("cross_attention", "aligned", "none"):
            raise UserError(f"vq_codes: ema_partner '{cfg.ema_partner}' is not cross_attention, aligned or none")

    # --- stages -------------------------------------------------------------------------------
    @property
    def train_modality(self) -> str | None:
        """The modality the labelled stage trains on; pretraining is always paired, so None there."""
        if getattr(self, "stage", "downstream") == "pretrain":
            return None
        return getattr(self, "_train_modality", None)

    @train_modality.setter
    def train_modality(self, value: str | None) -> None:
        self._train_modality = value

    def stage_uses_labels(self, stage: str) -> bool:
        return stage != "pretrain"

    def stage_epochs(self, stage: str, epochs: int) -> int:
        if stage == "pretrain":
            return self.cfg.pretrain_epochs
        return epochs if self.cfg.downstream_epochs is None else self.cfg.downstream_epochs

    def stage_recipe(self, stage: str, recipe: Any) -> Any:
        """The stage's full recipe: the run's, with this stage's lr, clip and (pretraining) sampler.

        The engine reads per stage: optimizer (lr, betas, weight decay), schedule, clipping, batch
        size, sampler, mixup, label smoothing and time roll; once per run: precision (``amp``), the
        per-step L2 norm (evaluation shares it) and device residency."""
        lr = self.cfg.pretrain_lr if stage == "pretrain" else self.cfg.downstream_lr
        changes: dict[str, Any] = {k: v for k, v in (("lr", lr), ("grad_clip", self.cfg.grad_clip)) if v is not None}
        if stage == "pretrain" and self.cfg.pretrain_sampling == "uniform":
            changes["balanced_sampling"] = False  # no labels in this stage: CMG's loader is uniform
        if stage == "pretrain" and self.cfg.pretrain_time_roll == "off":
            changes["time_roll"] = False  # a circular roll puts the clip's end before its start
        return dataclasses.replace(recipe, **changes) if changes else recipe

    def clip_groups(self) -> list[list[nn.Parameter]]:
        """Parameter groups clipped one by one under ``grad_clip_scope=module``: CMG's models
        (pretrain.py:534-536, ave.py:233-235), i.e. its Encoder (semantic and specific encoders), its
        CPC, and its Decoder (reconstruction decoders in pretraining, the downstream decoders after)."""
        trainable = {id(p) for p in self.trainable_parameters()}
        decoders = [self.recon, self.decoder] + ([self.video_decoder] if hasattr(self, "video_decoder") else [])
        groups = [[self.input_norm, self.semantic, self.specific, self.codebook], [self.cpc], decoders]
        out = [[p for mod in g for p in mod.parameters() if id(p) in trainable] for g in groups]
        return [g for g in out if g]

    def frozen_modules(self) -> list[nn.Module]:
        return [self.input_norm, self.semantic, self.specific, self.recon, self.codebook, self.cpc, self.club]

    def decoders(self) -> list[nn.Module]:
        return [self.decoder] + ([self.video_decoder] if hasattr(self, "video_decoder") else [])

    def begin_stage(self, stage: str) -> None:
        if stage not in self.stages:
            raise UserError(f"vq_codes has no stage '{stage}' (stages: {', '.join(self.stages)})")
        super().begin_stage(stage)
        if stage == "downstream":
            for m in self.frozen_modules():
                m.requires_grad_(False)
            for d in self.decoders():
                d.requires_grad_(True)
        else:
            self.requires_grad_(True)
        for m in MODALITIES:  # input statistics come from pretraining only
            if isinstance(self.input_norm[m], RunningStandardize):
                self.input_norm[m].updating = stage == "pretrain"
        self.train(self.training)
        self._diag = self._empty_diag()

    def train(self, mode: bool = True) -> "VQCodes":
        super().train(mode)
        # Frozen encoders run without dropout, unless downstream_encoder=train (CMG's ave.py leaves its
        # Encoder in train mode: dropout on, under no_grad)
        if getattr(self, "stage", None) == "downstream" and self.cfg.downstream_encoder == "eval":
            for m in self.frozen_modules():
                m.eval()
        return self

    # --- checkpoint state beyond parameters and buffers ----------------------------------------
    def get_extra_state(self) -> dict[str, Any]:
        """The CLUB estimators' Adam moments and the dead-code reset generator travel with the weights
        (``state_dict``), so a resumed pretraining continues exactly where it stopped."""
        return {"club_optimizers": {m: opt.state_dict() for m, opt in self._club_opt.items()},
                "reset_generator": self._reset_generator.get_state(), "steps_per_epoch": self._steps_per_epoch}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        for m, opt in self._club_opt.items():
            opt.load_state_dict(state["club_optimizers"][m])
        self._reset_generator.set_state(state["reset_generator"])
        self._steps_per_epoch = state.get("steps_per_epoch")

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs) -> None:
        # Weights saved before the extra state existed still load (evaluation and analyses need only
        # the weights); only a resumed pretraining would restart the estimators' moments.
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        if prefix + "_extra_state" in missing_keys:
            missing_keys.remove(prefix + "_extra_state")

    def trainable_parameters(self):
        club = {id(p) for p in self.club.parameters()}
        return (p for p in self.parameters() if p.requires_grad and id(p) not in club)

    # --- encoding -----------------------------------------------------------------------------
    def encode(self, x: Tensor, modality: str) -> tuple[Tensor, Tensor, Tensor]:
        """``(semantic [B,T,W] float32 (float64 under precision=fp64), code indices [B,T], codes [B,T,W])``."""
        z = self.semantic[modality](self.input_norm[modality](x.to(self._dtype))).to(self._dtype)
        idx, codes = self.codebook.quantize(z)
        return z, idx, codes

    # --- training -----------------------------------------------------------------------------
    def training_step(self, batch: Batch, step: int) -> dict[str, Tensor]:
        if self.stage == "pretrain":
            return self._pretrain_step(batch)
        return self._downstream_step(batch)

    def _pretrain_step(self, batch: Batch) -> dict[str, Tensor]:
        cfg = self.cfg
        if batch.audio is None or batch.video is None:
            raise UserError("vq_codes pretraining needs paired audio and video in every batch; "
                            "a modality was withheld in the unsupervised stage")
        f = self._dtype
        x = {m: self.input_norm[m](v.to(f)) for m, v in (("audio", batch.audio), ("video", batch.video))}
        other = {"audio": "video", "video": "audio"}
        if self.training:
            self._note_batch(batch)
        z, spec = {}, {}
        for m in MODALITIES:
            z[m] = self.semantic[m](x[m])
            spec[m] = self.specific[m](x[m])
        dev_type = batch.audio.device.type
        with torch.autocast(device_type=dev_type, enabled=False):
            zf = {m: z[m].to(f) for m in MODALITIES}
            idx, codes, q = {}, {}, {}
            for m in MODALITIES:
                idx[m], codes[m] = self.codebook.quantize(zf[m])
                q[m] = straight_through(zf[m], codes[m])
            commit = sum(commitment_loss(zf[m], codes[m], codes[other[m]], cfg.commit_beta,
                                         cfg.commit_partner_ratio) for m in MODALITIES)
            cmcm = (code_matching_loss(zf["audio"], zf["video"], self.codebook.embedding)
                    if cfg.cmcm_weight else zf["audio"].new_zeros(()))
        # DCID: fit the CLUB estimators on detached inputs, then their bound enters the loss.
        mi, lld = {}, {}
        for m in MODALITIES:
            if cfg.mi_weight and cfg.club_updates > 0:
                lld[m] = fit_estimator(self.club[m], self._club_opt[m], q[m], spec[m], cfg.club_updates)[-1]
            else:
                lld[m] = q[m].new_zeros(())
            self.club[m].requires_grad_(False)
            mi[m] = (self.club[m].mi_estimate(q[m], spec[m].to(f), form=cfg.club_form) if cfg.mi_weight
                     else q[m].new_zeros(()))
        cpc_loss, cpc_acc = self.cpc([z["audio"], z["video"]])
        recon = sum(F.mse_loss(self.recon[m](q[m].to(spec[m].dtype), spec[m]).to(f), x[m].to(f))
                    for m in MODALITIES)
        loss = (cfg.recon_weight * recon + commit + cfg.mi_weight * (mi["audio"] + mi["video"])
                + cfg.cpc_weight * cpc_loss + cfg.cmcm_weight * cmcm)
        if self.training:  # applied in after_optimizer_step, once backward no longer needs the codes
            if cfg.ema_features == "eval":  # fit the codes to what evaluation will quantise (no dropout)
                self._pending = ({m: x[m].detach() for m in MODALITIES}, None)
            else:
                self._pending = ({m: zf[m].detach() for m in MODALITIES}, idx)
        self._record(idx, mi, lld, cpc_acc)
        return {"loss": loss, "recon": recon.detach(), "commit": commit.detach(), "cpc": cpc_loss.detach(),
                "cmcm": cmcm.detach(), "mi_audio": mi["audio"].detach(), "mi_video": mi["video"].detach(),
                "cpc_acc_av": cpc_acc[(0, 1)], "cpc_acc_va": cpc_acc[(1, 0)]}

    def after_optimizer_step(self, step: int) -> None:
        """MM-EMA codebook update and dead-code reset from the batch of the last training step."""
        pending, self._pending = self._pending, None
        if pending is not None and self.stage == "pretrain":
            self._update_codebook(*pending)

    @torch.no_grad()
    def _update_codebook(self, z: dict[str, Tensor], idx: dict[str, Tensor] | None) -> None:
        """``idx=None``: ``z`` holds the standardised inputs; the EMA fits the eval-mode features."""
        cfg = self.cfg
        if idx is None:
            was = [mod.training for mod in self.semantic.values()]
            self.semantic.eval()
            try:
                z = {m: self.semantic[m](z[m]).to(self._dtype) for m in MODALITIES}
            finally:
                for mod, w in zip(self.semantic.values(), was):
                    mod.train(w)
            idx = {m: self.codebook.nearest(z[m]) for m in MODALITIES}
        with torch.autocast(device_type=z["audio"].device.type, enabled=False):
            if cfg.ema_partner == "cross_attention":
                partner = {"audio": cross_attention_partner(z["audio"], z["video"]),
                           "video": cross_attention_partner(z["video"], z["audio"])}
            elif cfg.ema_partner == "aligned":
                partner = {"audio": z["video"], "video": z["audio"]}
            else:
                partner = {"audio": None, "video": None}
            self.codebook.ema_update([(z[m], idx[m], partner[m]) for m in MODALITIES],
                                     sequential=cfg.ema_sequential, partner_weight=cfg.ema_partner_weight)
            after = self.reset_after()
            if after > 0:
                m = self.codebook.num_codes
                used = (torch.bincount(idx["audio"].flatten(), minlength=m)
                        + torch.bincount(idx["video"].flatten(), minlength=m)) > 0
                n = self.codebook.reset_dead(used, after, min(cfg.reset_active_window, after), cfg.reset_noise,
                                             generator=self._reset_generator, rescale_ema=cfg.reset_rescale_ema)
                self._diag["codes_reset"] += n

    def _note_batch(self, batch: Batch) -> None:
        """Count pretraining batches; before the first epoch is counted, estimate its length from the
        first batch's row indices (a uniform sample of the split: its largest index ~ the split size)."""
        self._epoch_steps += 1
        if self._steps_per_epoch is None and batch.index is not None and batch.index.numel():
            b = batch.index.numel()
            rows = (int(batch.index.max()) + 1) * (b + 1) / b
            self._steps_per_epoch = max(1, int(rows // b))

    def reset_after(self) -> int:
        """N_re in batches: ``reset_after`` when set; else ``reset_epoch_fraction`` of a pretraining
        epoch, at least 2 and at most the appendix's 200 (200 batches of 64 are 0.32 of an epoch of
        its 40K clips; at 200 a run of 80 steps never resets)."""
        if self.cfg.reset_after is not None:
            return self.cfg.reset_after
        steps = self._steps_per_epoch or 200
        return int(min(200, max(2, round(self.cfg.reset_epoch_fraction * steps))))

    def _downstream_step(self, batch: Batch) -> dict[str, Tensor]:
        mods = [self.train_modality] if self.train_modality else list(MODALITIES)
        given = {"audio": batch.audio, "video": batch.video}
        out: dict[str, Tensor] = {}
        losses = []
        for m in mods:
            if given[m] is None:
                continue
            loss = self._loss(self.decoder_for(m)(self.codes(given[m], m)), batch.targets)
            out[f"loss_{m}"] = loss.detach()
            losses.append(loss)
        if not losses:
            raise UserError(f"vq_codes downstream: the batch has no {' or '.join(mods)} features")
        out["loss"] = torch.stack(losses).mean()
        return out

    def _loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        """The task loss; under ``precision=fp64`` the same formulas in float64 (the shared one is fp32)."""
        if self._dtype != torch.float64:
            return self.loss_fn(logits, targets)
        targets = targets.double()
        if self.task.multilabel:
            return F.binary_cross_entropy_with_logits(logits.double(), targets)
        return torch.sum(-targets * F.log_softmax(logits.double(), dim=-1), dim=-1).mean()

    # --- inference ----------------------------------------------------------------------------
    def codes(self, x: Tensor, modality: str) -> Tensor:
        """The frozen code vectors ``[B, T, W]`` of one modality (no gradient)."""
        with torch.no_grad():
            return self.encode(x, modality)[2]

    def decoder_for(self, modality: str) -> nn.Module:
        """The decoder that reads ``modality``'s codes: the shared one, or (``per_modality`` under the
        standard protocol) the modality's own; the cross-modal protocol always has one decoder."""
        if modality == "video" and hasattr(self, "video_decoder") and self._train_modality_any() is None:
            return self.video_decoder
        return self.decoder

    def _train_modality_any(self) -> str | None:
        return getattr(self, "_train_modality", None)

    def predict(self, audio: Tensor | None, video: Tensor | None) -> Tensor:
        if audio is not None and video is not None and not self.capabilities.fusion:
            raise ValueError("vq_codes with downstream_decoders=per_modality defines no fused prediction")
        logits = [self.decoder_for(m)(self.codes(x, m)) for m, x in zip(MODALITIES, (audio, video)) if x is not None]
        if not logits:
            raise ValueError("predict needs audio or video")
        return torch.stack(logits).mean(0)

    def embed(self, audio: Tensor | None, video: Tensor | None) -> dict[str, Tensor]:
        """``{"semantic", "quantized"}`` for the given modality; with both, the mean over the two."""
        outs = []
        for m, x in zip(MODALITIES, (audio, video)):
            if x is not None:
                z, _, e = self.encode(x, m)
                outs.append((z, e))
        if not outs:
            raise ValueError("embed needs audio or video")
        return {"semantic": torch.stack([o[0] for o in outs]).mean(0),
                "quantized": torch.stack([o[1] for o in outs]).mean(0)}

    # --- diagnostics --------------------------------------------------------------------------
    def _empty_diag(self) -> dict:
        # Sums stay on the model's device (no host sync per step) until epoch_diagnostics reads them.
        return {"steps": 0, "codes_reset": 0}

    @torch.no_grad()
    def _record(self, idx: dict[str, Tensor], mi: dict[str, Tensor], lld: dict[str, Tensor],
                cpc_acc: dict[tuple[int, int], Tensor]) -> None:
        d = self._diag
        m = self.cfg.num_codes
        dev = idx["audio"].device
        if "usage_audio" not in d:
            d.update({f"usage_{mod}": torch.zeros(m, dtype=torch.long, device=dev) for mod in MODALITIES})
            d["sums"] = torch.zeros(7, device=dev)
        for mod in MODALITIES:
            d[f"usage_{mod}"] += torch.bincount(idx[mod].flatten(), minlength=m)
        d["sums"] += torch.stack([
            (idx["audio"] == idx["video"]).float().mean(), mi["audio"].detach().float(),
            mi["video"].detach().float(), lld["audio"].float(), lld["video"].float(),
            cpc_acc[(0, 1)].float(), cpc_acc[(1, 0)].float()])
        d["steps"] += 1

    def code_usage(self, d: dict | None = None) -> dict[str, float]:
        """Code-usage colours of the appendix's Fig. 2 over this epoch, as fractions of the codebook."""
        d = self._diag if d is None else d
        if "usage_audio" not in d:
            return {}
        ua, uv = d["usage_audio"].cpu() > 0, d["usage_video"].cpu() > 0
        m = float(self.cfg.num_codes)
        both = float((ua & uv).sum())
        active = float((ua | uv).sum())
        pa = d["usage_audio"].cpu().double() / max(1, int(d["usage_audio"].sum()))
        pv = d["usage_video"].cpu().double() / max(1, int(d["usage_video"].sum()))
        return {
            "codebook_perplexity": perplexity((d["usage_audio"] + d["usage_video"]).cpu()),
            "perplexity_audio": perplexity(d["usage_audio"].cpu()),
            "perplexity_video": perplexity(d["usage_video"].cpu()),
            "active_codes": active,
            "codes_both_frac": both / m,
            "codes_audio_only_frac": float((ua & ~uv).sum()) / m,
            "codes_video_only_frac": float((~ua & uv).sum()) / m,
            "codes_unused_frac": float((~ua & ~uv).sum()) / m,
            "codes_both_share_of_active": both / active if active else 0.0,
            # histogram intersection of the two modalities' code distributions (1 = identical usage)
            "code_usage_overlap": float(torch.minimum(pa, pv).sum()),
            # share of paired steps where audio and video chose the same code
            "code_agreement": float(d["sums"][0]) / max(1, d["steps"]),
        }

    def epoch_diagnostics(self) -> dict[str, float]:
        if getattr(self, "stage", None) == "pretrain" and self._epoch_steps:
            self._steps_per_epoch = self._epoch_steps  # counted: replaces the first batch's estimate
        self._epoch_steps = 0
        d = self._diag
        self._diag = self._empty_diag()
        if d["steps"] == 0:
            return {}
        n = d["steps"]
        sums = (d["sums"] / n).tolist()
        out = self.code_usage(d)
        out.update({
            "club_mi_audio": sums[1], "club_mi_video": sums[2],
            "club_loglik_audio": sums[3], "club_loglik_video": sums[4],
            "cpc_acc_av": sums[5], "cpc_acc_va": sums[6], "cpc_acc": (sums[5] + sums[6]) / 2,
            "codes_reset": float(d["codes_reset"]),
            "reset_after": float(self.reset_after()),
        })
        return out
