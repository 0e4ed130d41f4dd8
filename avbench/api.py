"""The one interface between the harness and a fusion strategy.

A strategy owns its model and its loss; the harness owns data, the loop, evaluation, metrics and
logging. Keeping the contract this small is what lets a new strategy be one file in a user's package,
registered through the ``avbench.strategies`` entry-point group exactly as the built-ins are.

Conventions every strategy can rely on:

* ``audio`` is ``[B, T, Da]`` and ``video`` is ``[B, T, Dv]`` float tensors, already L2-normalised per
  step, time-rolled and mixed up by the harness recipe when those switches are on.
* ``None`` for a modality means "not given": audio-only evaluation calls ``predict(audio, None)``;
  the cross-modal protocol trains with one modality set to ``None``.
* ``targets`` are soft ``[B, C]`` float targets (label smoothing and mixup already applied);
  ``labels`` are the original 0/1 multi-hot labels.
"""

from __future__ import annotations

import abc
import dataclasses
import inspect
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avbench.errors import UserError


@dataclass(frozen=True)
class FeatureSpec:
    """What the cache provides: per-step feature widths and the number of steps T."""

    audio_dim: int
    video_dim: int
    num_steps: int


@dataclass(frozen=True)
class TaskSpec:
    """What is predicted: C classes, single-label (softmax) or multilabel (sigmoid)."""

    num_classes: int
    multilabel: bool = False
    class_names: tuple[str, ...] = ()


@dataclass
class Batch:
    """A training or evaluation batch gathered from the cache (see module docstring for conventions)."""

    audio: Tensor | None
    video: Tensor | None
    targets: Tensor
    labels: Tensor
    present: Tensor | None = None  # [B, 2] bool: audio present, video present
    onsets: Tensor | None = None  # [B, T] bool: audio onsets per feature step
    index: Tensor | None = None  # [B] row indices into the split

    @property
    def size(self) -> int:
        return int(self.targets.shape[0])

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "Batch":
        def move(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.to(device, non_blocking=non_blocking)

        return Batch(**{f.name: move(getattr(self, f.name)) for f in dataclasses.fields(self)})

    def replace(self, **changes: Any) -> "Batch":
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class Capabilities:
    """What a strategy can be evaluated on. The harness skips the rest and reports the stated reason.

    ``reasons`` maps a capability name that is False to the sentence shown to the user.
    """

    audio_only: bool = True
    video_only: bool = True
    fusion: bool = True
    embeddings: bool = False  # per-layer representations through ``embed``
    attention: bool = False  # attention maps through ``attention_maps``
    cross_modal: bool = False  # train on one modality, test on the other
    heads: bool = False  # named per-head logits through ``head_logits``
    onsets: bool = False  # ``predict``/``head_logits`` take ``onsets=[B, T] bool`` (audio onsets per step)
    # ``predict(a, v)`` is exactly ``torch.stack([predict(a, None), predict(None, v)]).mean(0)``: the harness
    # then derives the Fusion column from the two single-modality passes instead of a third pass.
    fusion_is_mean: bool = False
    reasons: Mapping[str, str] = field(default_factory=dict)

    def why_not(self, capability: str) -> str:
        if getattr(self, capability):
            return ""
        return self.reasons.get(capability, f"the strategy does not declare '{capability}' support")


COLUMNS = ("audio", "video", "fusion")  # the evaluation columns (Table I of the UAVM paper), in order
CAPABILITY_OF = {"audio": "audio_only", "video": "video_only", "fusion": "fusion"}  # column -> Capabilities field
PRIMARY = {"multiclass": "acc", "multilabel": "mAP"}  # task -> the metric a run is judged by

STEPS_KEY = "train.max_steps"  # the run length; a search space's "steps" type is a share of the tuning budget


def default_space(recipe: Any) -> dict[str, dict[str, Any]]:
    """The search space every strategy gets unless it overrides ``Strategy.search_space``: lr over two
    decades around the recipe's, weight decay, and the run length (a share of the step budget).

    It lives here, with the interface, because it is what a strategy declares (data that ``avbench
    tune`` reads), so a strategy extending it imports nothing above the interface."""
    return {"train.lr": {"type": "float", "low": recipe.lr / 10, "high": recipe.lr * 10, "log": True},
            "train.weight_decay": {"type": "float", "low": 1e-7, "high": 1e-2, "log": True},
            STEPS_KEY: {"type": "steps", "low": 0.25, "high": 1.0}}


PROTOCOLS = ("standard", "cross-modal")


def check_protocol(strategy_cls: type["Strategy"], protocol: str, train_modality: str | None) -> None:
    """The protocol exists and the strategy declares it can run it; ``UserError`` naming why not.
    Resolution calls this before anything is logged, and the engine again for callers that build one."""
    if protocol not in PROTOCOLS:
        raise UserError(f"unknown protocol '{protocol}' (standard or cross-modal)")
    if protocol == "cross-modal" and not strategy_cls.capabilities.cross_modal:
        raise UserError(f"{strategy_cls.name} cannot run the cross-modal protocol: "
                        f"{strategy_cls.capabilities.why_not('cross_modal')}")
    if protocol == "cross-modal" and train_modality not in ("audio", "video"):
        raise UserError("--protocol cross-modal needs --train-modality audio or video")


@dataclass
class NoConfig:
    """Config for strategies with nothing to configure."""


class Strategy(nn.Module, metaclass=abc.ABCMeta):
    """Base class of every fusion strategy.

    Subclasses set ``name``, ``Config`` (a dataclass whose every field is settable with
    ``--set key=value``) and ``capabilities``, and implement ``training_step`` and ``predict`` (the
    two abstract methods: a class missing one is refused when the registry loads it, before any run
    exists; ``check_contract`` says which). Multi-stage strategies list their ``stages``; the engine
    calls ``begin_stage`` before each and builds a fresh optimizer over the parameters that still
    require gradients. ``avbench check-strategy NAME`` (``avbench.testing.check_strategy``) runs the
    whole contract on tiny data; docs/plugins.md states every rule.
    """

    name: ClassVar[str] = ""
    Config: ClassVar[type] = NoConfig
    capabilities: ClassVar[Capabilities] = Capabilities()
    stages: ClassVar[tuple[str, ...]] = ("train",)
    # Named configurations (e.g. "paper" size vs "cpu" size): preset -> {Config field: value}.
    # ``avbench run/show --preset NAME`` applies one after the dataset card and before ``--set``.
    presets: ClassVar[Mapping[str, Mapping[str, Any]]] = {}

    def __init__(self, cfg: Any, features: FeatureSpec, task: TaskSpec):
        super().__init__()
        self.cfg = cfg
        self.features = features
        self.task = task
        self.stage = self.stages[0]
        # Cross-modal protocol: the modality training may use ("audio"/"video"), or None for both.
        self.train_modality: str | None = None

    # --- checks -------------------------------------------------------------------------------
    @classmethod
    def search_space(cls, recipe: Any) -> dict[str, dict[str, Any]]:
        """What ``avbench tune`` searches, keyed as for ``--set``: ``{"train.lr": {"type": "float",
        "low": 1e-4, "high": 1e-2, "log": True}, "model.dropout": {"type": "categorical", "choices":
        [0.0, 0.1]}, ...}``. The default (``default_space``) searches lr over two decades around the
        recipe's, weight decay, and the run length ``train.max_steps`` as a share of the tuning step
        budget (the same for every strategy). Override to add the strategy's own fields."""
        return default_space(recipe)

    @classmethod
    def canonical_config(cls, cfg: Any) -> Any:
        """``cfg`` with values that stand for another field resolved (e.g. ``s_dim=0`` meaning "the model
        width"), so two configs that build the same model compare equal (the report merges such rows).
        Return ``dataclasses.replace(cfg, ...)``; the default returns ``cfg`` unchanged."""
        return cfg

    @classmethod
    def check_compatible(cls, cfg: Any, features: FeatureSpec, task: TaskSpec) -> None:
        """Raise ``avbench.errors.UserError`` naming the problem when the cache cannot feed this model."""

    # --- training -----------------------------------------------------------------------------
    @abc.abstractmethod
    def training_step(self, batch: Batch, step: int) -> dict[str, Tensor]:
        """Return ``{"loss": scalar, ...}``; extra scalar entries are logged as training diagnostics.

        Called in train mode under the recipe's autocast; the engine does backward, clipping and the
        optimizer step. ``step`` counts optimizer steps of the whole run from 0, across stages (it does
        not restart per epoch or stage). ``batch.onsets`` may be set (caches with onsets) or None."""

    def begin_stage(self, stage: str) -> None:
        """Prepare for a training stage (freeze an encoder, add a head). Default: remember the name."""
        self.stage = stage

    def stage_epochs(self, stage: str, epochs: int) -> int:
        """Epochs for a stage; ``epochs`` is the recipe's. Override for pretraining stages."""
        return epochs

    def stage_uses_labels(self, stage: str) -> bool:
        """False for unsupervised stages: the harness then skips per-epoch evaluation in that stage."""
        return True

    def stage_recipe(self, stage: str, recipe: Any) -> Any:
        """The training recipe (``avbench.train.recipe.Recipe``) for a stage; ``recipe`` is the run's.
        Override when a paper trains its stages differently (per-stage learning rate or clipping);
        return ``dataclasses.replace(recipe, ...)``, never a mutated ``recipe``."""
        return recipe

    def after_optimizer_step(self, step: int) -> None:
        """Hook for non-gradient updates (EMA codebooks, code resets)."""

    def epoch_diagnostics(self) -> dict[str, float]:
        """Scalars logged at the end of every epoch (codebook perplexity, fallback counts, ...)."""
        return {}

    # --- inference ----------------------------------------------------------------------------
    @abc.abstractmethod
    def predict(self, audio: Tensor | None, video: Tensor | None) -> Tensor:
        """Logits ``[B, C]`` from whichever modalities are given (None: not given).

        The harness calls it in eval mode, under ``torch.no_grad()`` and the recipe's autocast, once
        per evaluation column the strategy declares (audio only, video only, both). A column it does
        not declare must be refused (raise), never answered with made-up logits. With
        ``capabilities.onsets`` it is also passed ``onsets=[B, T] bool``."""

    def head_logits(self, audio: Tensor | None, video: Tensor | None) -> dict[str, Tensor]:
        """Named per-head logits for analyses (``capabilities.heads``)."""
        raise NotImplementedError(f"{self.name} has no named heads")

    def embed(self, audio: Tensor | None, video: Tensor | None) -> dict[str, Tensor]:
        """Per-layer representations ``{layer_name: [B, T, D]}`` in layer order (``capabilities.embeddings``)."""
        raise NotImplementedError(f"{self.name} exposes no per-layer representations")

    def attention_maps(self, audio: Tensor | None, video: Tensor | None) -> dict[str, Tensor]:
        """Per-layer attention probabilities ``{layer_name: [B, heads, Tq, Tk]}`` (``capabilities.attention``)."""
        raise NotImplementedError(f"{self.name} exposes no attention maps")

    # --- bookkeeping --------------------------------------------------------------------------
    def config_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self.cfg) if dataclasses.is_dataclass(self.cfg) else {}

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        return (p for p in self.parameters() if p.requires_grad)

    def loss_fn(self, logits: Tensor, targets: Tensor) -> Tensor:
        return classification_loss(logits, targets, self.task.multilabel)


_COMMENT = re.compile(r"^\s+(\w+)\s*:[^#]*#\s*(.+)$")


def field_comments(config_cls: type) -> dict[str, str]:
    """``name: int = 3  # what it is`` -> ``{"name": "what it is"}``, read from the class source: the
    inline comments ``avbench show`` prints as each field's help ({} when the source is unavailable)."""
    try:
        src = inspect.getsource(config_cls)
    except (OSError, TypeError):
        return {}
    out = {}
    for line in src.splitlines():
        m = _COMMENT.match(line)
        if m:
            out[m.group(1)] = m.group(2).strip()
    return out


def contract_problem(cls: type) -> str | None:
    """What makes ``cls`` unusable as a strategy, in one sentence, or None. Checked when the registry
    loads a strategy, so a broken plugin fails before anything is trained or logged."""
    where = f"{cls.__module__}.{cls.__qualname__}"
    if not (isinstance(cls, type) and issubclass(cls, Strategy)):
        return f"{where} is not an avbench.api.Strategy subclass"
    missing = sorted(getattr(cls, "__abstractmethods__", ()))
    if missing:
        return (f"strategy class {where} does not implement {', '.join(missing)} "
                f"(required by avbench.api.Strategy; see docs/plugins.md)")
    if not cls.name:
        return f"strategy class {where} sets no name"
    if not dataclasses.is_dataclass(cls.Config):
        return f"strategy class {where}: Config must be a dataclass, got {cls.Config!r}"
    if not isinstance(cls.capabilities, Capabilities):
        return f"strategy class {where}: capabilities must be an avbench.api.Capabilities"
    return None


def classification_loss(logits: Tensor, targets: Tensor, multilabel: bool) -> Tensor:
    """Soft-target cross-entropy for single-label tasks, BCE for multilabel (the UAVM recipe)."""
    logits = logits.float()
    if multilabel:
        return F.binary_cross_entropy_with_logits(logits, targets.float())
    return torch.sum(-targets.float() * F.log_softmax(logits, dim=-1), dim=-1).mean()
