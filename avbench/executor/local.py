"""``--executor local --jobs N``: N worker processes on this machine, each running one job at a time.

Why persistent spawned workers ("warm" workers, the way Ray keeps actors): a job must start in a
process whose thread settings were fixed before torch started (``spawn``, never ``fork`` of a parent
that already ran torch), but importing torch and MLflow (and opening the MLflow store, which MLflow
caches per URI in the process) costs several seconds, so each worker pays it once and then runs job
after job; the driver hands it one job at a time over a pipe (so it always knows which job a worker
that died was running). Between jobs the worker puts back everything process-wide a job may have
changed (environment, cwd, argv, logging handlers, RNGs, torch switches, MLflow's active run:
``avbench.executor.isolation``), so a job's numbers are those of a fresh process. A worker that dies
(``os._exit``, SIGKILL, out of memory) fails only the job it was running; a fresh worker takes the
next one. ``jobs_per_worker=1`` (or ``AVBENCH_JOBS_PER_WORKER=1``) is the per-process mode: a fresh
worker for every job. The cores
are divided between the workers (``threads = usable cores // N`` unless given), so N jobs never
oversubscribe the machine. GPUs: worker i sees its own device(s) through ``CUDA_VISIBLE_DEVICES``.

Workers ignore Ctrl-C (the terminal sends it to the whole process group); the driver cancels instead:
SIGTERM makes the running job see KeyboardInterrupt, so it can mark its MLflow run KILLED. A worker
whose driver was killed hard gets the same SIGTERM (Linux ``PR_SET_PDEATHSIG``; elsewhere it exits
after its current job).
"""

from __future__ import annotations

import gc
import multiprocessing as mp
import multiprocessing.connection as mp_connection
import os
import signal
import sys
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from avbench.errors import UserError
from avbench.executor.base import (
    THREAD_ENV,
    Executor,
    Job,
    Outcome,
    Resources,
    execute,
    set_thread_env,
    usable_cpus,
)
from avbench.executor.isolation import WorkerState

_POLL_S = 0.5  # how often an idle worker checks that its driver is alive
_EXIT_GRACE_S = 3.0  # how long close() lets idle workers exit on their own
_PR_SET_PDEATHSIG = 1  # linux/prctl.h
JOBS_PER_WORKER_ENV = "AVBENCH_JOBS_PER_WORKER"  # 0 or unset: no limit (warm); 1: a fresh process per job
PRELOAD = ("torch", "avbench.log", "avbench.results")  # what every job imports: a worker imports it while idle


class LocalExecutor(Executor):
    name = "local"

    def __init__(self, jobs: int = 1, threads_per_job: int | None = None, gpus_per_job: float = 0.0,
                 gpu_ids: list[str] | None = None, env: dict[str, str] | None = None,
                 jobs_per_worker: int | None = None):
        if jobs < 1:
            raise UserError("--jobs must be at least 1")
        cores = usable_cpus()
        if threads_per_job is None:
            threads_per_job = max(1, cores // jobs)
        if threads_per_job < 1:
            raise UserError("--threads-per-job must be at least 1")
        if jobs * threads_per_job > cores:
            raise UserError(f"{jobs} job(s) x {threads_per_job} thread(s) would oversubscribe the {cores} usable "
                            f"core(s); lower --jobs or --threads-per-job")
        if jobs_per_worker is None:
            raw = os.environ.get(JOBS_PER_WORKER_ENV, "").strip() or "0"
            if not raw.isdigit():
                raise UserError(f"{JOBS_PER_WORKER_ENV} must be a whole number (0: keep workers warm; 1: a fresh "
                                f"process per job), got '{raw}'")
            jobs_per_worker = int(raw)
        if jobs_per_worker < 0:
            raise UserError("jobs per worker must be 0 (no limit) or more")
        self._jobs = jobs
        self._per_worker = jobs_per_worker
        self._threads = threads_per_job
        self._envs = [{**(env or {}), **g} for g in _gpu_envs(jobs, gpus_per_job, gpu_ids)]
        self._ctx = mp.get_context("spawn")
        self._workers: list[_Worker | None] = [None] * jobs
        self._queue: deque[Job] = deque()  # submitted, not yet handed to a worker
        self._closed = False

    @property
    def slots(self) -> int:
        return self._jobs

    @property
    def threads_per_job(self) -> int:
        return self._threads

    # --- workers ------------------------------------------------------------------------------------
    def _spawn(self, i: int) -> _Worker:
        res = Resources(threads=self._threads, env=self._envs[i])
        ours, theirs = self._ctx.Pipe(duplex=True)
        # The child inherits this environment at exec: its OpenMP pool starts at the job's size.
        saved = {k: os.environ.get(k) for k in THREAD_ENV}
        set_thread_env(self._threads)
        try:
            p = self._ctx.Process(target=_worker_main, args=(res, theirs, os.getpid(), self._per_worker),
                                  name=f"avbench-job-{i}", daemon=True)
            p.start()
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        theirs.close()
        self._workers[i] = _Worker(p, ours)
        return self._workers[i]

    def _dispatch(self) -> None:
        """Hand queued jobs to idle workers (starting workers on first use)."""
        for i in range(self._jobs):
            if not self._queue:
                return
            w = self._workers[i] or self._spawn(i)
            if w.job is not None:
                continue
            job = self._queue.popleft()
            w.job = job
            try:
                w.conn.send(job)
            except (BrokenPipeError, OSError):
                pass  # the worker is dead: wait() reports the job failed and replaces it

    def _retire(self, i: int) -> Outcome | None:
        """A worker that died (killed, out of memory, a crash in C) fails its job and is replaced."""
        w = self._workers[i]
        w.process.join(1)
        w.conn.close()
        self._workers[i] = None
        if w.job is None:
            return None
        return Outcome(w.job.key, False, error=f"worker process exited with code {w.process.exitcode} during the job",
                       worker=f"pid {w.process.pid}", threads=self._threads)

    def _recycle(self, i: int) -> None:
        """A worker that ran its ``jobs_per_worker`` jobs exits by itself; the next job gets a fresh one."""
        w = self._workers[i]
        w.process.join(_EXIT_GRACE_S)
        if w.process.is_alive():
            w.process.kill()
            w.process.join(5)
        w.conn.close()
        self._workers[i] = None

    def describe(self) -> str:
        mode = "a fresh process per job" if self._per_worker == 1 else "warm workers"
        return f"{super().describe()}, {mode}"

    # --- interface ----------------------------------------------------------------------------------
    def submit(self, job: Job) -> None:
        if self._closed:
            raise RuntimeError("executor is closed")
        self._queue.append(job)
        self._dispatch()

    def wait(self, timeout: float | None = None) -> list[Outcome]:
        busy = {i: w for i, w in enumerate(self._workers) if w is not None and w.job is not None}
        if not busy:
            return []
        handles = {}
        for i, w in busy.items():
            handles[w.conn] = i
            handles[w.process.sentinel] = i
        out: list[Outcome] = []
        for ready in mp_connection.wait(list(handles), timeout):
            i = handles[ready]
            w = self._workers[i]
            if w is None or w.job is None:
                continue  # both handles of one worker were ready
            outcome = None
            if ready is w.conn or w.conn.poll():
                try:
                    outcome = w.conn.recv()
                except (EOFError, OSError):
                    outcome = None
            if outcome is not None:
                w.job = None
                w.done += 1
                out.append(outcome)
                if self._per_worker and w.done >= self._per_worker:
                    self._recycle(i)
            elif not w.process.is_alive():
                retired = self._retire(i)
                if retired is not None:
                    out.append(retired)
        self._dispatch()
        return out

    def running(self) -> int:
        return sum(1 for w in self._workers if w is not None and w.job is not None)

    def outstanding(self) -> int:
        return self.running() + len(self._queue)

    def cancel(self, grace_s: float = 20.0) -> None:
        """Drop queued jobs, interrupt running ones (they mark their runs KILLED), stop the workers."""
        self._closed = True
        self._queue.clear()
        alive = [w for w in self._workers if w is not None]
        for w in alive:
            if w.process.is_alive():
                w.process.terminate()  # SIGTERM: KeyboardInterrupt inside the job
        deadline = time.monotonic() + grace_s
        for w in alive:
            w.process.join(max(0.1, deadline - time.monotonic()))
            if w.process.is_alive():
                w.process.kill()
                w.process.join(5)
            w.conn.close()
        self._workers = [None] * self._jobs

    def close(self) -> None:
        if self.running() or self._queue:
            self.cancel()
            return
        self._closed = True
        live = [w for w in self._workers if w is not None]
        for w in live:
            try:
                w.conn.send(None)
            except (BrokenPipeError, OSError):
                pass
        deadline = time.monotonic() + _EXIT_GRACE_S
        for w in live:
            w.process.join(max(0.1, deadline - time.monotonic()))
            if w.process.is_alive():  # idle: only interpreter exit hooks are left (MLflow telemetry waits ~5 s)
                w.process.kill()
                w.process.join(5)
            w.conn.close()
        self._workers = [None] * self._jobs


@dataclass
class _Worker:
    process: Any
    conn: Any
    job: Job | None = None  # the job it runs now
    done: int = 0  # jobs it finished


def _gpu_envs(jobs: int, gpus_per_job: float, gpu_ids: list[str] | None) -> list[dict[str, str]]:
    """Worker i's CUDA_VISIBLE_DEVICES: whole GPUs each, or 1/k of one (k workers share a device)."""
    if not gpus_per_job:
        return [{} for _ in range(jobs)]
    if gpus_per_job < 0:
        raise UserError("--gpus-per-job must be positive")
    if gpu_ids is None:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        if visible is not None:
            gpu_ids = [g for g in visible.split(",") if g.strip()]
        else:
            import torch

            gpu_ids = [str(i) for i in range(torch.cuda.device_count())]
    need = jobs * gpus_per_job
    if need > len(gpu_ids) + 1e-9:
        raise UserError(f"{jobs} job(s) x {gpus_per_job:g} GPU(s) need {need:g} GPU(s); {len(gpu_ids)} visible")
    if gpus_per_job >= 1:
        if not float(gpus_per_job).is_integer():
            raise UserError("locally, --gpus-per-job is a whole number or a fraction 1/k (0.5, 0.25)")
        g = int(gpus_per_job)
        return [{"CUDA_VISIBLE_DEVICES": ",".join(gpu_ids[i * g:(i + 1) * g])} for i in range(jobs)]
    share = round(1 / gpus_per_job)
    if abs(share * gpus_per_job - 1) > 1e-6:
        raise UserError("locally, --gpus-per-job is a whole number or a fraction 1/k (0.5, 0.25)")
    return [{"CUDA_VISIBLE_DEVICES": gpu_ids[i // share]} for i in range(jobs)]


def _worker_main(resources: Resources, conn: Any, driver_pid: int, jobs_per_worker: int = 0) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
    signal.signal(signal.SIGTERM, _interrupt)
    _terminate_with_driver()
    if os.getppid() != driver_pid:
        return
    done = 0
    try:
        # The job's environment and threads first (torch reads them on import), then what every job imports,
        # then the state every job starts from.
        for k, v in resources.env.items():
            os.environ[k] = v
        set_thread_env(resources.threads)
        _preload()
        state = WorkerState.capture()
        while True:
            if not conn.poll(_POLL_S):
                if os.getppid() != driver_pid:
                    return  # the driver is gone: nobody will read our results
                continue
            job = conn.recv()
            if job is None:
                return
            outcome = execute(job, resources)
            conn.send(outcome)
            done += 1
            if outcome.cancelled or (jobs_per_worker and done >= jobs_per_worker):
                return
            state.restore()  # while the driver reads the outcome and picks the next job
    except (KeyboardInterrupt, EOFError, BrokenPipeError):
        return
    finally:
        gc.freeze()  # the worker's exit skips collecting what torch and MLflow made (as avbench.cli.entry)


def _preload() -> None:
    import importlib

    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001,S110 -- the job will import it and report the error itself
            pass


def _terminate_with_driver() -> None:
    """Linux: SIGTERM this worker when the driver dies (killed hard), so its job ends KILLED, not orphaned.
    Elsewhere an idle worker notices within ``_POLL_S`` and a busy one after its job."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt
