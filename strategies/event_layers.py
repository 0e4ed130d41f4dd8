"""``event_layers``: multisensory event-specific fusion layers (paper 003, section 3).

One file for the method, as timm keeps one file per model family (over 400 lines on purpose: the five
heads, the two readings of the paper's vote and the separate unimodal baselines belong together).

Five heads read the same per-step audio and visual features and pool them differently, each with
its own fully-connected classifier; the training loss is the equally weighted sum of the five
per-head losses (paper eq. 4):

===========  ===============================================================================
continuous   mean over all T steps of concat(v_t, a_t)                           (eq. 1)
instant      mean over the top-k steps by the score v_t . a_t of concat(v_t, a_t)  (eq. 2)
onset        mean over the audio-onset steps (the cache's ``onsets.npy``)          (eq. 3)
visual       eq. 1 with zero-valued audio, i.e. the mean of v_t (video only)
audio        eq. 1 with zero-valued video, i.e. the mean of a_t (audio only)
===========  ===============================================================================

The visual and audio heads are written as an FC over the pooled single-modality vector:
``FC(concat(v, 0)) = W_v v + b`` is exactly the paper's zero-filled concat, without the dead weights.

Adaptation to frozen features (the paper fine-tunes both backbones end to end): a learned linear
projection per modality (``embed_dim`` wide, ``project=true``) maps the frozen audio and video
features to one common width, so ``v_t . a_t`` is defined and the pooled features can still adapt.
The instant score uses these *projected* features. ``project=false`` feeds the raw features (only
when the two widths match). Open choices of the paper, made explicit here:

* **Is v_t . a_t meaningful?** The paper's scores come from backbones trained end to end with the
  heads; here the extractors are frozen and were trained separately, and the top-k selection passes
  no gradient to the score. The projections still learn it from the classification losses alone on
  synth (instant-only events: the instant head beat the continuous head on 8 of 8 seeds at lr 2e-3,
  4 of 5 at lr 1e-3), so the default stays the paper's loss. ``align_weight > 0`` adds a clip-level
  audio-visual InfoNCE on the projected features (not in the paper) that makes the score a
  correspondence measure directly (5 of 5 seeds at lr 1e-3, gap >= 0.14).
* **k on short feature sequences.** The paper used T = 100 with k = 10; here k is
  ``topk_fraction * T`` rounded (default 0.1: k = 3 on T = 30), at least 1, or an absolute ``topk``.
* **Clips without onsets** fall back to the continuous pool (the onset head still trains on it).
  A fallback head does **not vote** by default: its pool is the continuous head's evidence again,
  so its vote would count the continuous evidence twice (``fallback_votes=true`` lets it vote).
  Fallbacks are counted: training ones in ``epoch_diagnostics()`` (reset each epoch), evaluation
  ones (counted by the fused ``predict``, so once per test clip per evaluation) in
  ``onset_fallback_stats()``. Synth's default onsets are the generator's exact evidence steps (an
  oracle); ``--set data.onset_jitter/onset_miss/onset_false`` make them realistic.
* **Onsets at inference.** ``predict``/``head_logits`` take an optional ``onsets`` keyword
  (``capabilities.onsets``), and the engine passes the test split's onsets; without them every clip
  falls back (and is counted).
* **Single-label prediction** (paper 003 sec. 4.2): "we integrate them by majority voting to output
  a single prediction as P_vote = argmax_k sum_i I(p_i = k) [...] In case of disagreement among the
  layers that no majority consensus exists, the label from the most confident layer is selected."
  The formula is a plurality; the sentence can be read as "no unique plurality" or as "no class with
  more than half of the votes". Both readings are switches (confidence: the head's softmax
  probability of its own argmax; "the most confident layer" is the most confident voting head):
  ``vote_rule=plurality`` (the default: the paper's formula, the sentence as its tie rule): the
  most voted class; when several classes share the top count, the most confident layer's label
  (``vote_tie_break=all``, the sentence's "the most confident layer"; ``tied`` restricts it to the
  heads voting for a tied class). ``vote_rule=majority``: a class voted by more than half of the
  voting heads wins; otherwise the most confident layer's label. The two agree on most clips; on a
  2-1-1-1 or 2-2-1 split they can differ (docs/equivalence.md, event_layers, has the measured effect).
* **What ``predict`` returns.** ``vote_output=probability`` (default): the mean softmax probability
  of the voting heads, with the vote's winner lifted just above the clip's highest mean probability,
  so top-1 accuracy is the vote and top-5 / mAP rank the mean probabilities (the winner's entry is
  the only one the vote changes). ``vote_output=counts`` is the earlier score, ``votes + 0.25 * mean
  probability`` with the winner raised above every class (top-5 and mAP then rank by votes first).
  ``head_logits`` gives the raw per-head logits. On multilabel tasks the default
  (``predict_mode=auto``) returns the mean of the per-head logits instead, since a vote is defined
  for a single label.
* **Multi-label prediction** (paper sec. 4.2, Table 2) is the union of the five heads' argmax
  (``predict_label_set``); every run reports its F1 against the labels beside the usual metrics
  (``heads/union_f1`` per clip, ``heads/union_f1_micro``, ``heads/union_size``; the harness computes
  them for any strategy with named heads). The union is the paper's, over all five heads: an onset
  head on its fallback pool is in it (it adds a label only where its classifier disagrees with the
  continuous head's).
* **Head init.** The paper's visual and audio heads are FCs over ``concat(v, 0)`` / ``concat(0, a)``,
  ``2D`` wide, so PyTorch's default Linear init bounds them by ``1/sqrt(2D)``; written as ``W_v v + b``
  (``D`` wide) the default would give ``1/sqrt(D)``. ``unimodal_head_init=concat`` (default) draws them
  with the 2D bound, as the paper's FC; ``width`` keeps the ``1/sqrt(D)`` bound of earlier versions.
* **Audio-only / video-only columns.** ``unimodal=joint`` (default): those columns are the *joint
  model's* audio and visual heads (trained with the other four, evaluated alone: the audio head for
  audio-only, the visual head for video-only; the three audio-visual heads need both streams). They
  are not the paper's "Audio Only" / "Vision Only" baselines of Table 1, which are separately trained
  single-modality networks. ``unimodal=separate`` trains two more models beside the joint one, each
  its own projection, mean pool and FC on one modality, with their own cross-entropy added to the
  loss (disjoint parameters: the joint model's gradients are unchanged, except through a global
  gradient clip), and reports *them* in the audio-only / video-only columns. They never vote.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avbench.api import Batch, Capabilities, FeatureSpec, Strategy, TaskSpec
from avbench.config import in_range  # value ranges, checked by every --set
from avbench.errors import UserError
from avbench.metrics.multilabel import union_of_argmax

HEADS = ("continuous", "instant", "onset", "visual", "audio")
AV_HEADS = ("continuous", "instant", "onset")


class MeanPool(nn.Module):
    """Mean over the time axis of ``[B, T, D]``."""

    def forward(self, x: Tensor) -> Tensor:
        return x.mean(1)


def resolve_k(num_steps: int, fraction: float, k: int | None = None) -> int:
    """k for the instant head: ``k`` if given, else ``round(fraction * T)``; always in 1..T."""
    if k is None:
        k = int(fraction * num_steps + 0.5)
    return max(1, min(int(k), num_steps))


def instant_scores(zv: Tensor, za: Tensor) -> Tensor:
    """Paper's S_av[t] = z_t^V . z_t^A: ``[B, T]``."""
    return (zv * za).sum(-1)


def topk_weights(scores: Tensor, k: int) -> Tensor:
    """Pooling weights ``[B, T]``: 1/k on each row's ``k`` highest-``scores`` steps, 0 elsewhere."""
    idx = scores.topk(k, dim=1).indices
    return torch.zeros_like(scores, dtype=torch.float32).scatter(1, idx, 1.0 / k)


def onset_weights(onsets: Tensor | None, batch: int, steps: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Pooling weights ``[B, T]`` over the flagged steps; a row with no flag gets uniform weights.

    Returns (weights, fallback ``[B]`` bool).
    """
    if onsets is None:
        return (torch.full((batch, steps), 1.0 / steps, device=device),
                torch.ones(batch, dtype=torch.bool, device=device))
    if tuple(onsets.shape) != (batch, steps):
        raise UserError(f"onsets have shape {tuple(onsets.shape)}, expected {(batch, steps)}")
    mask = onsets.to(torch.bool)
    fallback = ~mask.any(1)
    w = torch.where(fallback.unsqueeze(1), torch.ones_like(mask), mask).float()
    return w / w.sum(1, keepdim=True), fallback


def topk_pool(z: Tensor, scores: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Mean of ``z [B, T, D]`` over each row's ``k`` highest-``scores`` steps; returns (pooled, weights)."""
    w = topk_weights(scores, k)
    return torch.bmm(w.unsqueeze(1).to(z.dtype), z).squeeze(1), w


def onset_pool(z: Tensor, onsets: Tensor | None) -> tuple[Tensor, Tensor]:
    """Mean of ``z [B, T, D]`` over the flagged steps, the mean over all steps for rows with none.

    Returns (pooled ``[B, D]``, fallback ``[B]`` bool).
    """
    w, fallback = onset_weights(onsets, z.shape[0], z.shape[1], z.device)
    return torch.bmm(w.unsqueeze(1).to(z.dtype), z).squeeze(1), fallback


VOTE_RULES = ("majority", "plurality")
VOTE_OUTPUTS = ("counts", "probability")


def vote_scores(logits: Tensor, multilabel: bool = False, tie_break: str = "tied", rule: str = "majority",
                voters: Tensor | None = None, output: str = "counts") -> tuple[Tensor, Tensor]:
    """Vote of ``H`` heads' argmax over ``logits [H, B, C]``.

    Returns (winner ``[B]`` long, scores ``[B, C]`` whose argmax is the winner). Confidence is the
    head's softmax (sigmoid on multilabel tasks) probability of its own argmax. ``voters [H, B]``
    (bool, default all) says which heads vote for each clip; a head that does not vote neither
    counts nor can be the most confident one.

    ``rule="majority"`` (paper 003, sec. 4.1): a class voted by more than half of the voting heads
    wins; without such a majority, the label of the most confident voting head. ``rule="plurality"``:
    the class with the most votes; when several share the top count, ``tie_break`` decides: ``tied``
    takes the most confident head among those voting for a tied class, ``all`` the most confident
    voting head overall.

    ``output="counts"``: scores are ``votes + 0.25 * mean probability`` with the winner raised above
    every class. ``output="probability"``: the voting heads' mean probability with only the winner's
    entry changed, lifted just above the clip's highest mean probability (ranking metrics then read
    probabilities; top-1 is still the vote).
    """
    if rule not in VOTE_RULES:
        raise ValueError(f"rule must be one of {VOTE_RULES}, got {rule!r}")
    if tie_break not in ("tied", "all"):
        raise ValueError(f"tie_break must be 'tied' or 'all', got {tie_break!r}")
    if output not in VOTE_OUTPUTS:
        raise ValueError(f"output must be one of {VOTE_OUTPUTS}, got {output!r}")
    h, b, c = logits.shape
    logits = logits.float()
    voting = (torch.ones(h, b, dtype=torch.bool, device=logits.device) if voters is None
              else voters.to(device=logits.device, dtype=torch.bool))
    if not bool(voting.any(0).all()):
        raise ValueError("every clip needs at least one voting head")
    probs = torch.sigmoid(logits) if multilabel else logits.softmax(-1)
    conf, pred = probs.max(-1)  # [H, B]
    votes = (F.one_hot(pred, c) * voting.unsqueeze(-1)).sum(0).float()  # [B, C]
    top = votes.max(-1, keepdim=True).values
    if rule == "majority":
        n_voting = voting.sum(0).float()  # [B]
        consensus = top.squeeze(1) > n_voting / 2  # [B]
        # With a majority, its class's voters are the eligible heads (any of them names that class);
        # without one, every voting head is.
        eligible = (pred.t() == votes.argmax(-1, keepdim=True)) | ~consensus.unsqueeze(1)
    else:
        tied = votes == top  # [B, C]
        eligible = tied.gather(1, pred.t())  # [B, H]: head votes for a top class
        if tie_break == "all":
            n_tied = tied.sum(-1)
            eligible = torch.where((n_tied > 1).unsqueeze(1), torch.ones_like(eligible), eligible)
    eligible = eligible & voting.t()
    masked = torch.where(eligible, conf.t(), torch.full_like(conf.t(), -1.0))
    best_head = masked.argmax(-1)  # [B]; first head wins an exact confidence tie
    winner = pred.t().gather(1, best_head.unsqueeze(1)).squeeze(1)
    mean_prob = (probs * voting.unsqueeze(-1)).sum(0) / voting.sum(0).unsqueeze(-1)
    if output == "probability":
        lifted = mean_prob.max(-1).values + 1e-6  # above every class, the vote's winner only
        return winner, mean_prob.scatter(1, winner.unsqueeze(1), lifted.unsqueeze(1))
    scores = votes + 0.25 * mean_prob
    win_score = top.squeeze(1) + 0.5 + 0.25 * mean_prob.gather(1, winner.unsqueeze(1)).squeeze(1)
    scores = scores.scatter(1, winner.unsqueeze(1), win_score.unsqueeze(1))
    return winner, scores


@dataclass
class EventLayersConfig:
    embed_dim: int = in_range(512, "[1, inf)")  # projection width D (the paper's backbones emit 512-d steps)
    project: bool = True  # learned per-modality Linear to embed_dim; false needs equal widths
    topk_fraction: float = in_range(0.1, "(0, 1]")  # k = round(fraction * T), at least 1 (paper: k = 10 of T = 100)
    topk: int | None = in_range(None, "[1, inf)")  # absolute k; overrides topk_fraction
    vote_rule: Literal["plurality", "majority"] = "plurality"  # paper 003 sec. 4.2's two readings (docstring)
    vote_tie_break: Literal["all", "tied"] = "all"  # plurality tie: most confident head of all, or of the tied voters
    vote_output: Literal["probability", "counts"] = "probability"  # predict: mean prob, winner lifted; or vote counts
    fallback_votes: bool = False  # does the onset head vote for a clip without onsets (not in the paper)?
    predict_mode: Literal["auto", "vote", "mean"] = "auto"  # auto: vote (single-label), mean (multilabel)
    # Not in the paper (0 = off): a clip-level audio-visual InfoNCE on the mean projected features,
    # weighted into the loss, so that v_t . a_t measures correspondence (see module docstring).
    align_weight: float = in_range(0.0, "[0, inf)")
    align_temperature: float = in_range(0.1, "(0, inf)")
    unimodal_head_init: Literal["concat", "width"] = "concat"  # A/V heads: 1/sqrt(2D) as the paper's FC, or 1/sqrt(D)
    unimodal: Literal["joint", "separate"] = "joint"  # A/V-only columns: the joint model's heads, or separate models


class EventLayers(Strategy):
    """Paper 003's five event-specific heads over projected frozen features (see module docstring)."""

    name = "event_layers"
    Config = EventLayersConfig
    capabilities = Capabilities(
        audio_only=True, video_only=True, fusion=True, heads=True, onsets=True, cross_modal=False,
        embeddings=False, attention=False,
        reasons={
            "cross_modal": "the audio and visual heads read separate projections: a head trained on one "
                           "modality never sees the other",
            "embeddings": "the event layers are pooling operations over one projection; there are no "
                          "per-layer representations",
            "attention": "the event layers pool; they do not attend",
        },
    )

    def __init__(self, cfg: EventLayersConfig, features: FeatureSpec, task: TaskSpec):
        super().__init__(cfg, features, task)
        self.check_compatible(cfg, features, task)
        if cfg.project:
            width = cfg.embed_dim
            self.proj_a: nn.Module = nn.Linear(features.audio_dim, width)
            self.proj_v: nn.Module = nn.Linear(features.video_dim, width)
        else:
            width = features.audio_dim
            self.proj_a = nn.Identity()
            self.proj_v = nn.Identity()
        self.width = width
        self.k = resolve_k(features.num_steps, cfg.topk_fraction, cfg.topk)
        c = task.num_classes
        self.heads = nn.ModuleDict({
            "continuous": nn.Linear(2 * width, c),
            "instant": nn.Linear(2 * width, c),
            "onset": nn.Linear(2 * width, c),
            "visual": nn.Linear(width, c),
            "audio": nn.Linear(width, c),
        })
        if cfg.unimodal_head_init == "concat":
            bound = 1.0 / (2 * width) ** 0.5  # PyTorch's Linear(2D, C) default: U(-1/sqrt(fan_in), +)
            for h in ("visual", "audio"):
                nn.init.uniform_(self.heads[h].weight, -bound, bound)
                nn.init.uniform_(self.heads[h].bias, -bound, bound)
        self.separate: nn.ModuleDict | None = None
        if cfg.unimodal == "separate":
            dims = {"audio": features.audio_dim, "visual": features.video_dim}
            self.separate = nn.ModuleDict({
                h: nn.Sequential(nn.Linear(dims[h], width) if cfg.project else nn.Identity(), MeanPool(),
                                 nn.Linear(width, c))
                for h in ("visual", "audio")})
        self._fb = {"train": [0, 0], "eval": [0, 0]}  # [fallbacks, clips]; tensors or ints
        self._new_eval = True

    @classmethod
    def check_compatible(cls, cfg: EventLayersConfig, features: FeatureSpec, task: TaskSpec) -> None:
        if not cfg.project and features.audio_dim != features.video_dim:
            raise UserError(f"event_layers: project=false needs equal feature widths, but audio is "
                            f"{features.audio_dim}-d and video {features.video_dim}-d")
        if cfg.project and cfg.embed_dim < 1:
            raise UserError(f"event_layers: embed_dim must be at least 1, got {cfg.embed_dim}")
        if not 0 < cfg.topk_fraction <= 1:
            raise UserError(f"event_layers: topk_fraction must be in (0, 1], got {cfg.topk_fraction}")
        if cfg.topk is not None and cfg.topk < 1:
            raise UserError(f"event_layers: topk must be at least 1, got {cfg.topk}")
        if cfg.align_weight < 0 or cfg.align_temperature <= 0:
            raise UserError(f"event_layers: align_weight must be >= 0 and align_temperature > 0 "
                            f"(got {cfg.align_weight}, {cfg.align_temperature})")

    # --- the layers ---------------------------------------------------------------------------
    def _heads(self, audio: Tensor | None, video: Tensor | None, onsets: Tensor | None,
               count: str | None) -> dict[str, Tensor]:
        return self._forward(audio, video, onsets, count)[0]

    def _forward(self, audio: Tensor | None, video: Tensor | None, onsets: Tensor | None,
                 count: str | None) -> tuple[dict[str, Tensor], Tensor | None, Tensor | None, Tensor | None]:
        """Per-head logits, the projected per-step features (zv, za) for the alignment loss, and the
        onset head's fallback mask ``[B]`` (None without both modalities)."""
        if audio is None and video is None:
            raise UserError("event_layers: predict needs at least one modality")
        za = self.proj_a(audio.float()) if audio is not None else None
        zv = self.proj_v(video.float()) if video is not None else None
        out: dict[str, Tensor] = {}
        fallback = None
        if zv is not None and za is not None:
            b, t = zv.shape[:2]
            if za.shape[1] != t:
                raise UserError(f"event_layers: audio has {za.shape[1]} steps and video {t}")
            # The three audio-visual pools as one [B, 3, T] weight matrix (continuous, instant,
            # onset) applied to each modality: the mean of concat(v_t, a_t) over a step set is
            # concat(mean v_t, mean a_t), so nothing [B, T, 2D] is built.
            w_inst = topk_weights(instant_scores(zv, za).float(), min(self.k, t))
            w_ons, fallback = onset_weights(onsets, b, t, zv.device)
            w_cont = torch.full_like(w_inst, 1.0 / t)
            weights = torch.stack([w_cont, w_inst, w_ons], dim=1).to(zv.dtype)
            pv, pa = torch.bmm(weights, zv), torch.bmm(weights, za)  # [B, 3, D]
            pooled = torch.cat([pv, pa], dim=-1)  # concat(v, a), the paper's order
            for i, h in enumerate(AV_HEADS):
                out[h] = self.heads[h](pooled[:, i])
            out["visual"] = self.heads["visual"](pv[:, 0])
            out["audio"] = self.heads["audio"](pa[:, 0])
            if count is not None:
                self._count(count, fallback)
        elif zv is not None:
            out["visual"] = self.heads["visual"](zv.mean(1))
        else:
            out["audio"] = self.heads["audio"](za.mean(1))
        return {h: out[h] for h in HEADS if h in out}, zv, za, fallback

    def _count(self, which: str, fallback: Tensor) -> None:
        fb = self._fb[which]
        fb[0] = fb[0] + fallback.sum().detach()  # stays on the device: no sync per step
        fb[1] = fb[1] + int(fallback.numel())

    # --- training -----------------------------------------------------------------------------
    def training_step(self, batch: Batch, step: int) -> dict[str, Tensor]:
        self._new_eval = True
        logits, zv, za, _ = self._forward(batch.audio, batch.video, batch.onsets, count="train")
        losses = {h: self.loss_fn(v, batch.targets) for h, v in logits.items()}
        if self.separate is not None:  # the separately trained unimodal baselines (disjoint parameters)
            for h, x in (("visual", batch.video), ("audio", batch.audio)):
                if x is not None:
                    losses[f"separate_{h}"] = self.loss_fn(self.separate[h](x.float()), batch.targets)
        out: dict[str, Tensor] = {"loss": torch.stack(list(losses.values())).sum()}
        out.update({f"loss_{h}": v.detach() for h, v in losses.items()})
        if self.cfg.align_weight > 0 and zv is not None and za is not None:
            mv, ma = F.normalize(zv.float().mean(1), dim=-1), F.normalize(za.float().mean(1), dim=-1)
            sim = mv @ ma.t() / self.cfg.align_temperature
            target = torch.arange(sim.shape[0], device=sim.device)
            align = 0.5 * (F.cross_entropy(sim, target) + F.cross_entropy(sim.t(), target))
            out["loss"] = out["loss"] + self.cfg.align_weight * align
            out["loss_align"] = align.detach()
        return out

    def epoch_diagnostics(self) -> dict[str, float]:
        fallbacks, clips = (int(v) for v in self._fb["train"])
        self._fb["train"] = [0, 0]
        return {"onset_fallbacks": float(fallbacks),
                "onset_fallback_rate": fallbacks / clips if clips else 0.0}

    def onset_fallback_stats(self) -> dict[str, float]:
        """Fallbacks of the latest evaluation (fused ``predict`` calls since the last training step)."""
        fallbacks, clips = (int(v) for v in self._fb["eval"])
        return {"eval_onset_fallbacks": float(fallbacks), "eval_clips": float(clips),
                "eval_onset_fallback_rate": fallbacks / clips if clips else 0.0}

    # --- inference ----------------------------------------------------------------------------
    def head_logits(self, audio: Tensor | None, video: Tensor | None,
                    onsets: Tensor | None = None) -> dict[str, Tensor]:
        """Raw logits ``{head: [B, C]}`` of the heads the given modalities define (all five with both)."""
        return self._heads(audio, video, onsets, count=None)

    def predict(self, audio: Tensor | None, video: Tensor | None, onsets: Tensor | None = None) -> Tensor:
        both = audio is not None and video is not None
        if both and self._new_eval:
            self._fb["eval"] = [0, 0]
            self._new_eval = False
        if not both and self.separate is not None:
            h, x = ("audio", audio) if audio is not None else ("visual", video)
            if x is None:
                raise UserError("event_layers: predict needs at least one modality")
            return self.separate[h](x.float())
        logits, _, _, fallback = self._forward(audio, video, onsets, count="eval" if both else None)
        if len(logits) == 1:
            return next(iter(logits.values()))
        stacked = torch.stack(list(logits.values()))
        mode = self.cfg.predict_mode
        if mode == "auto":
            mode = "mean" if self.task.multilabel else "vote"
        if mode == "mean":
            return stacked.float().mean(0)
        return vote_scores(stacked, self.task.multilabel, self.cfg.vote_tie_break, self.cfg.vote_rule,
                           self.voters(list(logits), fallback), self.cfg.vote_output)[1]

    def voters(self, heads: list[str], fallback: Tensor | None) -> Tensor | None:
        """``[H, B]`` bool: which of ``heads`` vote for each clip. The onset head of a clip without
        onsets (its fallback pool is the continuous head's evidence again) votes only with
        ``fallback_votes=true``; None means every head votes."""
        if fallback is None or self.cfg.fallback_votes or "onset" not in heads:
            return None
        v = torch.ones(len(heads), fallback.shape[0], dtype=torch.bool, device=fallback.device)
        v[heads.index("onset")] = ~fallback
        return v

    def predict_label_set(self, audio: Tensor | None, video: Tensor | None,
                          onsets: Tensor | None = None) -> Tensor:
        """Paper 003's multi-label prediction: the union of the per-head argmax, ``[B, C]`` bool."""
        logits = self.head_logits(audio, video, onsets)
        device = next(iter(logits.values())).device
        return torch.from_numpy(union_of_argmax(logits)).to(device)
