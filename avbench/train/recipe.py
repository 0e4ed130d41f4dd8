"""The training recipe: the UAVM reference recipe (DESIGN.md), every part a switch.

Defaults are the reference's VGGSound settings; dataset cards may override a few (synth uses a higher
learning rate and a smaller batch because it is small). Every field is settable with ``--set``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass
class Recipe:
    epochs: int = 10
    lr: float = 5e-5
    beta1: float = 0.95
    beta2: float = 0.999
    weight_decay: float = 5e-7
    lr_decay: float = 0.5  # lr multiplied by this after every epoch (1.0 = constant)
    batch_size: int = 144
    drop_last: bool = True
    balanced_sampling: bool = True  # weight 1000 / (class_count + 0.01), summed over a clip's labels
    mixup_prob: float = 0.5  # per clip; partner drawn uniformly, lambda ~ Beta(alpha, alpha)
    mixup_alpha: float = 10.0
    label_smoothing: float = 0.1
    l2_norm: bool = True  # L2-normalise every time step of both modalities
    time_roll: bool = True  # one random roll in [-T/2, T/2 - 1] shared by audio and video
    amp: Literal["bf16", "fp16", "fp32"] = "bf16"  # autocast precision (bf16 keeps accuracy; see README)
    compile: bool = False  # torch.compile the strategy
    grad_clip: float = 0.0  # max gradient norm; 0 disables
    eval_batch_size: int = 512
    eval_every_epoch: bool = True
    retrieval_per_class: int = 5  # stratified subset size per class for A<->V retrieval
    device_resident: Literal["auto", "on", "off"] = "auto"  # hold splits on the device when they fit
