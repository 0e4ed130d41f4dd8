"""Where avbench keeps generated caches and results by default (each overridable)."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

CACHE_ENV = "AVBENCH_CACHE_DIR"


def cache_root(override: str | Path | None = None) -> Path:
    """Root of dataset caches: ``--cache-root``, else $AVBENCH_CACHE_DIR, else the user cache dir."""
    if override:
        return Path(override).expanduser()
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_cache_dir("avbench"))


def default_results_dir() -> Path:
    return Path("results")
