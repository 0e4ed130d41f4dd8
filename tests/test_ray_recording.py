"""A job on the Ray executor (a local Ray head, the ``ray`` extra) records the avbench command that asked
for it, not Ray's worker, and its warnings reach the driver's console prefixed with the job."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

DRIVER = r'''
import json, logging, sys, time
from avbench import results
from avbench.executor import Job
from avbench.executor.ray_backend import RayExecutor


def job_fn():
    from avbench import results, tracking
    logging.getLogger("avbench.train").warning("not converged: validation mAP still rising (test)")
    logging.getLogger("avbench.train").info("an info line stays in the job")
    return {"command": results.command(), "source": tracking.source_tags(), "argv0": sys.argv[0]}


if __name__ == "__main__":
    results.set_command(["sweep", "--strategy", "sum", "--grid", "lr=0.1,0.2"])
    with RayExecutor(threads_per_job=1, init_kwargs={"num_cpus": 1}) as ex:
        ex.submit(Job(key="0:0", fn=job_fn, label="sum lr=0.1 seed 0"))
        outcomes = []
        while ex.outstanding():
            outcomes += ex.wait(timeout=5)
        time.sleep(3)  # Ray forwards a task's output asynchronously: let it reach this console
    (o,) = outcomes
    assert o.ok, o.error
    print("RESULT " + json.dumps(o.value), flush=True)
'''


@pytest.mark.slow
def test_a_ray_job_records_the_avbench_command_and_shows_its_warnings(tmp_path):
    pytest.importorskip("ray")
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "RAY_DEDUP_LOGS": "0", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    line = next(x for x in out.stdout.splitlines() if x.startswith("RESULT "))
    got = json.loads(line[len("RESULT "):])
    assert got["argv0"].endswith("default_worker.py")  # it really ran in a Ray worker ...
    assert got["command"] == ["avbench", "sweep", "--strategy", "sum", "--grid", "lr=0.1,0.2"]  # ... as avbench
    assert got["source"]["mlflow.source.name"] == "avbench sweep"
    assert got["source"]["mlflow.note.content"] == "avbench sweep --strategy sum --grid lr=0.1,0.2"
    console = out.stdout + out.stderr
    assert "[sum lr=0.1 seed 0] warning: not converged: validation mAP still rising (test)" in console
    assert "an info line stays in the job" not in console
