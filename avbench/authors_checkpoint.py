"""Load model weights from a file into a strategy: avbench's own, or a paper's released checkpoint.

One loader serves ``avbench eval --checkpoint`` and ``avbench run --init-from``. It reads:

* avbench's ``model.pt`` (the MLflow artifact: ``{"state_dict", "config", "name"}``) and the engine's
  epoch checkpoints (``{"strategy", "optimizer", "config", "name", ...}``); their config is returned
  so ``eval`` can rebuild the model it was trained as;
* a plain state dict (a paper's released ``.pth``, or ``.safetensors``), with or without the ``module.`` prefix that
  ``nn.DataParallel`` adds. A strategy that can take one declares ``reference_key_map()`` returning
  (its key -> the paper's key, for every one of its keys) and (paper key -> shape) for the parameters
  the paper's code creates but never uses; it may add ``reference_hint(state)``, a sentence saying
  what the file is in ``--set`` terms.

Every key is accounted for on both sides: a key of the model missing from the file, a key of the file
with no place in the model, or a shape that differs is refused with one line naming the key and both
shapes (plus the hint). Nothing is loaded unless everything fits.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor

from avbench.errors import UserError
from avbench.train.checkpoint import load_file

DP_PREFIX = "module."


@dataclass
class WeightsFile:
    path: Path
    kind: str  # "avbench" or "reference"
    state: dict[str, Tensor]
    name: str | None = None  # avbench files: the strategy they were trained as
    config: dict[str, Any] = field(default_factory=dict)  # avbench files: the strategy config


def read_weights(path: str | Path) -> WeightsFile:
    """Read and classify a weights file (see module docstring); a one-line UserError if it is neither."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise UserError(f"{p}: no such checkpoint file")
    # Tensors and plain containers only, or safetensors; a file that would need full unpickling is
    # refused in one line unless the user named it with --trust-checkpoint (never a fallback).
    obj = load_file(p)
    if isinstance(obj, Mapping) and "name" in obj and ("state_dict" in obj or "strategy" in obj):
        state = obj.get("state_dict", obj.get("strategy"))
        return WeightsFile(p, "avbench", dict(state), name=obj.get("name"), config=dict(obj.get("config") or {}))
    if isinstance(obj, Mapping) and obj and all(isinstance(v, Tensor) for v in obj.values()):
        return WeightsFile(p, "reference", strip_data_parallel(obj))
    raise UserError(f"{p}: neither an avbench model.pt / checkpoint nor a state dict of tensors")


def strip_data_parallel(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Drop the ``module.`` prefix ``nn.DataParallel`` puts on every key (only if every key has it)."""
    if state and all(k.startswith(DP_PREFIX) for k in state):
        return {k[len(DP_PREFIX):]: v for k, v in state.items()}
    return dict(state)


def _shape(t: Any) -> str:
    return "[" + ", ".join(str(s) for s in tuple(t)) + "]"


def map_reference(strategy: Any, state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The file's tensors under the strategy's keys, after checking every key and shape both ways."""
    keymap = getattr(strategy, "reference_key_map", None)
    if keymap is None:
        raise UserError(f"{strategy.name} cannot load a foreign state dict (it defines no reference_key_map); "
                        f"give an avbench model.pt")
    ours_to_theirs, unused = keymap()
    hint_fn = getattr(strategy, "reference_hint", None)
    hint = f" ({hint_fn(state)})" if hint_fn is not None else ""
    model = strategy.state_dict()
    out: dict[str, Tensor] = {}
    for ours, theirs in ours_to_theirs.items():
        want = tuple(model[ours].shape)
        if theirs not in state:
            raise UserError(f"checkpoint has no {theirs} (model {ours} {_shape(want)}){hint}")
        got = tuple(state[theirs].shape)
        if got != want:
            raise UserError(f"{theirs}: checkpoint {_shape(got)}, model {_shape(want)} ({ours}){hint}")
        out[ours] = state[theirs]
    mapped = set(ours_to_theirs.values())
    for theirs, t in state.items():
        if theirs in mapped:
            continue
        if theirs not in unused:
            raise UserError(f"{theirs} {_shape(t.shape)}: checkpoint key with no place in {strategy.name} "
                            f"as configured{hint}")
        if tuple(t.shape) != tuple(unused[theirs]):
            raise UserError(f"{theirs}: checkpoint {_shape(t.shape)}, model {_shape(unused[theirs])} "
                            f"(created but unused by the authors' forward){hint}")
    missing_unused = [k for k in unused if k not in state]
    if missing_unused:  # their code always creates these: a file without them was not made by it
        raise UserError(f"checkpoint has no {missing_unused[0]} {_shape(unused[missing_unused[0]])}, which the "
                        f"authors' code always creates{hint}")
    return out


def check_own(strategy: Any, state: Mapping[str, Tensor]) -> None:
    """avbench's own state dict: the same keys and shapes, refused in one line otherwise."""
    model = strategy.state_dict()
    for k, v in model.items():
        if k not in state:
            raise UserError(f"checkpoint has no {k} (model {_shape(v.shape)}); it is another configuration")
        if tuple(state[k].shape) != tuple(v.shape):
            raise UserError(f"{k}: checkpoint {_shape(state[k].shape)}, model {_shape(v.shape)}: "
                            f"another configuration (check --set)")
    extra = [k for k in state if k not in model]
    if extra:
        raise UserError(f"{extra[0]} {_shape(state[extra[0]].shape)}: checkpoint key with no place in "
                        f"{strategy.name} as configured")


def load_into(strategy: Any, weights: WeightsFile, all_stages: bool = True) -> dict[str, Any]:
    """Load ``weights`` into ``strategy``; returns a description for logging. ``all_stages`` builds every
    stage's modules first (evaluation of a finished model); ``run --init-from`` loads before training."""
    if all_stages:
        for stage in strategy.stages:
            strategy.begin_stage(stage)
    if weights.kind == "avbench":
        if weights.name and weights.name != strategy.name:
            raise UserError(f"{weights.path}: an avbench {weights.name} model, not {strategy.name}; "
                            f"use --strategy {weights.name}")
        check_own(strategy, weights.state)
        state = weights.state
    else:
        state = map_reference(strategy, weights.state)
    strategy.load_state_dict(state, strict=True)
    return {"checkpoint": str(weights.path), "checkpoint_kind": weights.kind,
            "checkpoint_sha256": sha256(weights.path), "checkpoint_tensors": len(weights.state)}


def sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def init_from(strategy: Any, path: str | Path) -> dict[str, Any]:
    """``run --init-from``: start training from the file's weights (same checks as ``eval``)."""
    return load_into(strategy, read_weights(path), all_stages=False)


def check_init(path: str | Path, strategy_cls: type, cfg: Any, features: Any, task: Any) -> None:
    """Refuse a file that does not fit before a run is logged (builds a throwaway model on the CPU)."""
    init_from(strategy_cls(cfg, features, task), path)


def init_key(path: str | Path) -> str:
    """What identifies an initialisation in a run's group: the file's content, not its name."""
    return sha256(Path(path).expanduser())
