"""The training and evaluation engine: one seed of one strategy on one cache.

The engine owns everything that must be identical across strategies for a comparison to be fair:
sampling, the recipe augmentations, the optimizer and schedule, precision, evaluation columns and
metrics, checkpoints, and throughput measurement. The strategy owns its model and loss.

Process-wide settings are in ``avbench/train/process.py`` and evaluation in ``avbench/train/evaluate.py``.
What is left (under 500 lines) is one class: batch planning, the step and the loop share the
engine's state (recipe, rows, draws, step module), and splitting them would pass that state around.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from avbench import profile as prof
from avbench.api import CAPABILITY_OF, COLUMNS, Batch, Strategy, check_protocol
from avbench.cache.reader import FeatureCache
from avbench.hardware import resolve_precision
from avbench.train import augment, distributed, sampling
from avbench.train import evaluate as evaluation
from avbench.train import schedule as sched_mod
from avbench.train.checkpoint import load_checkpoint, restore_rng, save_checkpoint
from avbench.train.data import BatchSource
from avbench.train.evaluate import EvalResult, eval_batch
from avbench.train.process import autocast, describe_device, set_seed, synchronize, to_device, tune_host_allocator
from avbench.train.recipe import Recipe, clip_groups

# Re-exported: callers have long imported these from the engine.
__all__ = ["CAPABILITY_OF", "COLUMNS", "Engine", "EvalResult", "FitResult", "StepPlan", "TrainStep", "autocast",
           "describe_device", "set_seed", "synchronize", "to_device", "tune_host_allocator"]


@dataclass
class FitResult:
    """What ``Engine.fit`` returns: per-epoch history rows, the final test evaluation, throughput."""

    history: list[dict[str, float]] = field(default_factory=list)
    final: EvalResult | None = None
    train_clips_per_s: float = float("nan")
    eval_clips_per_s: float = float("nan")
    train_seconds: float = 0.0
    resumed_from_epoch: int | None = None
    validation: dict[str, Any] = field(default_factory=dict)  # curve and convergence (train/schedule.py)


@dataclass
class StepPlan:
    """One training step for this rank: which rows to gather and the recipe's random draws.

    The draws (mixup partner and lambda, time roll) are made for the whole global batch from a
    generator seeded by (seed, step) and then sliced, so a clip is augmented identically whatever
    the number of ranks. With one rank ``partner`` indexes the batch itself (the reference recipe);
    with several, partners held by other ranks are gathered as extra rows after this rank's own.
    """

    rows: np.ndarray  # this rank's clips (split row indices), in global-batch order
    fetch: np.ndarray  # rows to gather: ``rows``, then any extra mixup partners
    partner: np.ndarray | None  # per own clip: position of its partner among the fetched rows
    lam: np.ndarray | None  # per own clip: mixup weight (1 = not mixed)
    shift: np.ndarray | None  # per own clip: time roll
    global_size: int
    loss_scale: float = 1.0  # n_rank * world / global_size: DDP's gradient average = the global mean


class TrainStep(nn.Module):
    """Wraps ``training_step`` in ``forward`` so DistributedDataParallel can hook its gradients."""

    def __init__(self, strategy: Strategy):
        super().__init__()
        self.strategy = strategy

    def forward(self, batch: Batch, step: int) -> dict[str, Tensor]:
        return self.strategy.training_step(batch, step)


class Engine:
    """Trains one seed of one strategy on one cache with one recipe, and evaluates it.

    Build it with the strategy (already constructed and seeded), the opened cache and the recipe;
    ``fit`` runs every stage and epoch and returns a ``FitResult``; ``evaluate`` scores the test split
    (or the validation split with ``evaluate_on="val"``, used by tuning, which never opens test).
    The pieces ``fit`` is made of are public so tools can drive them (``avbench bench`` times them):
    ``global_batches``/``plan_step``/``make_batch`` (what a step trains on), ``make_optimizer``,
    ``wrap_step_module`` (DDP and ``torch.compile``), ``train_step`` (one optimizer step),
    ``train_epoch`` (one epoch of steps) and ``using_recipe`` (another recipe for a block).
    """

    def __init__(self, strategy: Strategy, cache: FeatureCache, recipe: Recipe, *, seed: int,
                 device: str | torch.device = "cpu", protocol: str = "standard",
                 train_modality: str | None = None, checkpoint_path: Path | None = None,
                 progress: bool = True, rank: int = 0, world: int = 1,
                 on_epoch: Callable[[int, dict[str, float]], None] | None = None,
                 evaluate_on: str = "test"):
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
        # "auto" precision becomes bf16 or fp32 here, once, printed once (avbench.hardware).
        self.precision, self.precision_reason = resolve_precision(recipe.amp, self.device, announce=self.progress)
        if world > 1:  # every rank trains in rank 0's precision
            self.precision, self.precision_reason = distributed.all_gather_objects((self.precision, self.precision_reason))[0]
        self.recipe = recipe = replace(recipe, amp=self.precision)
        check_protocol(type(strategy), protocol, train_modality)  # resolve checked it too, for CLI users
        if protocol == "cross-modal":
            strategy.train_modality = train_modality
        self.train_split = cache.train_split()
        # evaluate_on="val" (tuning): the validation split stands in for test, which is never opened.
        self.test_split = cache.val_split() if evaluate_on == "val" else cache.test_split()
        # Each rank holds its own copy of a resident split: on a shared CPU host only when they all fit.
        share = 1.0 / world if self.device.type == "cpu" else 1.0
        self.train_src = BatchSource(self.train_split, self.device, recipe.device_resident, share=share)
        self.test_src = BatchSource(self.test_split, self.device, recipe.device_resident, share=share)
        # Rows whose extraction failed (no modality present) are neither trained nor evaluated on.
        self.train_rows = np.flatnonzero(self.train_split.present.any(axis=1))
        self.test_rows = np.flatnonzero(self.test_split.present.any(axis=1))
        self.excluded = {"train": len(self.train_split) - len(self.train_rows),
                         "test": len(self.test_split) - len(self.test_rows)}
        self.train_rows = sched_mod.training_rows(cache, recipe, self.train_rows, evaluate_on)
        labels = self.train_split.labels[self.train_rows]
        # Always computed: each stage's recipe says whether its batches use them (global_batches).
        self.weights = sampling.balanced_weights(labels)
        self.num_steps = cache.features.num_steps
        # Denormal floats (tiny Adam moments late in training) slow x86 CPUs by an order of magnitude.
        torch.set_flush_denormal(True)
        if self.device.type == "cpu":
            tune_host_allocator()
        strategy.to(self.device)
        self.step_module: nn.Module = TrainStep(strategy)
        self.validator = sched_mod.Validator(self, evaluate_on)
        self.sched = sched_mod.EpochSchedule(recipe, 0, 0, 2**62, 2**62)  # fit() sets one per epoch

    def wrap_step_module(self, plain: bool = False) -> nn.Module:
        """The module ``train_step`` calls: DDP around the strategy when distributed (rebuilt per stage,
        since a stage may freeze or unfreeze parameters), compiled when the recipe asks. ``plain``: the
        strategy's ``training_step`` alone, neither DDP nor compiled (FLOP counting, memory probing)."""
        module: nn.Module = TrainStep(self.strategy)
        if plain:
            self.step_module = module
            return module
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            # Parameters that require gradients but are not trainable_parameters() have their own
            # optimizer inside training_step (vq_codes' CLUB estimators): DDP must not hook them, so
            # each rank fits its estimator on its own share of the batch.
            trainable = {id(p) for p in self.strategy.trainable_parameters()}
            inner = [f"strategy.{n}" for n, p in self.strategy.named_parameters()
                     if p.requires_grad and id(p) not in trainable]
            if inner:
                DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(module, inner)
            module = DistributedDataParallel(
                module, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=True)  # UAVM leaves one modality's layers unused in every step
        if self.recipe.compile:
            module = torch.compile(module)
        self.step_module = module
        return module

    def make_optimizer(self) -> torch.optim.Optimizer:
        """Adam over the trainable parameters; the fused kernel (one pass over all parameters) on CPU
        and CUDA, where the for-loop version costs several passes over ~100M parameters per step."""
        r = self.recipe
        params = list(self.strategy.trainable_parameters())
        if r.optimizer == "sgd":  # recipe "scenic": Scenic's "momentum" optimizer
            return torch.optim.SGD(params, lr=r.lr, momentum=r.momentum, weight_decay=r.weight_decay)
        kw: dict[str, Any] = dict(lr=r.lr, betas=(r.beta1, r.beta2), weight_decay=r.weight_decay)
        if params and self.device.type in ("cpu", "cuda") and all(p.is_floating_point() for p in params):
            kw["fused"] = True
        return torch.optim.Adam(params, **kw)

    # --- batches ----------------------------------------------------------------------------------
    def draws(self, step: int, size: int, labelled: bool, partner_range: int | None = None
              ) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
        """The recipe's random draws for a global batch of ``size``: (partner, lambda, shift).
        Partners index the batch, or ``range(partner_range)`` (the training rows, ``mixup_partner="split"``).

        Drawn in the order of ``augment.mixup`` then ``augment.random_shifts`` from a generator seeded
        by (seed, step), so one seed gives one sequence of augmentations for any number of ranks.
        """
        r = self.recipe
        rng = np.random.default_rng([self.seed, step, 0])
        partner = lam = shift = None
        if labelled and r.mixup_prob > 0:
            partner = rng.integers(0, size if partner_range is None else partner_range, size)
            lam = rng.beta(r.mixup_alpha, r.mixup_alpha, size) if r.mixup_alpha > 0 else np.ones(size)
            lam = np.where(rng.random(size) < r.mixup_prob, lam, 1.0)
        if r.time_roll:
            shift = augment.random_shifts(size, self.num_steps, rng).numpy()
        return partner, lam, shift

    def plan_step(self, step: int, global_rows: np.ndarray, labelled: bool | None = None) -> StepPlan:
        """This rank's share of a global batch, with the draws sliced to it (see StepPlan)."""
        if labelled is None:
            labelled = self.strategy.stage_uses_labels(self.strategy.stage)
        glob = np.asarray(global_rows)
        size = len(glob)
        split_partner = self.recipe.mixup_partner == "split"
        partner_g, lam_g, shift_g = self.draws(step, size, labelled, len(self.train_rows) if split_partner else None)
        lo, hi = distributed.shard(size, self.rank, self.world)
        n = hi - lo
        rows = glob[lo:hi]
        lam = None if lam_g is None else lam_g[lo:hi]
        shift = None if shift_g is None else shift_g[lo:hi]
        fetch, partner = rows, None
        if partner_g is not None:
            p = partner_g[lo:hi]
            if split_partner:
                fetch, partner = augment.split_partners(rows, self.train_rows[p], lam)
            elif self.world == 1:
                partner = p
            else:
                local = (p >= lo) & (p < hi)
                remote = ~local & (lam < 1)  # an unmixed clip's partner has weight 0: use itself
                ext, inv = np.unique(p[remote], return_inverse=True)
                partner = np.where(local, p - lo, np.arange(n))
                partner[remote] = n + inv
                fetch = np.concatenate([rows, glob[ext]])
        return StepPlan(rows=rows, fetch=fetch, partner=partner, lam=lam, shift=shift, global_size=size,
                        loss_scale=n * self.world / size)

    def make_batch(self, raw: dict[str, Tensor], train: bool, step: int = 0, plan: StepPlan | None = None) -> Batch:
        """Gathered rows -> a Batch: per-step L2 norm, then (training) mixup, label smoothing, time roll.

        ``plan`` comes from ``plan_step``; without one, ``raw`` is taken as a whole one-rank batch.
        Evaluation (``train=False``) only normalises: ``avbench.train.evaluate.eval_batch``.
        """
        r = self.recipe
        if not train:
            return eval_batch(raw, r)
        audio = raw["audio"].float()
        video = raw["video"].float()
        labels = raw["labels"]
        onsets = raw.get("onsets")
        present, index = raw.get("present"), raw.get("index")
        if r.l2_norm:
            audio, video = augment.l2_normalize_steps(audio), augment.l2_normalize_steps(video)
        labelled = self.strategy.stage_uses_labels(self.strategy.stage)
        if plan is None:
            size = labels.shape[0]
            partner, lam, shift = self.draws(step, size, labelled)
            plan = StepPlan(rows=np.arange(size), fetch=np.arange(size), partner=partner, lam=lam,
                            shift=shift, global_size=size)
        n = len(plan.rows)
        own = slice(0, n)
        if plan.lam is not None:  # feature mixup: the formulas of augment.mixup, partner rows from the plan
            dev = labels.device
            p = to_device(plan.partner, dev)
            lam = to_device(plan.lam.astype(np.float32), dev)
            lab = labels.float()
            ls = r.label_smoothing
            targets = augment.mixed_targets(lab[own], lab[p], lam, ls, r.label_arithmetic)

            def mix(x: Tensor) -> Tensor:
                w = lam.to(x.dtype)[:, None, None]
                return w * x[own] + (1 - w) * x[p]

            audio, video = mix(audio), mix(video)
            if onsets is not None:
                onsets = onsets[own] | (onsets[p] & (lam < 1)[:, None])
        else:
            audio, video = audio[own], video[own]
            onsets = None if onsets is None else onsets[own]
            targets = (augment.smooth_targets(labels[own], r.label_smoothing, r.label_arithmetic) if labelled
                       else labels[own].float())
        labels = labels[own]
        present = None if present is None else present[own]
        index = None if index is None else index[own]
        if plan.shift is not None:
            audio, video, onsets = augment.time_roll(to_device(plan.shift, audio.device), audio, video, onsets)
        # The cross-modal protocol hides one modality from supervised training only: unsupervised
        # stages (paired pretraining) see both.
        if labelled:
            if self.strategy.train_modality == "audio":
                video = None
            elif self.strategy.train_modality == "video":
                audio = None
        return Batch(audio=audio, video=video, targets=targets, labels=labels, present=present,
                     onsets=onsets, index=index)

    def global_batches(self, epoch: int) -> list[np.ndarray]:
        """The epoch's global batches (every rank computes the same list)."""
        weights = self.weights if self.recipe.balanced_sampling else None  # the stage's recipe decides
        order = self.train_rows[sampling.epoch_order(len(self.train_rows), epoch, self.seed, weights)]
        glob = sampling.batches(order, self.recipe.batch_size, self.recipe.drop_last)
        return [g for g in glob if len(g) >= self.world]  # every rank needs at least one clip

    def epoch_plans(self, epoch: int, step: int) -> list[StepPlan]:
        labelled = self.strategy.stage_uses_labels(self.strategy.stage)
        return [self.plan_step(step + i, g, labelled) for i, g in enumerate(self.global_batches(epoch))]

    # --- training ---------------------------------------------------------------------------------
    def train_step(self, batch: Batch, step: int, optimizer: torch.optim.Optimizer,
                   loss_scale: float = 1.0) -> dict[str, Tensor]:
        """One optimizer step: autocast forward through ``step_module``, backward, clip, update."""
        with autocast(self.device, self.recipe.amp):
            out = self.step_module(batch, step)
        loss = out["loss"]
        optimizer.zero_grad(set_to_none=self.recipe.idle_grads == "none")  # "zero": Adam moves idle params
        (loss * loss_scale if loss_scale != 1.0 else loss).backward()
        if self.recipe.grad_clip > 0:  # "module": each group's norm on its own (CMG clips per model)
            groups = (clip_groups(self.strategy) if self.recipe.grad_clip_scope == "module"
                      else [self.strategy.trainable_parameters()])
            for group in groups:
                torch.nn.utils.clip_grad_norm_(group, self.recipe.grad_clip)
        optimizer.step()
        self.strategy.after_optimizer_step(step)
        return out

    def set_batch_size(self, batch_size: int) -> None:
        """Train with another batch size from now on (``avbench bench --find-batch-size`` picks one after
        the engine is built); the precision resolved at construction is kept."""
        self.recipe = replace(self.recipe, batch_size=batch_size)

    @contextlib.contextmanager
    def using_step_module(self, module: nn.Module) -> Iterator[nn.Module]:
        """``train_step`` calls ``module`` inside the block (a reference configuration), the wrapped one after."""
        saved, self.step_module = self.step_module, module
        try:
            yield module
        finally:
            self.step_module = saved

    @contextlib.contextmanager
    def using_recipe(self, recipe: Recipe) -> Iterator[Recipe]:
        """``self.recipe`` is ``recipe`` inside the block, and what it was before after it."""
        saved, self.recipe = self.recipe, recipe
        try:
            yield recipe
        finally:
            self.recipe = saved

    def fit(self, resume: bool = False) -> FitResult:
        """Train every stage of the strategy, epoch by epoch, and evaluate; the run's ``FitResult``.

        Per stage: ``begin_stage``, the stage's recipe (``stage_recipe``; evaluation always uses the
        run's), its length (``schedule.stage_length``), a fresh optimizer over the parameters still
        trainable, and the step module rebuilt (DDP/compile). Per epoch: the learning-rate schedule,
        ``train_epoch``, diagnostics, the validation curve, and (supervised stages, every epoch or the
        last) ``evaluate``. The checkpoint is written after each epoch, before ``on_epoch`` is called,
        so an epoch whose metrics could not be sent is not lost. With ``resume`` the finished epochs of
        the checkpoint are skipped and the optimizer, step counter, generators and validator restored:
        a resumed run continues exactly. ``step`` (what ``training_step`` and ``after_optimizer_step``
        receive) counts optimizer steps across all stages, from 0.
        """
        set_seed(self.seed)
        r = self.recipe
        result = FitResult()
        state = None
        if resume and self.checkpoint_path is not None and self.checkpoint_path.exists():
            state = load_checkpoint(self.checkpoint_path, self.strategy)
            result.history = state["history"]
            result.resumed_from_epoch = len(result.history)
        stages = self.strategy.stages
        global_epoch = 0
        global_step = 0
        train_clips, train_time = 0, 0.0
        base = self.recipe
        try:
            for stage_index, stage in enumerate(stages):
                self.strategy.begin_stage(stage)
                # The stage's recipe drives its optimizer, schedule, clipping and batches; evaluation
                # always runs under the run's recipe.
                self.recipe = r = self.strategy.stage_recipe(stage, base)
                spe = len(self.global_batches(0))
                n_epochs, stage_steps = sched_mod.stage_length(self.strategy, stage, r, spe)
                optimizer = self.make_optimizer()
                wrapped = False
                for epoch in range(n_epochs):
                    if state is not None and global_epoch < state["global_epoch"]:
                        if global_epoch == state["global_epoch"] - 1:  # the last finished epoch
                            optimizer.load_state_dict(state["optimizer"])
                            global_step = state["global_step"]
                            restore_rng(state["rng"])
                            self.validator.restore(state.get("validation"))  # older checkpoints: none
                        global_epoch += 1
                        continue
                    if not wrapped:
                        self.wrap_step_module()
                        wrapped = True
                    self.sched = sched_mod.EpochSchedule(r, epoch, global_step, spe, stage_steps,
                                                         self.strategy.stage_uses_labels(stage))
                    self.validator.begin(self.sched)
                    t0 = time.perf_counter()
                    with prof.phase("training"):  # the validation curve inside it is charged to "validation"
                        stats, n_clips, global_step = self.train_epoch(optimizer, stage, global_epoch, global_step)
                        synchronize(self.device)
                    dt = time.perf_counter() - t0 - self.validator.take_seconds()  # training time only
                    train_clips += n_clips
                    train_time += dt
                    row = {"epoch": global_epoch, "stage": stage_index, "lr": optimizer.param_groups[0]["lr"],
                           "train_clips_per_s": n_clips / dt if dt > 0 else float("nan"), **stats}
                    row.update({f"diag/{k}": float(v) for k, v in self.strategy.epoch_diagnostics().items()})
                    row.update(self.validator.last())
                    last = stage_index == len(stages) - 1 and epoch == n_epochs - 1
                    if self.strategy.stage_uses_labels(stage) and (r.eval_every_epoch or last):
                        with self.using_recipe(base):
                            ev = self.evaluate(retrieval=last)
                        row.update(ev.metrics)
                        row["eval_clips_per_s"] = ev.clips_per_s
                        if last:
                            result.final = ev
                    result.history.append(row)
                    # The checkpoint first: an epoch whose metrics could not be sent is not lost.
                    if self.checkpoint_path is not None and self.rank == 0:
                        with prof.phase("artifacts"):
                            save_checkpoint(self.checkpoint_path, self.strategy, optimizer, global_epoch + 1,
                                            global_step, result.history, self.validator.state())
                    if self.on_epoch is not None and self.rank == 0:
                        self.on_epoch(global_epoch, row)
                    global_epoch += 1
        finally:
            self.recipe = base
        if result.final is None:  # resumed after the last epoch, or nothing trained with labels
            result.final = self.evaluate(retrieval=True)
        result.validation = self.validator.summary()
        result.train_seconds = train_time
        result.train_clips_per_s = train_clips / train_time if train_time > 0 else float("nan")
        result.eval_clips_per_s = result.final.clips_per_s
        return result

    def train_epoch(self, optimizer: torch.optim.Optimizer, stage: str, epoch: int,
                    step: int) -> tuple[dict[str, float], int, int]:
        """One epoch of ``stage`` from global ``step`` under ``self.sched`` (its step count caps the
        plans): ``(train/* means over the epoch, clips trained, the step after the last)``."""
        self.strategy.train()
        plans = self.epoch_plans(epoch, step)[:self.sched.steps]
        sums: dict[str, Tensor] = {}
        n_clips = 0
        bar = tqdm(total=len(plans), desc=f"epoch {epoch + 1} [{stage}]", unit="step",
                   disable=not self.progress, leave=False, dynamic_ncols=True)
        for plan, raw in zip(plans, self.train_src.iterate([p.fetch for p in plans])):
            batch = self.make_batch(raw, train=True, step=step, plan=plan)
            self.sched.apply(optimizer, step)
            out = self.train_step(batch, step, optimizer, plan.loss_scale)
            for k, v in out.items():  # accumulate on the device: no host sync per step
                if isinstance(v, Tensor) and v.dim() == 0:
                    sums[k] = sums.get(k, torch.zeros((), device=self.device)) + v.detach().float()
            n_clips += plan.global_size
            step += 1
            self.validator.after_step(self.sched, step)
            bar.update(1)
            if self.progress and step % 20 == 0:
                bar.set_postfix(loss=f"{out['loss'].item():.4f}")
        bar.close()
        steps = max(1, len(plans))
        local = {k: float(v) / steps for k, v in sums.items()}
        if self.world > 1:  # the logged epoch means are over all ranks (equal shares: mean of means)
            gathered = distributed.all_gather_objects(local)
            local = {k: float(np.mean([g[k] for g in gathered if k in g])) for k in local}
        stats = {f"train/{k}": v for k, v in local.items()}
        return stats, n_clips, step

    # --- evaluation -------------------------------------------------------------------------------
    def columns(self) -> tuple[list[str], dict[str, str]]:
        """Evaluation columns the strategy supports, and the reasons for the rest."""
        return evaluation.columns(self.strategy, self.protocol)

    def evaluate(self, retrieval: bool = True, on: tuple[Any, np.ndarray] | None = None,
                 curve: bool = False) -> EvalResult:
        """The test split's metrics, or those of rows ``on = (batch source, rows)`` (no retrieval).
        ``curve``: only what the validation curve reads (``evaluate(..., curve=True)``)."""
        src, rows = on if on is not None else (self.test_src, self.test_rows)
        with prof.phase("validation" if on is not None else "test_eval"):
            return evaluation.evaluate(self.strategy, src, rows, self.recipe, self.device, protocol=self.protocol,
                                       rank=self.rank, world=self.world, curve=curve,
                                       retrieval_on=(self.test_split, self.test_rows) if retrieval and on is None
                                       else None)
