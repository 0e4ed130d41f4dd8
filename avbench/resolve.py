"""From what the user asked (``RunRequest``) to what a run trains (``Resolved``), with every check first.

Everything that can be wrong with the user's input is refused here, before a cache is generated for
nothing or anything is written to MLflow, so a bad command leaves no half-made runs behind. ``run``,
``eval``, ``tune``, ``sweep`` and ``bench`` all resolve through ``resolve`` and so read the same
configuration the same way: dataset card, then ``--recipe``, then the preset, then ``--set``.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from avbench import config as cfgmod
from avbench import fsguard, registry
from avbench.api import Strategy, check_protocol
from avbench.authors_checkpoint import check_init
from avbench.cache.reader import FeatureCache
from avbench.cache.verify import checked_cache
from avbench.config import parse_seeds  # noqa: F401  (re-exported: callers found it here and in runner)
from avbench.datasets.base import DatasetCard
from avbench.errors import UserError
from avbench.paths import cache_root as default_cache_root
from avbench.train.recipe import Recipe, recipe_overrides
from avbench.train.schedule import training_rows


@dataclass
class RunRequest:
    strategy: str
    dataset: str | None = None
    cache: str | None = None
    seeds: list[int] = field(default_factory=lambda: [0])
    epochs: int | None = None
    overrides: dict[str, str] = field(default_factory=dict)
    results_dir: str = "results"
    device: str = "cpu"
    protocol: str = "standard"
    train_modality: str | None = None
    resume: bool = False
    cache_root: str | None = None
    progress: bool = True
    skip_finished: bool = False
    save_model: bool = True
    run_name: str | None = None
    extra_tags: dict[str, str] = field(default_factory=dict)
    force: bool = False  # rerun seeds that already finished (their earlier runs are deleted)
    strict_tracking: bool = False  # exit non-zero when MLflow cannot be reached (results stay local)
    preset: str | None = None  # a named configuration of the strategy (Strategy.presets), before --set
    recipe_name: str = "default"  # --recipe: named Recipe overrides (avbench.train.recipe.RECIPES), before --set
    init_from: str | None = None  # --init-from: weights to start from (avbench.authors_checkpoint)


@dataclass
class Resolved:
    """A request made concrete: the strategy class and its config, the recipe, the opened cache."""

    strategy_cls: type[Strategy]
    strategy_cfg: Any  # an instance of strategy_cls.Config (each strategy's own dataclass)
    recipe: Recipe
    cache: FeatureCache
    card: DatasetCard | None  # None for a --cache whose dataset has no card
    dataset: str
    knobs: Any | None  # an instance of card.Knobs for --dataset; None for --cache


def split_overrides(overrides: dict[str, str], strategy_fields: set[str], recipe_fields: set[str],
                    knob_fields: set[str]) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """Route ``--set`` keys to the strategy config, the recipe or the dataset knobs.

    ``model.``/``train.``/``data.`` prefixes are explicit; a bare key goes where it is defined and
    must be defined in exactly one place.
    """
    s: dict[str, str] = {}
    r: dict[str, str] = {}
    d: dict[str, str] = {}
    targets = {"model": (s, strategy_fields, "the strategy config"), "train": (r, recipe_fields, "the recipe"),
               "data": (d, knob_fields, "the dataset knobs")}
    for key, value in overrides.items():
        prefix, _, rest = key.partition(".")
        if rest and prefix in targets:
            out, fields, where = targets[prefix]
            if rest not in fields:
                raise UserError(cfgmod.unknown_key_message(rest, fields, where))
            out[rest] = value
            continue
        homes = [p for p, (_, fields, _) in targets.items() if key in fields]
        if len(homes) > 1:
            raise UserError(f"--set {key} is ambiguous ({' and '.join(homes)} both define it); "
                            f"write {' or '.join(f'{h}.{key}' for h in homes)}")
        if not homes:
            shown = {k: k for k in (*strategy_fields, *recipe_fields)} | {k: f"data.{k}" for k in knob_fields}
            close = difflib.get_close_matches(key, list(shown), n=1)
            hint = f"; did you mean '{shown[close[0]]}'?" if close else f"; known keys: {', '.join(sorted(shown.values()))}"
            raise UserError(f"--set {key}: unknown key for this strategy, recipe or dataset{hint}")
        targets[homes[0]][0][key] = value
    return s, r, d


def resolve(req: RunRequest) -> Resolved:
    check_request(req)
    if (req.dataset is None) == (req.cache is None):
        raise UserError("give exactly one of --dataset NAME or --cache PATH")
    strategy_cls = registry.load_strategy(req.strategy)
    card = None
    if req.dataset is not None:
        card = registry.load_dataset(req.dataset)
    knob_fields = {f.name for f in dataclasses.fields(card.Knobs)} if card is not None else set()
    s_over, r_over, d_over = split_overrides(
        req.overrides, {f.name for f in dataclasses.fields(strategy_cls.Config)},
        {f.name for f in dataclasses.fields(Recipe)}, knob_fields)
    if req.cache is not None:
        if d_over:
            raise UserError("data.* settings apply to --dataset, not to an existing --cache")
        cache = checked_cache(req.cache)  # every corruption refused before an MLflow run exists
        try:
            card = registry.load_dataset(cache.manifest.dataset)
        except UserError:
            card = None  # a dataset without a card: no dataset-specific defaults
        knobs = None
    else:
        assert card is not None
        knobs = cfgmod.apply_overrides(card.Knobs(), d_over, where=f"dataset '{card.name}'")
        root = default_cache_root(req.cache_root)
        with fsguard.writing(root):  # a read-only or full cache root: one line naming it
            cache = checked_cache(card.prepare(root, knobs, progress=req.progress))
    dataset = cache.manifest.dataset
    recipe = cfgmod.apply_overrides(Recipe(), card.recipe_defaults if card else {}, where="the recipe")
    recipe = cfgmod.apply_overrides(recipe, recipe_overrides(req.recipe_name), where=f"recipe '{req.recipe_name}'")
    recipe = cfgmod.apply_overrides(recipe, r_over, where="the recipe")
    if req.epochs is not None:
        recipe = cfgmod.apply_overrides(recipe, {"epochs": req.epochs}, where="--epochs")
    fields = {f.name for f in dataclasses.fields(strategy_cls.Config)}
    cfg = strategy_cls.Config()
    if card is not None:
        cfg = cfgmod.apply_overrides(cfg, card.strategy_overrides(strategy_cls.name, fields), where="the card")
    cfg = cfgmod.apply_overrides(cfg, registry.preset(strategy_cls, req.preset), where=f"preset '{req.preset}'")
    cfg = cfgmod.apply_overrides(cfg, s_over, where=f"strategy '{strategy_cls.name}'")
    strategy_cls.check_compatible(cfg, cache.features, cache.task)
    if req.init_from:  # a file that does not fit fails here, before anything is logged
        check_init(req.init_from, strategy_cls, cfg, cache.features, cache.task)
    check_protocol(strategy_cls, req.protocol, req.train_modality)
    return Resolved(strategy_cls, cfg, recipe, cache, card, dataset, knobs)


def check_request(req: RunRequest) -> None:
    """What can be checked from the request alone, before a cache is made or a process group joined."""
    if any(s < 0 for s in req.seeds):
        raise UserError(f"--seeds must be non-negative, got {','.join(map(str, req.seeds))}")
    if req.protocol not in ("standard", "cross-modal"):
        raise UserError(f"unknown --protocol '{req.protocol}' (standard or cross-modal)")
    if req.train_modality is not None and req.protocol != "cross-modal":
        raise UserError(f"--train-modality {req.train_modality} only applies with --protocol cross-modal")
    if req.epochs is not None and req.epochs < 1:
        raise UserError("--epochs must be at least 1")
    check_device(req.device)


def check_device(spec: str) -> None:
    """The device exists on this machine (cpu, cuda, cuda:N, mps)."""
    try:
        dev = torch.device(spec)
    except (RuntimeError, ValueError):
        raise UserError(f"--device {spec}: not a device (cpu, cuda, cuda:N or mps)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {spec}: CUDA is not available on this machine")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UserError(f"--device {spec}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise UserError(f"--device {spec}: MPS is not available on this machine")
    elif dev.type != "cpu":
        raise UserError(f"--device {spec}: unsupported device type (cpu, cuda, cuda:N or mps)")


def check_trains(r: Resolved, world: int = 1) -> None:
    """A run that would train zero steps is an error before it starts, naming why."""
    rec = r.recipe
    usable = np.flatnonzero(r.cache.train_split().present.any(axis=1))
    if len(usable) == 0:
        raise UserError(f"{r.cache.root}: the train split has no usable clips (zero training steps)")
    rows = len(training_rows(r.cache, rec, usable, "test"))  # what the engine trains on: after the hold-out
    held = f" ({len(usable) - rows} held out for validation)" if rows < len(usable) else ""
    if rows == 0 or (rec.drop_last and rec.batch_size > rows):
        raise UserError(f"batch size {rec.batch_size} is larger than the {rows} training clips{held} and drop_last "
                        f"is on: zero training steps (lower train.batch_size or data.val_fraction, or set "
                        f"train.drop_last=false)")
    steps = rec.max_steps or rec.epochs * (rows // rec.batch_size if rec.drop_last else -(-rows // rec.batch_size))
    if rec.warmup_steps >= steps:
        raise UserError(f"train.warmup_steps={rec.warmup_steps} is not shorter than the run's {steps} steps: the "
                        f"learning rate would never reach train.lr (lower it, or train longer)")
    if world > 1 and rec.batch_size < world:
        raise UserError(f"batch size {rec.batch_size} is smaller than the {world} processes")
