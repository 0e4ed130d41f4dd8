"""Sharded extraction: ``torchrun --nproc-per-node 2`` on CPU (gloo) fills one cache, rows split by rank."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from avbench.cache import FeatureCache
from avbench.cache.verify import verify_cache
from avbench.cli import main
from avbench.extract.distributed import block
from avbench.extract.testmedia import write_test_folder

ARGS = ["--dataset", "csv", "--audio-model", "convnext_atto", "--video-model", "convnext_atto", "--no-pretrained",
        "--short-side", "32", "--compute-norm", "--workers", "0", "--batch-size", "1", "--no-progress"]


def test_blocks_cover_every_row_once():
    for n in (0, 1, 7, 11, 100):
        for world in (1, 2, 3, 8):
            rows = [r for rank in range(world) for r in range(*block(n, rank, world))]
            assert rows == list(range(n))


@pytest.mark.slow  # extraction twice, once under torchrun with 2 processes: 20 s on the shared 2-core machine
def test_two_process_torchrun_matches_single_process(tmp_path):
    media = write_test_folder(tmp_path / "media")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = tmp_path / "single"
    assert main(["extract", "--media-root", str(media), "--out", str(single), *ARGS]) == 0
    sharded = tmp_path / "sharded"
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                        "-m", "avbench", "extract", "--media-root", str(media), "--out", str(sharded), *ARGS],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("rows done") == 1  # one closing summary, from rank 0
    assert "extracted 11 clips" in r.stdout and "over 2 ranks" in r.stdout  # both ranks counted
    assert verify_cache(sharded) == []
    a, b = FeatureCache(single), FeatureCache(sharded)
    assert a.manifest.key == b.manifest.key  # the world size is not a setting
    assert a.manifest.info["norm"] == b.manifest.info["norm"]  # norm measured over both ranks' shares
    assert a.manifest.info["counts"] == b.manifest.info["counts"]
    for split in a.split_names:
        sa, sb = a.split(split), b.split(split)
        assert sa.ids == sb.ids and sb.done.all()
        for key in ("labels", "present", "onsets"):
            np.testing.assert_array_equal(getattr(sa, key), getattr(sb, key))
        for key in ("audio", "video"):
            np.testing.assert_allclose(np.asarray(getattr(sa, key), np.float32),
                                       np.asarray(getattr(sb, key), np.float32), atol=2e-3, rtol=2e-3)
    lines = sorted((sharded / "failures.jsonl").read_text().splitlines())
    assert lines == sorted((single / "failures.jsonl").read_text().splitlines()) and len(lines) == 3
    assert not list(sharded.glob("failures.part*"))
