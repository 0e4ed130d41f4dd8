"""The training and evaluation engine: one seed of one strategy on one cache.

The engine owns everything that must be identical across strategies for a comparison to be fair:
sampling, the recipe augmentations, the optimizer and schedule, precision, evaluation columns and
metrics, checkpoints, and throughput measurement. The strategy owns its model and loss.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor, nn

from avbench.api import Batch, Strategy
from avbench.cache.reader import FeatureCache
from avbench.errors import UserError
from avbench.metrics.classification import classification_metrics
from avbench.metrics.retrieval import retrieval_metrics, stratified_subset
from avbench.train import augment, sampling
from avbench.train.checkpoint import load_checkpoint, restore_rng, save_checkpoint
from avbench.train.data import BatchSource
from avbench.train.recipe import Recipe

COLUMNS = ("audio", "video", "fusion")
CAPABILITY_OF = {"audio": "audio_only", "video": "video_only", "fusion": "fusion"}


@dataclass
class EvalResult:
    metrics: dict[str, float]  # "audio/acc", "fusion/mAP", "retrieval/a2v_R@1", ...
    logits: dict[str, np.ndarray]  # column -> [N, C] float32
    heads: dict[str, np.ndarray]  # named per-head logits (strategies with heads)
    labels: np.ndarray
    skipped: dict[str, str]  # column or analysis -> reason
    clips_per_s: float


@dataclass
class FitResult:
    history: list[dict[str, float]] = field(default_factory=list)
    final: EvalResult | None = None
    train_clips_per_s: float = float("nan")
    eval_clips_per_s: float = float("nan")
    train_seconds: float = 0.0
    resumed_from_epoch: int | None = None


def set_seed(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def autocast(device: torch.device, amp: str):
    if amp == "fp32":
        return torch.autocast(device_type=device.type, enabled=False)
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _TrainStep(nn.Module):
    """Wraps ``training_step`` in ``forward`` so DistributedDataParallel can hook its gradients."""

    def __init__(self, strategy: Strategy):
        super().__init__()
        self.strategy = strategy

    def forward(self, batch: Batch, step: int) -> dict[str, Tensor]:
        return self.strategy.training_step(batch, step)


class Engine:
    def __init__(self, strategy: Strategy, cache: FeatureCache, recipe: Recipe, *, seed: int,
                 device: str | torch.device = "cpu", protocol: str = "standard",
                 train_modality: str | None = None, checkpoint_path: Path | None = None,
                 progress: bool = True, rank: int = 0, world: int = 1,
                 on_epoch: Callable[[int, dict[str, float]], None] | None = None):
        self.strategy = strategy
        self.cache = cache
        self.recipe = recipe
        self.seed = seed
        self.device = torch.device(device)
        self.protocol = protocol
        self.train_modality = train_modality
        self.checkpoint_path = checkpoint_path
        self.progress = progress and rank == 0
        self.rank, self.world = rank, world
        self.on_epoch = on_epoch
        caps = strategy.capabilities
        if protocol == "cross-modal":
            if train_modality not in ("audio", "video"):
                raise UserError("--protocol cross-modal needs --train-modality audio or video")
            if not caps.cross_modal:
                raise UserError(f"{strategy.name} cannot run the cross-modal protocol: {caps.why_not('cross_modal')}")
            strategy.train_modality = train_modality
        elif protocol != "standard":
            raise UserError(f"unknown protocol '{protocol}' (standard or cross-modal)")
        self.train_split = cache.train_split()
        self.test_split = cache.test_split()
        self.train_src = BatchSource(self.train_split, self.device, recipe.device_resident)
        self.test_src = BatchSource(self.test_split, self.device, recipe.device_resident)
        self.weights = sampling.balanced_weights(self.train_split.labels) if recipe.balanced_sampling else None
        # Denormal floats (tiny Adam moments late in training) slow x86 CPUs by an order of magnitude.
        torch.set_flush_denormal(True)
        strategy.to(self.device)
        self.step_module: nn.Module = _TrainStep(strategy)
        if world > 1:
            from torch.nn.parallel import DistributedDataParallel

            self.step_module = DistributedDataParallel(
                self.step_module, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=True)
        self._compiled = False

    # --- batches ----------------------------------------------------------------------------------
    def make_batch(self, raw: dict[str, Tensor], train: bool, step: int = 0) -> Batch:
        r = self.recipe
        audio = raw["audio"].float()
        video = raw["video"].float()
        labels = raw["labels"]
        onsets = raw.get("onsets")
        if r.l2_norm:
            audio, video = augment.l2_normalize_steps(audio), augment.l2_normalize_steps(video)
        ls = r.label_smoothing
        if train and self.strategy.stage_uses_labels(self.strategy.stage):
            rng = np.random.default_rng([self.seed, step, self.rank])
            if r.mixup_prob > 0:
                audio, video, targets, partner, lam = augment.mixup(audio, video, labels, r.mixup_prob,
                                                                    r.mixup_alpha, ls, rng)
                if onsets is not None:
                    onsets = onsets | (onsets[partner] & (lam < 1)[:, None])
            else:
                targets = augment.smooth_targets(labels, ls)
            if r.time_roll:
                shift = augment.random_shifts(labels.shape[0], audio.shape[1], rng)
                audio, video, onsets = augment.time_roll(shift, audio, video, onsets)
        elif train and r.time_roll:
            rng = np.random.default_rng([self.seed, step, self.rank])
            targets = labels.float()
            shift = augment.random_shifts(labels.shape[0], audio.shape[1], rng)
            audio, video, onsets = augment.time_roll(shift, audio, video, onsets)
        else:
            targets = labels.float()
        # The cross-modal protocol hides one modality from supervised training only: unsupervised
        # stages (paired pretraining) see both.
        if train and self.strategy.stage_uses_labels(self.strategy.stage):
            if self.strategy.train_modality == "audio":
                video = None
            elif self.strategy.train_modality == "video":
                audio = None
        return Batch(audio=audio, video=video, targets=targets, labels=labels, present=raw.get("present"),
                     onsets=onsets, index=raw.get("index"))

    def _epoch_batches(self, epoch: int) -> list[np.ndarray]:
        order = sampling.epoch_order(len(self.train_split), epoch, self.seed, self.weights)
        return sampling.batches(order, self.recipe.batch_size, self.recipe.drop_last, self.rank, self.world)

    # --- training ---------------------------------------------------------------------------------
    def fit(self, resume: bool = False) -> FitResult:
        set_seed(self.seed)
        r = self.recipe
        result = FitResult()
        state = None
        if resume and self.checkpoint_path is not None and self.checkpoint_path.exists():
            state = load_checkpoint(self.checkpoint_path, self.strategy)
            result.history = state["history"]
            result.resumed_from_epoch = len(result.history)
        if r.compile and not self._compiled:
            self.step_module = torch.compile(self.step_module)
            self._compiled = True
        stages = self.strategy.stages
        global_epoch = 0
        global_step = 0
        train_clips, train_time = 0, 0.0
        for stage_index, stage in enumerate(stages):
            self.strategy.begin_stage(stage)
            n_epochs = self.strategy.stage_epochs(stage, r.epochs)
            optimizer = torch.optim.Adam(list(self.strategy.trainable_parameters()), lr=r.lr,
                                         betas=(r.beta1, r.beta2), weight_decay=r.weight_decay)
            for epoch in range(n_epochs):
                if state is not None and global_epoch < state["global_epoch"]:
                    if global_epoch == state["global_epoch"] - 1:  # the last finished epoch
                        optimizer.load_state_dict(state["optimizer"])
                        global_step = state["global_step"]
                        restore_rng(state["rng"])
                    global_epoch += 1
                    continue
                for group in optimizer.param_groups:
                    group["lr"] = r.lr * (r.lr_decay ** epoch)
                t0 = time.perf_counter()
                stats, n_clips, global_step = self._train_epoch(optimizer, stage, global_epoch, global_step)
                synchronize(self.device)
                dt = time.perf_counter() - t0
                train_clips += n_clips
                train_time += dt
                row = {"epoch": global_epoch, "stage": stage_index, "lr": optimizer.param_groups[0]["lr"],
                       "train_clips_per_s": n_clips / dt if dt > 0 else float("nan"), **stats}
                row.update({f"diag/{k}": float(v) for k, v in self.strategy.epoch_diagnostics().items()})
                last = stage_index == len(stages) - 1 and epoch == n_epochs - 1
                if self.strategy.stage_uses_labels(stage) and (r.eval_every_epoch or last):
                    ev = self.evaluate(retrieval=last)
                    row.update(ev.metrics)
                    row["eval_clips_per_s"] = ev.clips_per_s
                    if last:
                        result.final = ev
                result.history.append(row)
                if self.on_epoch is not None and self.rank == 0:
                    self.on_epoch(global_epoch, row)
                if self.checkpoint_path is not None and self.rank == 0:
                    save_checkpoint(self.checkpoint_path, self.strategy, optimizer, global_epoch + 1,
                                    global_step, result.history)
                global_epoch += 1
        if result.final is None:  # resumed after the last epoch, or nothing trained with labels
            result.final = self.evaluate(retrieval=True)
        result.train_seconds = train_time
        result.train_clips_per_s = train_clips / train_time if train_time > 0 else float("nan")
        result.eval_clips_per_s = result.final.clips_per_s
        return result

    def _train_epoch(self, optimizer: torch.optim.Optimizer, stage: str, epoch: int,
                     step: int) -> tuple[dict[str, float], int, int]:
        from tqdm.auto import tqdm

        self.strategy.train()
        index_batches = self._epoch_batches(epoch)
        sums: dict[str, Tensor] = {}
        n_clips = 0
        bar = tqdm(total=len(index_batches), desc=f"epoch {epoch + 1} [{stage}]", unit="step",
                   disable=not self.progress, leave=False, dynamic_ncols=True)
        for raw in self.train_src.iterate(index_batches):
            batch = self.make_batch(raw, train=True, step=step)
            with autocast(self.device, self.recipe.amp):
                out = self.step_module(batch, step)
            loss = out["loss"]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if self.recipe.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(self.strategy.trainable_parameters(), self.recipe.grad_clip)
            optimizer.step()
            self.strategy.after_optimizer_step(step)
            for k, v in out.items():  # accumulate on the device: no host sync per step
                if isinstance(v, Tensor) and v.dim() == 0:
                    sums[k] = sums.get(k, torch.zeros((), device=self.device)) + v.detach().float()
            n_clips += batch.size * self.world
            step += 1
            bar.update(1)
            if self.progress and step % 20 == 0:
                bar.set_postfix(loss=f"{loss.item():.4f}")
        bar.close()
        steps = max(1, len(index_batches))
        stats = {f"train/{k}": float(v) / steps for k, v in sums.items()}
        return stats, n_clips, step

    # --- evaluation -------------------------------------------------------------------------------
    def columns(self) -> tuple[list[str], dict[str, str]]:
        """Evaluation columns the strategy supports, and the reasons for the rest."""
        caps = self.strategy.capabilities
        cols, skipped = [], {}
        if self.protocol == "cross-modal":
            return ["audio", "video"], {"fusion": "the cross-modal protocol tests one modality at a time"}
        for col in COLUMNS:
            if getattr(caps, CAPABILITY_OF[col]):
                cols.append(col)
            else:
                skipped[col] = caps.why_not(CAPABILITY_OF[col])
        return cols, skipped

    @torch.no_grad()
    def evaluate(self, retrieval: bool = True) -> EvalResult:
        self.strategy.eval()
        cols, skipped = self.columns()
        n = len(self.test_split)
        bs = self.recipe.eval_batch_size
        logits: dict[str, list[np.ndarray]] = {c: [] for c in cols}
        heads: dict[str, list[np.ndarray]] = {}
        labels = []
        want_heads = self.strategy.capabilities.heads
        synchronize(self.device)
        t0 = time.perf_counter()
        for raw in self.test_src.iterate([np.arange(s, min(n, s + bs)) for s in range(0, n, bs)]):
            b = self.make_batch(raw, train=False)
            with autocast(self.device, self.recipe.amp):
                for c in cols:
                    a = b.audio if c in ("audio", "fusion") else None
                    v = b.video if c in ("video", "fusion") else None
                    logits[c].append(self.strategy.predict(a, v).float().cpu().numpy())
                if want_heads:
                    for k, v in self.strategy.head_logits(b.audio, b.video).items():
                        heads.setdefault(k, []).append(v.float().cpu().numpy())
            labels.append(b.labels.cpu().numpy())
        synchronize(self.device)
        dt = time.perf_counter() - t0
        lab = np.concatenate(labels) if labels else np.zeros((0, self.strategy.task.num_classes))
        out_logits = {c: np.concatenate(v) for c, v in logits.items()}
        metrics: dict[str, float] = {}
        for c, lg in out_logits.items():
            for k, v in classification_metrics(lg, lab).items():
                metrics[f"{c}/{k}"] = v
        if retrieval:
            if self.strategy.capabilities.embeddings and self.protocol == "standard":
                metrics.update({f"retrieval/{k}": v for k, v in self._retrieval(lab).items()})
            elif not self.strategy.capabilities.embeddings:
                skipped["retrieval"] = self.strategy.capabilities.why_not("embeddings")
        return EvalResult(metrics=metrics, logits=out_logits, heads={k: np.concatenate(v) for k, v in heads.items()},
                          labels=lab, skipped=skipped, clips_per_s=n * max(1, len(cols)) / dt if dt > 0 else float("nan"))

    def _retrieval(self, labels: np.ndarray) -> dict[str, float]:
        """A->V and V->A on the stratified subset, with the last layer's mean-pooled representations."""
        idx = stratified_subset(labels, self.recipe.retrieval_per_class, seed=0)
        if len(idx) < 2:
            return {}
        raw = self.test_split.gather(idx)
        raw = {k: v.to(self.device) for k, v in raw.items()}
        b = self.make_batch(raw, train=False)
        with autocast(self.device, self.recipe.amp):
            ea = list(self.strategy.embed(b.audio, None).values())[-1].float().mean(1)
            ev = list(self.strategy.embed(None, b.video).values())[-1].float().mean(1)
        if ea.shape != ev.shape:
            return {}
        return retrieval_metrics(ea.cpu().numpy(), ev.cpu().numpy())


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def environment() -> dict[str, Any]:
    import platform

    import avbench

    return {"avbench": avbench.__version__, "torch": torch.__version__, "python": platform.python_version(),
            "numpy": np.__version__, "platform": platform.platform()}
