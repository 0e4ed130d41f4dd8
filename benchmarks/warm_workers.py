"""Wall time of N small trainings on the local executor: warm workers vs a fresh process per job.

    python benchmarks/warm_workers.py --jobs 6 [--strategy late_fusion]

Each job is what a sweep or tuning job is: an ``avbench run`` (tiny synth: 4 classes, 96 clips, 1 epoch)
run inside the worker. One slot, one thread, so the difference is the per-job start-up (interpreter,
torch, MLflow, avbench imports) that warm workers pay once.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path


def run_cli(argv: list[str]) -> int:
    from avbench.cli import main

    return main(argv)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=6)
    ap.add_argument("--strategy", default="late_fusion")
    a = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from avbench.executor import Job
    from avbench.executor.local import LocalExecutor
    from helpers import run_args

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode, per_worker in (("fresh", 1), ("warm", 0), ("fresh2", 1), ("warm2", 0)):
            t0 = time.perf_counter()
            with LocalExecutor(jobs=1, threads_per_job=1, jobs_per_worker=per_worker) as ex:
                for i in range(a.jobs):
                    ex.submit(Job(str(i), run_cli, (run_args(a.strategy, Path(tmp) / mode / str(i), seeds=str(i),
                                                             model_sets=()),)))
                done = 0
                while done < a.jobs:
                    for o in ex.wait(timeout=1.0):
                        assert o.ok and o.value == 0, o.error
                        done += 1
            out[mode] = time.perf_counter() - t0
            print(f"{mode}: {a.jobs} jobs in {out[mode]:.1f} s ({out[mode] / a.jobs:.1f} s/job)", flush=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
