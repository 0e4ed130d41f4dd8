"""What every command that runs many trainings shares about its executor: the flags, their checks, the
environment a job carries and where MLflow must be.

Why one place: ``avbench sweep`` and ``avbench tune`` take the same ``--executor/--jobs/--address/
--threads-per-job/--gpus-per-job`` flags with the same meaning, so they are declared, checked and
turned into an executor here once.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path
from typing import Any

from avbench.errors import UserError

# The driver's MLflow settings travel with every job (a Ray node has its own environment).
TRACKING_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_USERNAME",
                "MLFLOW_TRACKING_PASSWORD", "MLFLOW_ENABLE_ASYNC_LOGGING")


def add_arguments(p: argparse.ArgumentParser, unit: str) -> None:
    """The executor flags, in their own help group; ``unit`` says what one job is."""
    ex = p.add_argument_group(f"where the jobs run (one job = {unit})")
    ex.add_argument("--executor", choices=("local", "ray"), default="local",
                    help="local: processes on this machine (default); ray: tasks on a Ray cluster")
    ex.add_argument("--jobs", type=int, help="local: jobs at once (default 1); the cores are divided between them")
    ex.add_argument("--address", help="ray: cluster address (auto, HOST:6379, ray://HOST:10001); "
                                      "default: start a local cluster for this command")
    ex.add_argument("--threads-per-job", type=int,
                    help="CPU threads of each job (local default: usable cores // --jobs; ray default: 1). "
                         "Give the same value to compare executors: float results can depend on it")
    ex.add_argument("--gpus-per-job", type=float, default=0.0,
                    help="GPUs of each job with --device cuda (ray: fractions such as 0.5 share a GPU)")


def from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The flags as request fields (``executor``, ``jobs``, ...), checked against ``--device``."""
    if args.gpus_per_job and not args.device.startswith("cuda"):
        raise UserError("--gpus-per-job needs --device cuda")
    for flag, value, low in (("--jobs", args.jobs, 1), ("--threads-per-job", args.threads_per_job, 1)):
        if value is not None and value < low:
            raise UserError(f"{flag} {value}: must be at least {low}")
    if args.gpus_per_job is not None and not (0 <= args.gpus_per_job < float("inf")):
        raise UserError(f"--gpus-per-job {args.gpus_per_job}: must be a finite number >= 0")
    return {"executor": args.executor, "jobs": args.jobs, "address": args.address,
            "threads_per_job": args.threads_per_job, "gpus_per_job": args.gpus_per_job}


def job_env() -> dict[str, str]:
    """The variables every job must see wherever it runs: the driver's tracking URI and credentials."""
    return {k: os.environ[k] for k in TRACKING_ENV if k in os.environ}


def absolute_paths(req: Any, **changes: Any) -> Any:
    """``req`` with its paths as the driver sees them (``results_dir``, ``cache_root``, ``cache``), so every
    job, in another working directory (Ray) or on another node, reads the same cache and writes the same
    results; ``changes`` are further fields to replace."""
    from avbench.paths import cache_root

    return dataclasses.replace(req, results_dir=str(Path(req.results_dir).expanduser().resolve()),
                               cache_root=str(cache_root(req.cache_root).resolve()),
                               cache=str(Path(req.cache).expanduser().resolve()) if req.cache else None, **changes)


def make(req: Any) -> Any:
    """The executor a request's ``executor/jobs/address/threads_per_job/gpus_per_job`` fields ask for."""
    from avbench.executor import make_executor

    return make_executor(req.executor, jobs=req.jobs, address=req.address, threads_per_job=req.threads_per_job,
                         gpus_per_job=req.gpus_per_job, env=job_env())


def check_tracking_shared(ex: Any, results_dir: str) -> None:
    """A multi-node cluster cannot share a file store: every node needs a tracking server it can reach."""
    from avbench.tracking import tracking_uri

    uri = tracking_uri(results_dir)
    if ex.multi_node and uri.startswith(("sqlite:", "file:")):
        raise UserError(f"the Ray cluster has several nodes but MLflow is {uri}, a file on this machine; "
                        "start a tracking server (mlflow server ...) and set MLFLOW_TRACKING_URI=http://HOST:PORT")
