"""Epoch-end checkpoints so an interrupted run resumes where it stopped (``avbench run --resume``), and
the one safe reader of every weights file avbench opens (``load_file``).

Files from strangers are data, never code. A ``.pt`` is a pickle, and unpickling can call any Python
function the file names, so every checkpoint is read with ``torch.load(weights_only=True)`` (tensors,
numbers, strings and plain containers only) or as safetensors (which cannot hold code at all). What
that reader refuses is refused in one line naming the file and the object it wanted to build. A user's
own legacy file that needs full unpickling is read only when named with ``--trust-checkpoint PATH``
(``trust``): an explicit decision for that one file, never a fallback. avbench's own checkpoints are
written so the safe reader takes them (RNG states as tensors and plain tuples, see ``rng_state``).
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import re
import struct
import warnings
from pathlib import Path
from typing import Any

import torch

from avbench.api import Strategy
from avbench.errors import UserError

TRUST_ENV = "AVBENCH_TRUSTED_CHECKPOINTS"  # os.pathsep-separated real paths; child processes inherit it
log = logging.getLogger(__name__)
_READ_ERRORS = (RuntimeError, EOFError, OSError, ValueError, AttributeError, ImportError, KeyError, TypeError,
                IndexError, struct.error, UnicodeDecodeError, MemoryError)


def trust(path: str | Path) -> Path:
    """``--trust-checkpoint PATH``: this one file (the user's own) may be fully unpickled."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise UserError(f"--trust-checkpoint {p}: no such file")
    real = os.path.realpath(p)
    known = [s for s in os.environ.get(TRUST_ENV, "").split(os.pathsep) if s]
    if real not in known:
        os.environ[TRUST_ENV] = os.pathsep.join([*known, real])
    return p


def trusted(path: str | Path) -> bool:
    return os.path.realpath(Path(path).expanduser()) in os.environ.get(TRUST_ENV, "").split(os.pathsep)


def is_safetensors(path: Path) -> bool:
    """safetensors: an 8-byte little-endian header length, then a JSON header."""
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError:
        return False
    if len(head) < 9 or head[8:9] != b"{":
        return False
    (n,) = struct.unpack("<Q", head[:8])
    return 2 <= n <= min(100 << 20, path.stat().st_size - 8)


def _load_safetensors(p: Path) -> Any:
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    try:
        tensors = load_file(str(p), device="cpu")
        with safe_open(str(p), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
    except (SafetensorError, *_READ_ERRORS) as e:
        raise UserError(f"{p}: not a readable safetensors file ({_first_line(e)})") from None
    if "name" in meta:  # avbench's own weights saved as safetensors: name and config in the metadata
        try:
            config = json.loads(meta.get("config", "{}"))
        except ValueError:
            raise UserError(f"{p}: safetensors metadata 'config' is not JSON") from None
        return {"state_dict": tensors, "name": meta["name"], "config": config}
    return tensors


def save_safetensors(path: Path, state: dict[str, torch.Tensor], name: str, config: dict[str, Any]) -> None:
    """avbench weights as safetensors (readable by ``load_file`` and by any safetensors tool)."""
    from safetensors.torch import save_file

    save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(path),
              metadata={"name": name, "config": json.dumps(config, sort_keys=True, default=str)})


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:200]}" if text else type(e).__name__


def _refusal(p: Path, e: BaseException, what: str) -> str:
    """One line: what the file wanted to build, in the words of torch's safe unpickler."""
    text = str(e)
    m = re.search(r"GLOBAL ([\w.]+)", text)
    hint = f"; if it is your own file, pass --trust-checkpoint {p}"
    if m:
        return f"{p}: refused: it asks to run or build {m.group(1)}, which a weights file never needs{hint}"
    op = re.search(r"Unsupported operand (\d+)", text)
    with open(p, "rb") as f:
        pickled = f.read(1) == b"\x80"  # a pickle's protocol marker (torch's zip files are caught above)
    if pickled:
        why = f"unsupported pickle opcode {op.group(1)}" if op else "objects beyond tensors and plain containers"
        return f"{p}: refused: the safe loader cannot read this pickle ({why}){hint}"
    return f"{p}: not a readable PyTorch {what} (neither a torch file, a pickle nor safetensors)"


def load_file(path: str | Path, what: str = "checkpoint") -> Any:
    """Read a weights file without running code from it (see the module docstring)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise UserError(f"{p}: no such {what} file")
    if is_safetensors(p):
        return _load_safetensors(p)
    try:
        with warnings.catch_warnings():  # torch's protocol notes are not the user's business
            warnings.simplefilter("ignore")
            return torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if not trusted(p):
            raise UserError(_refusal(p, e, what)) from None
        log.warning("%s: fully unpickled because --trust-checkpoint names it", p)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return torch.load(p, map_location="cpu", weights_only=False)
        except (pickle.UnpicklingError, *_READ_ERRORS) as e2:
            raise UserError(f"{p}: not a readable PyTorch {what} ({_first_line(e2)})") from None
    except _READ_ERRORS as e:  # truncated files, not a torch file at all
        raise UserError(f"{p}: not a readable PyTorch {what} ({_first_line(e)})") from None


def save_checkpoint(path: Path, strategy: Strategy, optimizer: torch.optim.Optimizer, global_epoch: int,
                    global_step: int, history: list[dict[str, Any]], validation: dict[str, Any] | None = None) -> None:
    """Write atomically: a crash while saving leaves the previous checkpoint intact, and a failed write
    (a full disk) leaves no ``.tmp`` behind. ``validation``: the validation curve so far
    (``Validator.state``), so a resumed run's convergence flag sees all of it. Everything saved is what
    ``load_file`` reads safely: tensors, numbers, strings, plain containers."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save({"strategy": strategy.state_dict(), "optimizer": optimizer.state_dict(), "rng": rng_state(),
                    "stage": strategy.stage, "global_epoch": global_epoch, "global_step": global_step,
                    "history": history, "validation": validation, "name": strategy.name,
                    "config": strategy.config_dict()}, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def load_checkpoint(path: Path, strategy: Strategy) -> dict[str, Any]:
    state = load_file(path)
    if not isinstance(state, dict) or "strategy" not in state:
        raise UserError(f"{path}: not an avbench epoch checkpoint; remove it or run without --resume")
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
    """Global RNG states: strategies may draw from torch's RNG (UAVM's modality choice does). numpy's
    state is stored as a tensor and plain numbers (not an ndarray), so the safe loader reads it."""
    import random

    import numpy as np

    kind, key, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(),
             "numpy": {"kind": str(kind), "key": torch.from_numpy(np.asarray(key, dtype=np.int64)),
                       "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
             "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    import random

    import numpy as np

    torch.set_rng_state(state["torch"])
    npst = state["numpy"]
    if isinstance(npst, dict):
        npst = (npst["kind"], np.asarray(npst["key"].numpy(), dtype=np.uint32), npst["pos"], npst["has_gauss"],
                npst["cached_gaussian"])
    np.random.set_state(npst)  # a tuple: a checkpoint from before this format (read with --trust-checkpoint)
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
