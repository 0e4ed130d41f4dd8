"""What every executor shares: a job, its outcome, the executor interface, and the code a worker runs.

A *job* is one unit of work that runs in another process (on this machine or on a Ray node): a
module-level function and its arguments, both picklable. An executor accepts jobs, reports each one's
*outcome* as it finishes (in completion order), and can cancel everything still running. The sweep
never needs to know where a job ran, which is why local and Ray sweeps give the same records.

``execute`` is the worker side: it fixes the job's CPU threads *before* torch runs anything, times
the call, and turns an exception into an error line, so a failing job is reported, never raised
into the driver.
"""

from __future__ import annotations

import abc
import os
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# Thread-count variables read by OpenMP / MKL / OpenBLAS when they start; set before torch starts its pool.
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


@dataclass(frozen=True)
class Job:
    key: str  # unique within one submission round; outcomes carry it back
    fn: Callable[..., Any]  # a module-level function (pickled by reference)
    args: tuple = ()
    label: str = ""  # what a progress line shows


@dataclass
class Outcome:
    key: str
    ok: bool
    value: Any = None
    error: str = ""
    cancelled: bool = False
    seconds: float = 0.0  # wall time of the call inside the worker
    worker: str = ""  # where it ran (pid, Ray node)
    threads: int = 0


@dataclass
class Resources:
    """What one job may use: CPU threads (intra-op) and GPUs (a fraction is allowed on Ray)."""

    threads: int = 1
    gpus: float = 0.0
    env: dict[str, str] = field(default_factory=dict)  # extra environment for the job (e.g. CUDA_VISIBLE_DEVICES)


class Executor(abc.ABC):
    """Runs jobs elsewhere. Use as a context manager so workers are always released."""

    name = "executor"
    multi_node = False  # jobs may run on other machines (then only a tracking server is shared)

    @property
    @abc.abstractmethod
    def slots(self) -> int:
        """How many jobs run at the same time."""

    @property
    @abc.abstractmethod
    def threads_per_job(self) -> int:
        """CPU threads each job runs with."""

    @abc.abstractmethod
    def submit(self, job: Job) -> None:
        """Queue a job; it starts when a slot is free."""

    @abc.abstractmethod
    def wait(self, timeout: float | None = None) -> list[Outcome]:
        """Outcomes of jobs that finished since the last call; blocks up to ``timeout`` for at least one."""

    @abc.abstractmethod
    def running(self) -> int:
        """Jobs started and not finished (an estimate where the engine does not say)."""

    @abc.abstractmethod
    def outstanding(self) -> int:
        """Jobs submitted and not yet reported by ``wait``."""

    @abc.abstractmethod
    def cancel(self) -> None:
        """Stop every queued and running job (a running job sees KeyboardInterrupt), then return."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release workers; safe to call twice."""

    def __enter__(self) -> Executor:  # noqa: PYI034 -- typing.Self needs 3.11; 3.10 is supported
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def describe(self) -> str:
        return f"{self.name}: {self.slots} job(s) at a time, {self.threads_per_job} thread(s) each"


def set_thread_env(threads: int) -> None:
    """The environment a worker's math libraries read at start-up (must precede ``import torch``)."""
    for var in THREAD_ENV:
        os.environ[var] = str(threads)


def configure_threads(threads: int) -> int:
    """Set torch's intra-op threads in this worker (``avbench.hardware``; imports torch)."""
    from avbench.hardware import configure_threads as hw_configure

    return int(hw_configure(threads))


def usable_cpus() -> int:
    """Cores this process may use: affinity, cgroup quota and OMP_NUM_THREADS (``avbench.hardware``)."""
    from avbench.hardware import usable_cpus as hw_usable

    return max(1, int(hw_usable()))


def describe_error(e: BaseException) -> str:
    """One line: a UserError's message as is; anything else with its type and where it was raised."""
    from avbench.errors import UserError

    if isinstance(e, UserError):
        return str(e)
    tb = traceback.extract_tb(e.__traceback__)
    where = f" ({tb[-1].filename.rsplit('/', 1)[-1]}:{tb[-1].lineno})" if tb else ""
    return f"{type(e).__name__}: {e}{where}"


def execute(job: Job, resources: Resources) -> Outcome:
    """Run one job in this (worker) process with its resources; never raises."""
    for k, v in resources.env.items():
        os.environ[k] = v
    set_thread_env(resources.threads)
    threads = configure_threads(resources.threads)
    where = f"pid {os.getpid()}"
    t0 = time.perf_counter()
    try:
        value = job.fn(*job.args)
    except KeyboardInterrupt:
        return Outcome(job.key, False, error="cancelled", cancelled=True, seconds=time.perf_counter() - t0,
                       worker=where, threads=threads)
    except BaseException as e:  # noqa: BLE001 -- a job's failure is data for the driver, not a crash of the worker
        return Outcome(job.key, False, error=describe_error(e), seconds=time.perf_counter() - t0,
                       worker=where, threads=threads)
    return Outcome(job.key, True, value=value, seconds=time.perf_counter() - t0, worker=where, threads=threads)
