"""Shared test setup: one torch thread per test process (2-core CI), a private cache root, paths."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("AVBENCH_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(autouse=True)
def _private_cache_root(tmp_path_factory, monkeypatch):
    root = tmp_path_factory.getbasetemp() / "avbench-cache"
    monkeypatch.setenv("AVBENCH_CACHE_DIR", str(root))
    monkeypatch.setenv("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
    yield


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"shared media not available at {SHARED}")
    return SHARED
