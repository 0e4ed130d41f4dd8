"""``--executor ray``: every job is a Ray task with its own CPUs (and GPUs, fractions allowed).

Why Ray: users with a cluster already run it, and it schedules tasks with resource requests, so a
sweep spreads over nodes without a scheduler of ours. The task runs the same ``execute`` as a local
worker, with the same thread count, so a job's numbers do not depend on where it ran. ``--address``
joins an existing cluster (``auto``, ``HOST:6379``, ``ray://HOST:10001``); without it Ray starts a
local one for the sweep and stops it afterwards.

Every node must be able to import avbench (the same install) and read the cache path, and MLflow must
be reachable from every node (a tracking server; see the README).

A job records the avbench command that asked for it, as a local worker does: the driver's command
line travels with the task (``results.use_command``), so ``provenance.command``, ``mlflow.source.name``
and the run description say ``avbench sweep ...``, never Ray's ``default_worker.py``. A job's warnings
and errors reach the user's console: Ray forwards each task's output to the driver, and every message
of the ``avbench`` logger is prefixed with the job (``[uavm s_dim=64 seed 1] warning: ...``).
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

from avbench import results
from avbench.errors import UserError
from avbench.executor.base import (
    Executor,
    Job,
    Outcome,
    Resources,
    describe_error,
    execute,
)


class _JobFormat(logging.Formatter):
    """``[job] warning: message``: which job said it, on a console that shows many jobs."""

    def __init__(self, job: str):
        super().__init__()
        self.job = job

    def format(self, record: logging.LogRecord) -> str:
        return f"[{self.job}] {record.levelname.lower()}: {record.getMessage()}"


def execute_recorded(job: Job, resources: Resources, command: list[str]) -> Outcome:
    """The Ray task: ``execute`` with the driver's command line recorded as this job's, and the avbench
    logger's warnings and errors on stderr prefixed with the job (Ray forwards them to the driver)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.WARNING)
    handler.setFormatter(_JobFormat(job.label or job.key))
    logger = logging.getLogger("avbench")
    saved = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.propagate = False  # once, through this handler
    if logger.getEffectiveLevel() > logging.WARNING:
        logger.setLevel(logging.WARNING)
    results.use_command(command)
    try:
        return execute(job, resources)
    finally:
        results.use_command(None)
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]
        handler.flush()


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise UserError("--executor ray needs Ray: pip install 'avbench[ray]'") from None
    return ray


class RayExecutor(Executor):
    name = "ray"

    def __init__(self, address: str | None = None, threads_per_job: int | None = None, gpus_per_job: float = 0.0,
                 env: dict[str, str] | None = None, init_kwargs: dict[str, Any] | None = None):
        ray = import_ray()
        self._ray = ray
        threads_per_job = 1 if threads_per_job is None else threads_per_job
        if threads_per_job < 1:
            raise UserError("--threads-per-job must be at least 1")
        if gpus_per_job < 0:
            raise UserError("--gpus-per-job must be positive")
        self._owns = not ray.is_initialized()
        if self._owns:
            try:
                ray.init(address=address, include_dashboard=False, log_to_driver=True, **(init_kwargs or {}))
            except ConnectionError as e:
                raise UserError(f"--address {address}: cannot reach a Ray cluster ({e})") from None
        self._threads = threads_per_job
        self._gpus = float(gpus_per_job)
        self._env = dict(env or {})
        self.multi_node = sum(1 for n in ray.nodes() if n.get("Alive")) > 1
        cluster = ray.cluster_resources()
        self._slots = max(1, int(cluster.get("CPU", 1) // threads_per_job))
        if self._gpus:
            self._slots = min(self._slots, max(1, int(cluster.get("GPU", 0) // self._gpus)))
            if cluster.get("GPU", 0) < self._gpus:
                raise UserError(f"--gpus-per-job {self._gpus:g}: the Ray cluster has {cluster.get('GPU', 0):g} GPU(s)")
        if cluster.get("CPU", 0) < threads_per_job:
            raise UserError(f"--threads-per-job {threads_per_job}: the Ray cluster has {cluster.get('CPU', 0):g} CPU(s)")
        self._task = ray.remote(execute_recorded).options(name="avbench", num_cpus=threads_per_job,
                                                          num_gpus=self._gpus, max_retries=0)
        self._refs: dict[Any, str] = {}
        self._closed = False

    @property
    def slots(self) -> int:
        return self._slots

    @property
    def threads_per_job(self) -> int:
        return self._threads

    def submit(self, job: Job) -> None:
        if self._closed:
            raise RuntimeError("executor is closed")
        # Ray assigns GPUs itself (CUDA_VISIBLE_DEVICES per task); only the threads travel with the job.
        res = Resources(threads=self._threads, gpus=self._gpus, env=self._env)
        self._refs[self._task.remote(job, res, results.command())] = job.key

    def wait(self, timeout: float | None = None) -> list[Outcome]:
        if not self._refs:
            return []
        ready, _ = self._ray.wait(list(self._refs), num_returns=1, timeout=timeout)
        if ready:  # collect everything else that is already done too
            ready, _ = self._ray.wait(list(self._refs), num_returns=len(self._refs), timeout=0)
        out = []
        for ref in ready:
            key = self._refs.pop(ref)
            try:
                out.append(self._ray.get(ref))
            except Exception as e:  # noqa: BLE001 -- the worker died (node lost, out of memory) or the task was cancelled
                cancelled = isinstance(e, self._ray.exceptions.TaskCancelledError)
                out.append(Outcome(key, False, error="cancelled" if cancelled else describe_error(e),
                                   cancelled=cancelled, threads=self._threads))
        return out

    def running(self) -> int:
        """Ray does not say which tasks started; jobs beyond the cluster's slots are counted as queued."""
        return min(len(self._refs), self._slots)

    def outstanding(self) -> int:
        return len(self._refs)

    def cancel(self, grace_s: float = 20.0) -> None:
        """Queued tasks are dropped; running ones see KeyboardInterrupt (and mark their runs KILLED)."""
        self._closed = True
        refs = list(self._refs)
        for ref in refs:
            self._ray.cancel(ref, force=False)
        deadline = time.monotonic() + grace_s
        pending = refs
        while pending and time.monotonic() < deadline:
            _, pending = self._ray.wait(pending, num_returns=len(pending), timeout=0.5)
        for ref in pending:
            self._ray.cancel(ref, force=True)
        self._refs.clear()

    def close(self) -> None:
        if self._refs:
            self.cancel()
        self._closed = True
        if self._owns and self._ray.is_initialized():
            self._ray.shutdown()
            self._owns = False
