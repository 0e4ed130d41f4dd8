"""benchmarks/gpu_check.sh --device cpu --tiny: the GPU check's every step (paper-size bench flags on small
shapes) runs here, so a lent GPU never starts from a broken script."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.sh"
STEPS = ["env", "uavm", "epoch", "uavm_compile", "cross_attention", "mbt", "vq_codes", "vq_codes_infer"]


@pytest.mark.slow
def test_gpu_check_tiny_runs_every_step_on_cpu(tmp_path):
    if shutil.which("bash") is None or shutil.which("timeout") is None:
        pytest.skip("needs bash and coreutils timeout")
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "OMP_NUM_THREADS": "1", "PYTHON": sys.executable,
           "AVBENCH": f"{sys.executable} -m avbench"}
    r = subprocess.run(["bash", str(SCRIPT), "--device", "cpu", "--tiny"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=1500)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = {row["step"]: row for row in csv.DictReader(open(out / "steps.tsv"), delimiter="\t")}
    assert list(rows) == STEPS
    failed = {k: (v["rc"], (out / f"{k}.log").read_text()[-600:] if (out / f"{k}.log").exists() else "")
              for k, v in rows.items() if v["rc"] != "0"}
    assert not failed, failed
    assert '"torch":' in (out / "env.txt").read_text()
    uavm = json.loads((out / "uavm.json").read_text())
    assert {"train", "reference", "infer"} <= set(uavm) and uavm["reference"]["speedup"] > 0
    assert json.loads((out / "uavm_compile.json").read_text())["compile"] is True
    epoch = json.loads((out / "epoch.json").read_text())["data"]["epoch"]
    assert epoch["train_split"] == 1840 and epoch["clips"] > 0
    summary = json.loads((out / "summary.json").read_text())
    assert [s["step"] for s in summary["steps"]] == STEPS and summary["tiny"] is True
    assert next(s for s in summary["steps"] if s["step"] == "epoch")["epoch.clips_per_s"] > 0


def test_gpu_check_rejects_an_unknown_flag(tmp_path):
    r = subprocess.run(["bash", str(SCRIPT), "--devise", "cuda"], cwd=tmp_path, capture_output=True, text=True,
                       env={**os.environ, "OUT": str(tmp_path / "o")})
    assert r.returncode == 2 and "unknown argument --devise" in r.stderr
