"""Executors: jobs in other processes with their own threads, failures as data, cancellation, worker
death, and concurrent MLflow writes to one sqlite store from two local jobs."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from avbench.errors import UserError
from avbench.executor import Job, make_executor
from avbench.executor.local import LocalExecutor, _gpu_envs

TWO_CORES = len(os.sched_getaffinity(0)) >= 2


# --- job functions (module level: spawned workers import them by name) ------------------------------
def where_and_threads(tag: str) -> dict:
    import torch

    return {"tag": tag, "pid": os.getpid(), "torch_threads": torch.get_num_threads(),
            "omp": os.environ.get("OMP_NUM_THREADS")}


def fail(message: str) -> None:
    raise ValueError(message)


def sleep_then_note(path: str, seconds: float) -> str:
    """Sleeps; if interrupted, leaves a note (what the runner does: mark the run KILLED)."""
    try:
        Path(path + ".started").write_text("1")
        time.sleep(seconds)
    except KeyboardInterrupt:
        Path(path).write_text("interrupted")
        raise
    return "slept"


def die_hard() -> None:
    os._exit(7)


def log_many(results_dir: str, run_id: str, prefix: str, batches: int) -> int:
    """Hammer one sqlite store: many small metric batches and params into one run."""
    from avbench.tracking import Tracker

    tr = Tracker(results_dir)
    for i in range(batches):
        tr.log_metrics(run_id, {f"{prefix}/a": float(i), f"{prefix}/b": float(2 * i)}, step=i)
        tr.log_params(run_id, {f"{prefix}.p{i}": i})
    return batches


def kill_self() -> None:
    import signal

    os.kill(os.getpid(), signal.SIGKILL)


def leave_a_mess(tmp: str) -> int:
    """Everything process-wide a job could change and forget to put back."""
    import logging
    import random
    import sys

    import numpy as np
    import torch

    from avbench import log, results

    os.chdir(tmp)
    os.environ["AVBENCH_TEST_LEAK"] = "1"
    os.environ["OMP_NUM_THREADS"] = "7"
    sys.argv[:] = ["leaked"]
    results.set_command(["run", "--leaked"])
    log.setup(verbose=2)
    logging.getLogger().addHandler(logging.StreamHandler())
    logging.getLogger().setLevel(logging.DEBUG)
    torch.manual_seed(123)
    random.seed(1)
    np.random.seed(1)
    torch.set_default_dtype(torch.float64)
    torch.set_grad_enabled(False)
    torch.use_deterministic_algorithms(True)
    torch.set_float32_matmul_precision("medium")
    return os.getpid()


def state() -> dict:
    """What a job sees of the process when it starts."""
    import logging
    import sys

    import torch

    from avbench import results

    return {"pid": os.getpid(), "cwd": os.getcwd(), "leak": os.environ.get("AVBENCH_TEST_LEAK"),
            "omp": os.environ.get("OMP_NUM_THREADS"), "argv": list(sys.argv), "command": results.command(),
            "root_handlers": len(logging.getLogger().handlers), "root_level": logging.getLogger().level,
            "avbench_handlers": len(logging.getLogger("avbench").handlers),
            "torch_seeded_by_the_last_job": torch.initial_seed() == 123, "dtype": str(torch.get_default_dtype()),
            "grad": torch.is_grad_enabled(), "deterministic": torch.are_deterministic_algorithms_enabled(),
            "matmul": torch.get_float32_matmul_precision(), "threads": torch.get_num_threads()}


def run_cli(argv: list[str], out_json: str) -> dict:
    """A job as a sweep or a tuning trial is: an ``avbench`` command run in the worker; its seeds' metrics."""
    import json

    from avbench.cli import main

    assert main(argv + ["--output-json", out_json]) == 0
    return {s["seed"]: s["metrics"] for s in json.loads(Path(out_json).read_text())["seeds"]}


def _drain(ex, n: int, timeout: float = 120.0) -> dict:
    out, deadline = {}, time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        for o in ex.wait(timeout=1.0):
            out[o.key] = o
    return out


@pytest.fixture
def two_threads(monkeypatch):
    if not TWO_CORES:
        pytest.skip("needs 2 usable cores")
    monkeypatch.setenv("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="module")
def pool():
    """Two workers shared by the tests of this module (starting workers costs a torch import each)."""
    if not TWO_CORES:
        pytest.skip("needs 2 usable cores")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_NUM_THREADS", "2")
        mp.setenv("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
        ex = LocalExecutor(jobs=2)
        ex.submit(Job("warm", where_and_threads, ("warm",)))
        _drain(ex, 1)
    yield ex
    ex.close()


def test_jobs_run_elsewhere_with_cores_divided_and_failures_are_data(pool):
    """Two workers, one thread each; a raising job and a worker that dies are reported, the rest finish."""
    ex = pool
    assert (ex.slots, ex.threads_per_job) == (2, 1)
    ex.submit(Job("bad", fail, ("no such value 42",)))
    ex.submit(Job("dies", die_hard))
    for i in range(3):
        ex.submit(Job(f"k{i}", where_and_threads, (f"t{i}",)))
    out = _drain(ex, 5)
    assert sorted(out) == ["bad", "dies", "k0", "k1", "k2"]
    assert not out["bad"].ok and out["bad"].error.startswith("ValueError: no such value 42 (test_executor.py:")
    assert not out["dies"].ok and "exited with code 7" in out["dies"].error
    good = [out[f"k{i}"] for i in range(3)]
    assert all(o.ok for o in good) and {o.value["tag"] for o in good} == {"t0", "t1", "t2"}
    assert {o.value["torch_threads"] for o in good} == {1} and {o.value["omp"] for o in good} == {"1"}
    assert os.getpid() not in {o.value["pid"] for o in good}


def test_oversubscription_and_bad_flags_are_user_errors(two_threads):
    with pytest.raises(UserError, match="oversubscribe the 2 usable"):
        LocalExecutor(jobs=3)
    with pytest.raises(UserError, match="oversubscribe"):
        LocalExecutor(jobs=2, threads_per_job=2)
    with pytest.raises(UserError, match="--address is for --executor ray"):
        make_executor("local", address="auto")
    with pytest.raises(UserError, match="--jobs is for --executor local"):
        make_executor("ray", jobs=2)
    with pytest.raises(UserError, match="unknown --executor 'slurm'"):
        make_executor("slurm")


def test_gpu_assignment_whole_and_shared():
    assert _gpu_envs(2, 1, ["0", "1"]) == [{"CUDA_VISIBLE_DEVICES": "0"}, {"CUDA_VISIBLE_DEVICES": "1"}]
    assert _gpu_envs(4, 0.5, ["0", "1"]) == [{"CUDA_VISIBLE_DEVICES": g} for g in "0011"]
    assert _gpu_envs(1, 2, ["0", "1"]) == [{"CUDA_VISIBLE_DEVICES": "0,1"}]
    with pytest.raises(UserError, match="need 3 GPU"):
        _gpu_envs(3, 1, ["0", "1"])
    with pytest.raises(UserError, match="fraction 1/k"):
        _gpu_envs(1, 0.3, ["0"])


def test_one_job_gets_every_core_and_cancel_interrupts_it(tmp_path, two_threads):
    note = tmp_path / "note"
    ex = LocalExecutor(jobs=1)
    ex.submit(Job("solo", where_and_threads, ("s",)))
    assert _drain(ex, 1)["solo"].value["torch_threads"] == 2
    ex.submit(Job("long", sleep_then_note, (str(note), 120.0)))
    ex.submit(Job("queued", sleep_then_note, (str(tmp_path / "never"), 0.0)))
    deadline = time.monotonic() + 60
    while not Path(str(note) + ".started").exists() and time.monotonic() < deadline:
        ex.wait(timeout=0.2)
    assert ex.running() == 1 and ex.outstanding() == 2
    ex.cancel()
    assert note.read_text() == "interrupted"  # the job saw KeyboardInterrupt and could clean up
    assert not (tmp_path / "never.started").exists()
    assert ex.outstanding() == 0
    ex.close()


def test_two_jobs_write_one_sqlite_store_concurrently(tmp_path, pool):
    """The store is created once by the driver; two workers then log into it at the same time."""
    from avbench.tracking import Tracker

    res = tmp_path / "res"
    tr = Tracker(res)
    exp = tr.experiment_id("concurrency")
    runs = [tr.client.create_run(exp).info.run_id for _ in range(2)]
    n = 40
    for i, run in enumerate(runs):
        pool.submit(Job(f"w{i}", log_many, (str(res), run, f"w{i}", n)))
    out = _drain(pool, 2, timeout=300)
    assert [out[f"w{i}"].error for i in range(2)] == ["", ""]
    for i, run in enumerate(runs):
        data = tr.client.get_run(run).data
        assert len(data.params) == n
        history = tr.client.get_metric_history(run, f"w{i}/b")
        assert sorted(m.step for m in history) == list(range(n))
        assert {m.value for m in history} == {float(2 * s) for s in range(n)}


def test_progress_counts_and_eta_for_the_whole_sweep(capsys):
    """ETA = mean wall of jobs finished in this session x jobs left / jobs at once; skipped jobs don't count."""
    from avbench.executor.progress import SweepProgress

    p = SweepProgress(total=8, slots=2, already_done=2, already_failed=1, enabled=False)
    assert p.eta_seconds() is None and p.status() == "0 running, 1 failed, ETA ?"
    p.set_running(2)
    p.finished(10.0, failed=False, line="[3/8] a: ran")
    p.finished(30.0, failed=False, line="[4/8] b: ran")
    assert p.eta_seconds() == pytest.approx(20.0 * 4 / 2)
    p.running = 1
    p.finished(0.0, failed=True, line="[5/8] c: failed: boom")
    p.close()
    assert (p.done, p.failed) == (5, 2)
    lines = capsys.readouterr().out.splitlines()
    assert lines == ["[3/8] a: ran  [2 running, 1 failed, ETA 0:25]", "[4/8] b: ran  [2 running, 1 failed, ETA 0:40]",
                     "[5/8] c: failed: boom  [1 running, 2 failed, ETA 0:30]"]


DRIVER = """
import sys, time
from avbench.executor import Job
from avbench.executor.local import LocalExecutor
import test_executor as te
ex = LocalExecutor(jobs=1, threads_per_job=1)
ex.submit(Job("long", te.sleep_then_note, (sys.argv[1], 300.0)))
while True:
    ex.wait(timeout=1.0)
"""


def test_a_driver_killed_hard_interrupts_its_workers(tmp_path):
    """No orphans: the running job of a SIGKILLed driver sees KeyboardInterrupt (and could mark its run KILLED)."""
    import signal
    import subprocess
    import sys

    if not sys.platform.startswith("linux"):
        pytest.skip("PR_SET_PDEATHSIG is Linux-only")
    note = tmp_path / "note"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, str(note)], env=env)
    deadline = time.monotonic() + 120
    while not Path(str(note) + ".started").exists() and time.monotonic() < deadline and driver.poll() is None:
        time.sleep(0.2)
    assert Path(str(note) + ".started").exists()
    driver.send_signal(signal.SIGKILL)
    driver.wait(30)
    deadline = time.monotonic() + 30
    while not note.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert note.read_text() == "interrupted"


def test_a_warm_worker_runs_the_next_job_as_a_fresh_process_would(tmp_path):
    """One worker runs a job that changes cwd, env, argv, logging, RNGs and torch switches; the job after it
    (same process) sees what a job in a fresh process sees."""
    with LocalExecutor(jobs=1, threads_per_job=1) as warm:
        warm.submit(Job("mess", leave_a_mess, (str(tmp_path),)))
        warm.submit(Job("after", state))
        out = _drain(warm, 2)
    with LocalExecutor(jobs=1, threads_per_job=1, jobs_per_worker=1) as fresh:
        fresh.submit(Job("mess", leave_a_mess, (str(tmp_path),)))
        fresh.submit(Job("after", state))
        ref = _drain(fresh, 2)
    assert out["mess"].ok and out["after"].ok, (out["mess"].error, out["after"].error)
    after, want = dict(out["after"].value), dict(ref["after"].value)
    assert after.pop("pid") == out["mess"].value  # the same process ran both jobs
    assert want.pop("pid") != ref["mess"].value  # per-process mode: a fresh worker for the next job
    assert after == want
    assert want["leak"] is None and want["omp"] == "1" and want["dtype"] == "torch.float32" and want["grad"]
    assert not want["torch_seeded_by_the_last_job"] and want["avbench_handlers"] == 0


def test_a_job_that_kills_its_worker_does_not_take_the_next_job_with_it():
    with LocalExecutor(jobs=1, threads_per_job=1) as ex:
        ex.submit(Job("first", where_and_threads, ("a",)))
        ex.submit(Job("exit", die_hard))
        ex.submit(Job("sigkill", kill_self))
        ex.submit(Job("next", where_and_threads, ("b",)))
        out = _drain(ex, 4)
    assert not out["exit"].ok and "exited with code 7" in out["exit"].error
    assert not out["sigkill"].ok and "exited with code -9" in out["sigkill"].error
    assert out["first"].ok and out["next"].ok and out["next"].value["torch_threads"] == 1
    assert out["next"].value["pid"] != out["first"].value["pid"]


def test_jobs_per_worker_comes_from_the_environment_and_is_checked(monkeypatch):
    monkeypatch.setenv("AVBENCH_JOBS_PER_WORKER", "1")
    assert "a fresh process per job" in LocalExecutor(jobs=1, threads_per_job=1).describe()
    monkeypatch.setenv("AVBENCH_JOBS_PER_WORKER", "fresh")
    with pytest.raises(UserError, match="AVBENCH_JOBS_PER_WORKER must be a whole number"):
        LocalExecutor(jobs=1, threads_per_job=1)


@pytest.mark.slow
def test_same_metrics_from_warm_workers_and_a_process_per_job(tmp_path):
    """Three trainings (two strategies, two seeds) one after another in one warm worker, and each in its own
    process: identical metrics apart from throughput and wall time."""
    from helpers import run_args

    jobs = [("late_fusion", "0"), ("uavm", "1"), ("late_fusion", "1")]
    got = {}
    for mode, per_worker in (("warm", 0), ("fresh", 1)):
        with LocalExecutor(jobs=1, threads_per_job=1, jobs_per_worker=per_worker) as ex:
            for i, (strategy, seed) in enumerate(jobs):
                argv = run_args(strategy, tmp_path / mode / f"res{i}", seeds=seed,
                                model_sets=("embed_dim=16",) if strategy == "uavm" else ())
                ex.submit(Job(f"{i}", run_cli, (argv, str(tmp_path / mode / f"{i}.json"))))
            out = _drain(ex, len(jobs), timeout=600)
        assert all(o.ok for o in out.values()), [o.error for o in out.values()]
        if mode == "warm":
            assert len({o.worker for o in out.values()}) == 1
        got[mode] = {k: {s: {m: v for m, v in metrics.items() if "clips_per_s" not in m and "seconds" not in m}
                         for s, metrics in o.value.items()} for k, o in out.items()}
    assert got["warm"] == got["fresh"]
    assert got["warm"]["0"] != got["warm"]["2"]  # the seeds really differ
