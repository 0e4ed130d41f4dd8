"""The training recipe: the UAVM reference recipe (DESIGN.md), every part a switch.

Defaults are the reference's VGGSound settings; dataset cards may override a few (synth uses a higher
learning rate and a smaller batch because it is small). Every field is settable with ``--set``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from avbench.config import in_range  # value ranges, checked by apply_overrides


@dataclass
class Recipe:
    epochs: int = in_range(10, "[1, inf)")
    lr: float = in_range(5e-5, "(0, inf)")
    # "sgd": torch's SGD with ``momentum`` (heavy ball, no Nesterov) and weight_decay; beta1/beta2 are Adam's only
    optimizer: Literal["adam", "sgd"] = "adam"
    momentum: float = in_range(0.9, "[0, 1)")  # sgd only (Scenic's "momentum" optimizer: 0.9)
    beta1: float = in_range(0.95, "[0, 1)")
    beta2: float = in_range(0.999, "[0, 1)")
    weight_decay: float = in_range(5e-7, "[0, inf)")
    lr_decay: float = in_range(0.5, "(0, 1]")  # lr multiplied by this after every epoch (1.0 = constant)
    batch_size: int = in_range(144, "[1, inf)")
    drop_last: bool = True
    balanced_sampling: bool = True  # weight 1000 / (class_count + 0.01), summed over a clip's labels
    mixup_prob: float = in_range(0.5, "[0, 1]")  # per clip; partner drawn uniformly, lambda ~ Beta(alpha, alpha)
    mixup_alpha: float = in_range(10.0, "(0, inf)")
    label_smoothing: float = in_range(0.1, "[0, 1)")
    l2_norm: bool = True  # L2-normalise every time step of both modalities
    time_roll: bool = True  # one random roll in [-T/2, T/2 - 1] shared by audio and video
    amp: Literal["auto", "bf16", "fp16", "fp32"] = "auto"  # auto: bf16 where native and faster (avbench.hardware)
    compile: bool = False  # torch.compile the strategy
    grad_clip: float = in_range(0.0, "[0, inf)")  # max gradient norm; 0 disables
    # "global": one norm over every trainable parameter; "module": each of the strategy's
    # clip_groups() (default: its top-level submodules) clipped on its own, as CMG clips per model
    grad_clip_scope: Literal["global", "module"] = "global"
    eval_batch_size: int = in_range(512, "[1, inf)")
    # The test split is read once, at the end (DESIGN.md, fairness). True also evaluates it after every
    # epoch (the UAVM authors' loop does); the run is then tagged avbench.test_every_epoch=true.
    eval_every_epoch: bool = False
    retrieval_per_class: int = in_range(5, "[1, inf)")  # stratified subset size per class for A<->V retrieval
    device_resident: Literal["auto", "on", "off"] = "auto"  # hold splits on the device when they fit
    # Schedules and validation (avbench/train/schedule.py): "epoch" multiplies lr by lr_decay after
    # every epoch (the reference); "cosine"/"step"/"constant" are defined in optimizer steps, after a
    # linear warm-up of warmup_steps. max_steps > 0 trains for exactly that many steps (per stage).
    schedule: Literal["epoch", "cosine", "step", "constant"] = "epoch"
    max_steps: int = in_range(0, "[0, inf)")
    warmup_steps: int = in_range(0, "[0, inf)")
    # "holdout": train without the cache's validation rows and record a held-out validation curve;
    # "train-on-all": train on the whole training split (the curve is then in-sample); "off": no curve.
    validation: Literal["holdout", "train-on-all", "off"] = "holdout"
    val_points: int = in_range(20, "[2, inf)")  # validation evaluations spread over the run's steps
    # Where avbench's default departs from the UAVM authors' code (README: "Recipe differences"):
    # "none": a parameter unused in a step has no gradient and Adam leaves it alone; "zero": gradients
    # are zero-filled as torch < 2.0's zero_grad() left them, so Adam keeps moving the idle modality's
    # parameters with its momentum (and weight decay) on every batch of the other modality.
    idle_grads: Literal["none", "zero"] = "none"
    # "batch": a mixup partner comes from the (balanced) batch; "split": uniformly from the whole
    # training split, as the authors' loader draws it.
    mixup_partner: Literal["batch", "split"] = "batch"
    # "uniform": every target is ls/C + (1 - ls) * label; "reference": an unmixed clip's labels are
    # 1 - ls (the authors' loader). Mixed clips are the same under both.
    label_arithmetic: Literal["uniform", "reference"] = "uniform"


# Named recipes for ``--recipe NAME`` (run, eval, sweep): Recipe overrides applied after the dataset
# card's recipe defaults and before ``--set``. "reference" is the UAVM authors' training as their code
# runs it (fp32, zero-filled gradients, partners from the whole split, their label arithmetic, the
# whole training split with no held-out curve); dataset-sized settings (lr, batch, epochs) stay the
# card's. The model side of it (their initialisation) is the UAVM family's default ``init=authors``.
RECIPES: dict[str, dict[str, object]] = {
    "default": {},
    "reference": {"amp": "fp32", "idle_grads": "zero", "mixup_partner": "split",
                  "label_arithmetic": "reference", "validation": "off"},
    # CMG's pretrain.py / ave.py loops (haihuangcode/CMG code/src at 3b31fa0), for vq_codes with
    # ``--preset cmg``: Adam with torch's defaults (pretrain.py:327), lr constant over the run
    # (MultiStepLR [10,20,30] never fires in 6 epochs; ave.py has none), shuffled batches with no
    # label weighting and no drop_last, no L2 norm, time roll, mixup or label smoothing (plain CE),
    # clip 0.5 per model (pretrain.py:534-536), fp32 here (float64: the preset's precision=fp64).
    # Dataset-sized settings (batch, epochs) stay the card's; CMG's scripts use batch 80.
    "cmg": {"beta1": 0.9, "beta2": 0.999, "weight_decay": 0.0, "lr_decay": 1.0, "schedule": "epoch",
            "balanced_sampling": False, "drop_last": False, "mixup_prob": 0.0, "label_smoothing": 0.0,
            "l2_norm": False, "time_roll": False, "amp": "fp32", "grad_clip": 0.5, "grad_clip_scope": "module",
            "validation": "off"},
    # Scenic's MBT-base training (google-research/scenic projects/mbt/configs/audioset/
    # balanced_audioset_base.py at 4a38d47), for mbt with ``--preset scenic``: SGD momentum 0.9
    # (optimizer "momentum", train_lib/optimizers.py), lr 0.5 with cosine decay, no weight decay
    # (l2_decay_factor 0), clip 1.0, mixup alpha 0.5 on every batch, label smoothing 0.3 (Scenic's
    # arithmetic is the uniform one), float32, shuffled batches without label weighting, no feature
    # L2 norm or time roll. Not expressible here and left to the user: Scenic's linear warm-up of 2.5
    # epochs (--set train.warmup_steps=...), one mixup lambda per batch with the reversed batch as
    # partner (here one lambda per clip, partner from the batch), batch 64 and 50 epochs (the card's).
    "scenic": {"optimizer": "sgd", "momentum": 0.9, "lr": 0.5, "schedule": "cosine", "weight_decay": 0.0,
               "grad_clip": 1.0, "mixup_prob": 1.0, "mixup_alpha": 0.5, "label_smoothing": 0.3,
               "label_arithmetic": "uniform", "amp": "fp32", "balanced_sampling": False, "l2_norm": False,
               "time_roll": False},
}


def clip_groups(strategy: Any) -> list[list[Any]]:
    """Parameter groups for ``grad_clip_scope="module"``: the strategy's ``clip_groups()`` when it has
    one, else its top-level submodules' trainable parameters (empty groups dropped)."""
    own = getattr(strategy, "clip_groups", None)
    if callable(own):
        return own()
    trainable = {id(p) for p in strategy.trainable_parameters()}
    groups = [[p for p in child.parameters() if id(p) in trainable] for child in strategy.children()]
    return [g for g in groups if g]


def recipe_overrides(name: str) -> dict[str, object]:
    """The overrides of the named recipe; a one-line UserError for an unknown name."""
    from avbench.errors import UserError

    if name not in RECIPES:
        raise UserError(f"--recipe {name}: unknown recipe (one of {', '.join(RECIPES)})")
    return dict(RECIPES[name])
