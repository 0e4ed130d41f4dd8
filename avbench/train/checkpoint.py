"""Epoch-end checkpoints so an interrupted run resumes where it stopped (``avbench run --resume``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from avbench.api import Strategy
from avbench.errors import UserError


def save_checkpoint(path: Path, strategy: Strategy, optimizer: torch.optim.Optimizer, global_epoch: int,
                    global_step: int, history: list[dict[str, Any]], validation: dict[str, Any] | None = None) -> None:
    """Write atomically: a crash while saving leaves the previous checkpoint intact. ``validation``: the
    validation curve so far (``Validator.state``), so a resumed run's convergence flag sees all of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"strategy": strategy.state_dict(), "optimizer": optimizer.state_dict(), "rng": rng_state(),
                "stage": strategy.stage, "global_epoch": global_epoch, "global_step": global_step,
                "history": history, "validation": validation, "name": strategy.name,
                "config": strategy.config_dict()}, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, strategy: Strategy) -> dict[str, Any]:
    state = torch.load(path, map_location="cpu", weights_only=False)
    if state.get("name") != strategy.name or state.get("config") != strategy.config_dict():
        raise UserError(f"{path}: checkpoint is for {state.get('name')} with another configuration; "
                        f"remove it or run without --resume")
    # Restore the stage first so stage-dependent modules (frozen encoders, heads) match the saved state.
    if state["stage"] in strategy.stages:
        for stage in strategy.stages[: strategy.stages.index(state["stage"]) + 1]:
            strategy.begin_stage(stage)
    try:
        strategy.load_state_dict(state["strategy"])
    except RuntimeError as e:
        raise UserError(f"{path}: checkpoint does not fit this model ({str(e).splitlines()[0]})") from None
    return state


def rng_state() -> dict[str, Any]:
    """Global RNG states: strategies may draw from torch's RNG (UAVM's modality choice does)."""
    import random

    import numpy as np

    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    import random

    import numpy as np

    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
