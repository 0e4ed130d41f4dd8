"""Where the many small trainings of a sweep run: ``local`` (N processes on this machine) or ``ray``.

One interface (``Executor``: submit jobs, collect outcomes as they finish, cancel), so the sweep's
bookkeeping (MLflow resume, failures, progress) is written once and is the same on a laptop and on a
cluster. ``make_executor`` turns the command-line flags into one.
"""

from __future__ import annotations

from avbench.errors import UserError
from avbench.executor.base import (
    Executor,
    Job,
    Outcome,
    Resources,
    execute,
    usable_cpus,
)

KINDS = ("local", "ray")

__all__ = ["KINDS", "Executor", "Job", "Outcome", "Resources", "execute", "make_executor", "usable_cpus"]


def make_executor(kind: str = "local", jobs: int | None = None, address: str | None = None,
                  threads_per_job: int | None = None, gpus_per_job: float = 0.0,
                  env: dict[str, str] | None = None) -> Executor:
    """``local``: ``jobs`` workers (default 1), threads = usable cores // jobs unless given.
    ``ray``: tasks of ``threads_per_job`` CPUs (default 1) and ``gpus_per_job`` GPUs on ``address``.
    ``env``: variables every job sees (the driver's tracking URI, say), wherever it runs."""
    if kind == "local":
        if address is not None:
            raise UserError("--address is for --executor ray")
        from avbench.executor.local import LocalExecutor

        return LocalExecutor(jobs=jobs or 1, threads_per_job=threads_per_job, gpus_per_job=gpus_per_job, env=env)
    if kind == "ray":
        if jobs is not None:
            raise UserError("--jobs is for --executor local; on Ray the cluster's CPUs / --threads-per-job "
                            "decide how many jobs run at once")
        from avbench.executor.ray_backend import RayExecutor

        return RayExecutor(address=address, threads_per_job=threads_per_job, gpus_per_job=gpus_per_job, env=env)
    raise UserError(f"unknown --executor '{kind}' (choose from {', '.join(KINDS)})")
