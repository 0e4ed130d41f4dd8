"""``vq_codes``: discrete unified codes for cross-modal generalisation (paper 002, Uni-Code / CMG).

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
* dead-code reset: a code no modality selected for N_re = 200 batches is moved onto a random active
  code plus uniform(+-1/1024) noise.

Downstream: Linear(W, W) -> max over T -> Linear(W, C) on the (frozen) codes, no activation between,
trained on ``train_modality`` (cross-modal protocol) or on both modalities' codes in every batch
(standard protocol: each modality's loss, averaged), so audio-only, video-only and fused (the mean of
the two logits) predictions all exist.

Appendix vs public code (haihuangcode/CMG) -- the appendix is the default, each difference a switch:

==========================  =====================================  ===================================
what                        appendix (default)                     public code (``--set``)
==========================  =====================================  ===================================
Cross-CPC prediction steps  2 for audio-visual                     ``cpc_steps=1``
dead-code reset             N_re = 200 batches                     ``reset_after=300``
MM-EMA partner              cross-attention r^b over the clip      ``ema_partner=aligned``
MM-EMA update               one joint update (eq. 2)               ``ema_sequential=true`` (per modality)
Cross-CPC LSTM layers       1 (main paper)                         ``cpc_layers=2``
commitment scale            beta own + beta/2 partner              ``commit_beta=0.5`` (2x both, same ratio)
==========================  =====================================  ===================================

Other choices, stated:

* Laplace smoothing of the EMA counts (``ema_epsilon=1e-5``) comes from the code; the appendix's
  ``e = o / N`` is silent on never-used codes. ``ema_epsilon=0`` turns it off (an unused code then
  keeps its vector).
* The code's reset writes only the code vector, which its next EMA step recomputes from the old
  statistics (and its noise is a constant -1/1024 through a ``uniform_(-a, -a)`` slip); here the EMA
  sum is rescaled with the code so the reset sticks, and the noise is uniform in +-``reset_noise``.
* The appendix's cross-attention has no stated projections: ``r^b`` is parameter-free attention of a
  step over the partner clip's steps, on detached features.
* CLUB: the code's bound averages over T before contrasting; here it is the sampled CLUB per step
  (negatives: another clip at the same step), the form of Cheng et al. Likelihood and MLP shape
  (4 Linear layers, width 128, tanh on log-variance) follow the code.
* The code's video branches (squeeze-excitation, spatial attention and conv stacks on 7x7x512 VGG
  maps) need spatial maps; the harness has per-step vectors, so video uses the audio-style Linear
  encoders, as the issue specifies.
* The code runs in float64; here the codebook arithmetic is float32 (autocast is switched off for
  it) and the networks follow the recipe's precision.
* Pretraining is always paired: under the cross-modal protocol the held-out modality is withheld
  only in the labelled (downstream) stage -- :attr:`train_modality` reads ``None`` during
  pretraining, so the engine passes both modalities there.

Recipe notes: the paper pretrains with Adam lr 4e-4 (downstream 2.5e-4), batch 64, grad clip 0.5 in
the code, 6 epochs. By default the run's recipe (the one every strategy shares) applies to both
stages; ``--set pretrain_lr=4e-4 --set downstream_lr=2.5e-4 --set grad_clip=0.5`` gives the paper's
per-stage settings (the batch size stays the run's: ``--set train.batch_size=64``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avbench.api import Batch, Capabilities, FeatureSpec, Strategy, TaskSpec
from avbench.errors import UserError
from avbench.nn.club import CLUBSample, fit_estimator
from avbench.nn.cpc import CrossCPC
from avbench.nn.vq import (MMEMACodebook, code_matching_loss, commitment_loss, cross_attention_partner,
                           perplexity, straight_through)

MODALITIES = ("audio", "video")


@dataclass
class VQCodesConfig:
    # encoders and codebook (paper sizes)
    embed_dim: int = 256  # W: semantic / specific / code width
    num_codes: int = 400
    num_heads: int = 4
    num_layers: int = 2  # semantic Transformer layers
    ffn_ratio: float = 4.0
    dropout: float = 0.1
    codebook_init: float = 0.0  # codes ~ uniform(+-codebook_init); 0 means 1 / num_codes (the code)
    # MM-EMA
    ema_decay: float = 0.99
    ema_partner: Literal["cross_attention", "aligned", "none"] = "cross_attention"
    ema_partner_weight: float = 0.5  # (z + r) / 2
    ema_sequential: bool = False  # True: one EMA update per modality in turn (public code)
    ema_epsilon: float = 1e-5  # Laplace smoothing of the counts; 0 disables
    # losses
    commit_beta: float = 0.25
    commit_partner_ratio: float = 0.5  # partner-code commitment weight = beta * ratio
    recon_weight: float = 1.0
    mi_weight: float = 1.0
    club_updates: int = 5  # estimator steps per training step
    club_lr: float = 1e-3
    club_hidden: int = 128
    cpc_weight: float = 1.0
    cpc_steps: int = 2  # appendix: 2 for audio-visual (public code: 1)
    cpc_layers: int = 1
    cpc_self_weight: float = 0.1
    cpc_min_start: int = 1
    cmcm_weight: float = 0.5
    # dead-code reset
    reset_after: int = 200  # N_re; 0 disables
    reset_active_window: int = 100
    reset_noise: float = 1.0 / 1024
    # stages
    pretrain_epochs: int = 6
    downstream_epochs: int | None = None  # None: the recipe's epochs
    # per-stage recipe (None: the run's recipe, shared with every other strategy); paper: 4e-4, 2.5e-4, 0.5
    pretrain_lr: float | None = None
    downstream_lr: float | None = None
    grad_clip: float | None = None  # both stages


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

    def __init__(self, dim: int, num_classes: int):
        super().__init__()
        self.linear = nn.Linear(dim, dim)
        self.classifier = nn.Linear(dim, num_classes)

    def forward(self, codes: Tensor) -> Tensor:
        return self.classifier(self.linear(codes).max(dim=1).values)


class VQCodes(Strategy):
    name: ClassVar[str] = "vq_codes"
    Config: ClassVar[type] = VQCodesConfig
    capabilities: ClassVar[Capabilities] = Capabilities(
        audio_only=True, video_only=True, fusion=True, embeddings=True, cross_modal=True)
    stages: ClassVar[tuple[str, ...]] = ("pretrain", "downstream")

    def __init__(self, cfg: VQCodesConfig, features: FeatureSpec, task: TaskSpec):
        self.check_compatible(cfg, features, task)
        super().__init__(cfg, features, task)
        w = cfg.embed_dim
        dims = {"audio": features.audio_dim, "video": features.video_dim}
        self.semantic = nn.ModuleDict({m: SemanticEncoder(dims[m], cfg) for m in MODALITIES})
        self.specific = nn.ModuleDict({m: nn.Sequential(nn.Linear(dims[m], w), nn.ReLU()) for m in MODALITIES})
        self.recon = nn.ModuleDict({m: ReconDecoder(w, dims[m]) for m in MODALITIES})
        self.codebook = MMEMACodebook(cfg.num_codes, w, decay=cfg.ema_decay, epsilon=cfg.ema_epsilon,
                                      init_bound=cfg.codebook_init or None)
        self.cpc = CrossCPC(w, w, num_modalities=2, steps=cfg.cpc_steps, num_layers=cfg.cpc_layers,
                            self_weight=cfg.cpc_self_weight, min_start=cfg.cpc_min_start)
        self.club = nn.ModuleDict({m: CLUBSample(w, w, hidden=cfg.club_hidden) for m in MODALITIES})
        self.decoder = CodeDecoder(w, task.num_classes)
        # The CLUB estimators have their own optimizers and are excluded from trainable_parameters().
        self._club_opt = {m: torch.optim.Adam(self.club[m].parameters(), lr=cfg.club_lr) for m in MODALITIES}
        self._reset_generator = torch.Generator().manual_seed(0)
        self._diag = self._empty_diag()
        self._pending: tuple[dict[str, Tensor], dict[str, Tensor]] | None = None

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
        lr = self.cfg.pretrain_lr if stage == "pretrain" else self.cfg.downstream_lr
        changes = {k: v for k, v in (("lr", lr), ("grad_clip", self.cfg.grad_clip)) if v is not None}
        return dataclasses.replace(recipe, **changes) if changes else recipe

    def frozen_modules(self) -> list[nn.Module]:
        return [self.semantic, self.specific, self.recon, self.codebook, self.cpc, self.club]

    def begin_stage(self, stage: str) -> None:
        if stage not in self.stages:
            raise UserError(f"vq_codes has no stage '{stage}' (stages: {', '.join(self.stages)})")
        super().begin_stage(stage)
        if stage == "downstream":
            for m in self.frozen_modules():
                m.requires_grad_(False)
            self.decoder.requires_grad_(True)
        else:
            self.requires_grad_(True)
        self.train(self.training)
        self._diag = self._empty_diag()

    def train(self, mode: bool = True) -> "VQCodes":
        super().train(mode)
        if getattr(self, "stage", None) == "downstream":  # frozen encoders never run dropout
            for m in self.frozen_modules():
                m.eval()
        return self

    # --- checkpoint state beyond parameters and buffers ----------------------------------------
    def get_extra_state(self) -> dict[str, Any]:
        """The CLUB estimators' Adam moments and the dead-code reset generator travel with the weights
        (``state_dict``), so a resumed pretraining continues exactly where it stopped."""
        return {"club_optimizers": {m: opt.state_dict() for m, opt in self._club_opt.items()},
                "reset_generator": self._reset_generator.get_state()}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        for m, opt in self._club_opt.items():
            opt.load_state_dict(state["club_optimizers"][m])
        self._reset_generator.set_state(state["reset_generator"])

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
        """``(semantic [B,T,W] float32, code indices [B,T], codes [B,T,W])`` for one modality."""
        z = self.semantic[modality](x).float()
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
        x = {"audio": batch.audio, "video": batch.video}
        other = {"audio": "video", "video": "audio"}
        z, spec = {}, {}
        for m in MODALITIES:
            z[m] = self.semantic[m](x[m])
            spec[m] = self.specific[m](x[m])
        dev_type = batch.audio.device.type
        with torch.autocast(device_type=dev_type, enabled=False):
            zf = {m: z[m].float() for m in MODALITIES}
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
            mi[m] = self.club[m].mi_estimate(q[m], spec[m].float()) if cfg.mi_weight else q[m].new_zeros(())
        cpc_loss, cpc_acc = self.cpc([z["audio"], z["video"]])
        recon = sum(F.mse_loss(self.recon[m](q[m].to(spec[m].dtype), spec[m]).float(), x[m].float())
                    for m in MODALITIES)
        loss = (cfg.recon_weight * recon + commit + cfg.mi_weight * (mi["audio"] + mi["video"])
                + cfg.cpc_weight * cpc_loss + cfg.cmcm_weight * cmcm)
        if self.training:  # applied in after_optimizer_step, once backward no longer needs the codes
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
    def _update_codebook(self, z: dict[str, Tensor], idx: dict[str, Tensor]) -> None:
        cfg = self.cfg
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
            if cfg.reset_after > 0:
                m = self.codebook.num_codes
                used = (torch.bincount(idx["audio"].flatten(), minlength=m)
                        + torch.bincount(idx["video"].flatten(), minlength=m)) > 0
                n = self.codebook.reset_dead(used, cfg.reset_after, cfg.reset_active_window, cfg.reset_noise,
                                             generator=self._reset_generator)
                self._diag["codes_reset"] += n

    def _downstream_step(self, batch: Batch) -> dict[str, Tensor]:
        mods = [self.train_modality] if self.train_modality else list(MODALITIES)
        given = {"audio": batch.audio, "video": batch.video}
        out: dict[str, Tensor] = {}
        losses = []
        for m in mods:
            if given[m] is None:
                continue
            loss = self.loss_fn(self.decoder(self.codes(given[m], m)), batch.targets)
            out[f"loss_{m}"] = loss.detach()
            losses.append(loss)
        if not losses:
            raise UserError(f"vq_codes downstream: the batch has no {' or '.join(mods)} features")
        out["loss"] = torch.stack(losses).mean()
        return out

    # --- inference ----------------------------------------------------------------------------
    def codes(self, x: Tensor, modality: str) -> Tensor:
        """The frozen code vectors ``[B, T, W]`` of one modality (no gradient)."""
        with torch.no_grad():
            return self.encode(x, modality)[2]

    def predict(self, audio: Tensor | None, video: Tensor | None) -> Tensor:
        logits = [self.decoder(self.codes(x, m)) for m, x in zip(MODALITIES, (audio, video)) if x is not None]
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
        })
        return out
