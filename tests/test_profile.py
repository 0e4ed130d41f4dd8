"""``avbench run --profile``: the phases are all there, none negative, and with ``other`` they sum to
the run's wall time (a property of the accounting, not a speed)."""

import json
import subprocess
import sys
import time

from avbench import profile as prof
from helpers import run_args

WRAPPER = ("import sys, time; from avbench.cli import main; rc = main(sys.argv[1:]); "
           "print('MAIN-END', repr(time.time()), file=sys.stderr); sys.exit(rc)")


def test_nested_phases_are_exclusive_and_off_costs_nothing():
    assert prof.active() is None
    with prof.phase("training"):  # off: nothing recorded anywhere
        pass
    p = prof.begin()
    try:
        with prof.phase("training"):
            with prof.phase("validation"):
                pass
        rep = prof.snapshot()
    finally:
        prof.end()
    assert prof.active() is None and not p.stack
    assert set(rep["phases"]) == set(prof.PHASES)
    assert all(v >= 0 for v in rep["phases"].values())
    assert abs(sum(rep["phases"].values()) - rep["wall_seconds"]) < 1e-3


def test_run_profile_phases_sum_to_the_wall_time(tmp_path):
    out = tmp_path / "out.json"
    args = run_args("uavm", tmp_path / "res", "--profile", "--cache-root", str(tmp_path / "cache"),
                    "--output-json", str(out), epochs=2)
    t0 = time.time()
    p = subprocess.run([sys.executable, "-c", WRAPPER] + args, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-2000:]
    ended = float(next(line.split()[1] for line in p.stderr.splitlines() if line.startswith("MAIN-END")))
    measured = ended - t0  # from before the process was started until main returned
    assert "where the wall time went" in p.stdout and "training steps" in p.stdout
    rep = json.loads(out.read_text())["profile"]
    assert set(rep["phases"]) == set(prof.PHASES)
    assert all(v >= 0 for v in rep["phases"].values())
    assert rep["phases"]["training"] > 0 and rep["phases"]["test_eval"] > 0 and rep["phases"]["tracking"] > 0
    total = sum(rep["phases"].values())
    assert abs(total - rep["wall_seconds"]) < 0.01
    if rep["startup_measured"]:
        assert abs(total - measured) <= 0.05 * measured + 0.3, (total, measured)
    seed_result = json.loads(next((tmp_path / "res" / "runs").glob("*/seed0/result.json")).read_text())
    assert set(seed_result["profile"]["phases"]) == set(prof.PHASES)
