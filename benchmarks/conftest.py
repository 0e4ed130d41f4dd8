"""Shared setup of the pytest-benchmark suite (``tox -e bench``; JSON lands in .benchmarks/).

Files here are named ``bench_*.py`` so the test run (``pytest`` over tests/) never picks them up;
this conftest collects them when ``pytest benchmarks`` is asked for. Set ``AVBENCH_BENCH_DEVICE=cuda``
to run the model benchmarks on a GPU (each target synchronises itself: pytest-benchmark is not
GPU-aware).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

DEVICE = os.environ.get("AVBENCH_BENCH_DEVICE", "cpu")


def pytest_configure(config):
    target = config.getoption("benchmark_json", None)
    Path(target).parent.mkdir(parents=True, exist_ok=True) if target else Path(".benchmarks").mkdir(exist_ok=True)


def pytest_collect_file(file_path, parent):
    # A file named on the command line is already collected by pytest's own Python plugin.
    if file_path.suffix == ".py" and file_path.name.startswith("bench_") and not parent.session.isinitpath(file_path):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


@pytest.fixture(scope="session")
def device():
    import torch

    return torch.device(DEVICE)


@pytest.fixture(scope="session")
def synthetic_caches(tmp_path_factory):
    """Random-feature caches: ``paper`` (VGGSound-shaped: T 30, 1024-d audio and video, 309 classes)
    and ``tiny`` (T 8, 32-d, 10 classes)."""
    from avbench.bench.harness import SyntheticSpec, write_synthetic_cache
    from avbench.cache.reader import FeatureCache

    root = tmp_path_factory.mktemp("bench-caches")
    paper = write_synthetic_cache(root / "paper", SyntheticSpec(), train=2 * 144 * 4, test=144)
    tiny = write_synthetic_cache(root / "tiny", SyntheticSpec(steps=8, audio_dim=32, video_dim=32, classes=10),
                                 train=256, test=64)
    return {"paper": FeatureCache(paper), "tiny": FeatureCache(tiny)}
