"""Where a result came from: the avbench source (commit, dirty tree) and the machine that made it.

Why one module: a number can only be cited when it names the code and the machine that produced it,
and that must hold however avbench was installed. ``git rev-parse`` inside site-packages finds no
repository (or, with a virtualenv inside a checkout, the wrong one), so the commit is looked up in
this order, first hit wins:

1. ``checkout``: the package directory is the ``avbench/`` folder of a git work tree (a source checkout
   or ``pip install -e .``): HEAD and ``git status`` now.
2. ``build``: ``avbench/_build_info.json``, written by the build step (``avbench/_build_stamp.py``,
   hooked into setuptools' ``build_py``) when a wheel is built from a checkout, so ``pip install .``
   and ``pip install git+URL`` keep the commit and whether the tree was dirty at build time.
3. ``direct_url``: the install's PEP 610 ``direct_url.json`` (``vcs_info.commit_id``), which pip
   writes for ``pip install git+URL`` (a VCS install is of a commit, so it is clean).

The machine part (host name, CPU model and the instruction-set flags precision depends on, GPU
model, library versions) reads ``/proc``, ``platform`` and ``importlib.metadata`` only: this module
imports no heavy library (L0), so the CLI and every results writer can call it cheaply.
"""

from __future__ import annotations

import copy
import functools
import importlib.metadata as md
import json
import os
import platform
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

BUILD_INFO = "_build_info.json"  # written next to avbench/__init__.py by the build step, ignored by git
LIBRARIES = ("avbench", "torch", "numpy", "mlflow", "optuna", "scikit-learn")
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
_PKG = Path(__file__).resolve().parent


def _git(args: list[str], where: Path, timeout: float = 20) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=where, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_state_at(root: Path, ignore: tuple[str, ...] = ()) -> tuple[str | None, bool | None]:
    """(HEAD, dirty) of the git work tree at ``root``; (None, None) when it is not one. Dirty means a
    tracked file differs from HEAD (untracked files do not count), outside the ``ignore`` paths (a
    report's own output directory, which it rewrites before it asks)."""
    head = _git(["rev-parse", "HEAD"], root, timeout=10)
    if not head:
        return None, None
    spec = []
    for p in ignore:
        try:
            spec.append(f":(exclude){Path(p).resolve().relative_to(root.resolve())}")
        except ValueError:  # outside the work tree: nothing of it can be dirty
            continue
    status = _git(["status", "--porcelain", "--untracked-files=no", *(["--", ".", *spec] if spec else [])], root)
    return head, (bool(status) if status is not None else None)


def _from_checkout(pkg: Path, ignore: tuple[str, ...] = ()) -> dict[str, Any] | None:
    top = _git(["rev-parse", "--show-toplevel"], pkg, timeout=10)
    if not top or (Path(top).resolve() / pkg.name) != pkg:
        return None  # not a checkout of avbench (e.g. site-packages inside some other repository)
    commit, dirty = git_state_at(Path(top), ignore)
    return {"commit": commit, "dirty": dirty, "source": "checkout"} if commit else None


def _from_build_info(pkg: Path) -> dict[str, Any] | None:
    try:
        info = json.loads((pkg / BUILD_INFO).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict) or not info.get("commit"):
        return None
    return {"commit": str(info["commit"]), "dirty": info.get("dirty"), "source": "build"}


def _from_direct_url(dist: str = "avbench") -> dict[str, Any] | None:
    try:
        text = md.distribution(dist).read_text("direct_url.json")
    except md.PackageNotFoundError:
        return None
    if not text:
        return None
    try:
        vcs = json.loads(text).get("vcs_info") or {}
    except ValueError:
        return None
    commit = vcs.get("commit_id")
    return {"commit": commit, "dirty": False, "source": "direct_url"} if commit else None


@functools.lru_cache(maxsize=4)
def source(pkg: Path = _PKG, ignore: tuple[str, ...] = ()) -> dict[str, Any]:
    """``{"commit", "dirty", "source"}`` of the avbench code running (see the module docstring for the
    order); every value None when none of them knows. ``ignore``: paths whose changes in a checkout do
    not make it dirty."""
    got = _from_checkout(pkg, ignore) or _from_build_info(pkg)
    if got:
        return got
    if pkg == _PKG:  # direct_url.json describes the installed distribution, which is this package
        got = _from_direct_url()
        if got:
            return got
    return {"commit": None, "dirty": None, "source": None}


def git_state() -> tuple[str | None, bool | None]:
    """(commit, dirty) of the avbench code running, however it was installed."""
    s = source()
    return s["commit"], s["dirty"]


# --- the machine ------------------------------------------------------------------------------------
def _cpuinfo() -> dict[str, str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    out: dict[str, str] = {}
    for line in text.splitlines():
        k, sep, v = line.partition(":")
        if not sep:
            if out:
                break  # the first processor's block is enough
            continue
        out.setdefault(k.strip(), v.strip())
    return out


def cpu() -> dict[str, Any]:
    """CPU model, logical cores and which of ``CPU_FLAGS`` it has (bf16 speed depends on them)."""
    info = _cpuinfo()
    model = info.get("model name") or platform.processor() or platform.machine()
    flags = set(info.get("flags", "").split())
    out: dict[str, Any] = {"model": model, "cores": os.cpu_count()}
    if flags:
        out["flags"] = [f for f in CPU_FLAGS if f in flags]
    return out


def gpus() -> list[str]:
    """GPU models: torch's names when torch is already imported and sees CUDA, else the NVIDIA driver's
    ``/proc`` entries, else ``nvidia-smi``; [] when there is none. Never imports torch."""
    torch = sys.modules.get("torch")
    try:
        if torch is not None and torch.cuda.is_available():
            return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except Exception:  # noqa: BLE001 -- a broken CUDA setup must not break provenance
        pass
    names = []
    for info in sorted(Path("/proc/driver/nvidia/gpus").glob("*/information")):
        try:
            for line in info.read_text().splitlines():
                if line.startswith("Model:"):
                    names.append(line.split(":", 1)[1].strip())
        except OSError:
            continue
    if names:
        return names
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return []
    return [x.strip() for x in out.stdout.splitlines() if x.strip()] if out.returncode == 0 else []


def libraries() -> dict[str, str | None]:
    """Installed versions of the libraries results depend on (None: not installed); nothing imported."""
    out: dict[str, str | None] = {}
    for dist in LIBRARIES:
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            out[dist] = None
    return out


def environment() -> dict[str, Any]:
    """Interpreter, platform, host, CPU, GPUs and library versions (the ``environment`` of every results
    JSON). Library versions are top-level keys (``torch``, ``numpy``, ...). A fresh copy per call."""
    return copy.deepcopy(_environment())


@functools.lru_cache(maxsize=1)
def _environment() -> dict[str, Any]:
    libs = libraries()
    return {"python": platform.python_version(), "platform": platform.platform(), "machine": platform.machine(),
            "hostname": socket.gethostname(), "cpu": cpu(), "gpus": gpus(), **libs}


def mlflow_tags() -> dict[str, str]:
    """The same facts as MLflow tags (``mlflow.source.git.commit`` plus ``avbench.host.*``)."""
    s, env = source(), environment()
    tags = {"avbench.host.name": env["hostname"], "avbench.host.cpu": str(env["cpu"]["model"]),
            "avbench.host.cpu_flags": ",".join(env["cpu"].get("flags", [])) or "-",
            "avbench.host.gpus": "; ".join(env["gpus"]) or "-"}
    if s["commit"]:
        tags["mlflow.source.git.commit"] = s["commit"]
        tags["avbench.git_dirty"] = str(bool(s["dirty"])).lower()
    return tags
