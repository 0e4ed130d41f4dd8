"""``--executor ray`` as a unit, without starting Ray: a stand-in ``ray`` module records what the
executor asks of it. Each job becomes one task with the job's CPUs and GPUs, no retries, the job's
threads and the driver's command line; slots follow the cluster's resources; impossible requests are
one-line errors; lost and cancelled tasks come back as outcomes; only a Ray the executor started is
shut down. ``execute_recorded`` (what runs on the node) records the driver's command and prefixes the
job's warnings. tests/test_ray_recording.py runs a real local Ray head end to end.
"""

from __future__ import annotations

import logging
import os
import sys
import types

import pytest

from avbench import results
from avbench.errors import UserError
from avbench.executor import Job, ray_backend
from avbench.executor.base import Outcome, Resources


class TaskCancelledError(Exception):
    pass


class FakeRay:
    """What RayExecutor calls on the ``ray`` module, with a cluster of ``cpus``/``gpus`` on ``nodes`` nodes."""

    def __init__(self, cpus=8.0, gpus=0.0, nodes=1, initialized=False, unreachable=False):
        self.cpus, self.gpus, self.n_nodes = cpus, gpus, nodes
        self.initialized, self.unreachable = initialized, unreachable
        self.init_calls, self.options, self.submitted, self.cancelled = [], [], [], []
        self.results: dict[int, object] = {}  # ref -> Outcome, or an exception to raise from get
        self.shutdowns = 0
        self.exceptions = types.SimpleNamespace(TaskCancelledError=TaskCancelledError)

    def is_initialized(self):
        return self.initialized

    def init(self, **kw):
        if self.unreachable:
            raise ConnectionError("could not connect to 10.0.0.9:6379")
        self.init_calls.append(kw)
        self.initialized = True

    def shutdown(self):
        self.shutdowns += 1
        self.initialized = False

    def nodes(self):
        return [{"Alive": True}] * self.n_nodes + [{"Alive": False}]

    def cluster_resources(self):
        return {"CPU": self.cpus, **({"GPU": self.gpus} if self.gpus else {})}

    def remote(self, fn):
        ray = self

        class Task:
            def options(self, **kw):
                ray.options.append((fn, kw))
                return self

            def remote(self, *args):
                ray.submitted.append(args)
                return len(ray.submitted) - 1  # the object ref

        return Task()

    def wait(self, refs, num_returns=1, timeout=None):
        done = [r for r in refs if r in self.results][:num_returns]
        return done, [r for r in refs if r not in done]

    def get(self, ref):
        value = self.results[ref]
        if isinstance(value, BaseException):
            raise value
        return value

    def cancel(self, ref, force=False):
        self.cancelled.append((ref, force))
        self.results.setdefault(ref, TaskCancelledError())


@pytest.fixture
def fake(monkeypatch):
    ray = FakeRay()
    monkeypatch.setattr(ray_backend, "import_ray", lambda: ray)
    return ray


def job_fn(x):
    return x * 2


def test_each_job_is_one_task_with_its_resources_and_the_drivers_command(fake, monkeypatch):
    monkeypatch.setattr(results, "_command", ["sweep", "--strategy", "sum", "--grid", "lr=0.1,0.2"])
    fake.gpus = 2.0
    ex = ray_backend.RayExecutor(threads_per_job=2, gpus_per_job=0.5, env={"AVBENCH_X": "1"})
    assert fake.init_calls == [{"address": None, "include_dashboard": False, "log_to_driver": True}]
    ((fn, opts),) = fake.options
    assert fn is ray_backend.execute_recorded
    assert opts == {"name": "avbench", "num_cpus": 2, "num_gpus": 0.5, "max_retries": 0}  # a failure is reported, not retried
    assert ex.slots == 4 and ex.threads_per_job == 2 and ex.multi_node is False  # min(8 CPU / 2, 2 GPU / 0.5)
    ex.submit(Job(key="0:0", fn=job_fn, args=(3,), label="sum lr=0.1 seed 0"))
    ex.submit(Job(key="1:0", fn=job_fn, args=(4,)))
    (job, res, command), _ = fake.submitted
    assert job.key == "0:0" and job.args == (3,)
    assert res == Resources(threads=2, gpus=0.5, env={"AVBENCH_X": "1"})
    assert command == ["sweep", "--strategy", "sum", "--grid", "lr=0.1,0.2"]
    assert ex.outstanding() == 2 and ex.running() == 2


def test_slots_follow_the_cluster_and_jobs_beyond_them_count_as_queued(fake):
    fake.cpus, fake.n_nodes = 7.0, 3
    ex = ray_backend.RayExecutor(threads_per_job=3)
    assert ex.slots == 2 and ex.multi_node is True  # 7 // 3; dead nodes do not count
    for i in range(5):
        ex.submit(Job(key=str(i), fn=job_fn, args=(i,)))
    assert ex.running() == 2 and ex.outstanding() == 5
    assert ray_backend.RayExecutor(threads_per_job=None).slots == 7  # one thread per job by default


@pytest.mark.parametrize("kw,cluster,words", [
    ({"threads_per_job": 0}, {}, "--threads-per-job must be at least 1"),
    ({"gpus_per_job": -1.0}, {}, "--gpus-per-job must be positive"),
    ({"threads_per_job": 16}, {}, "--threads-per-job 16: the Ray cluster has 8 CPU(s)"),
    ({"gpus_per_job": 1.0}, {"gpus": 0.5}, "--gpus-per-job 1: the Ray cluster has 0.5 GPU(s)"),
    ({"address": "10.0.0.9:6379"}, {"unreachable": True}, "--address 10.0.0.9:6379: cannot reach a Ray cluster"),
])
def test_impossible_requests_are_one_line_errors(monkeypatch, kw, cluster, words):
    ray = FakeRay(**cluster)
    monkeypatch.setattr(ray_backend, "import_ray", lambda: ray)
    with pytest.raises(UserError) as e:
        ray_backend.RayExecutor(**kw)
    assert words in str(e.value) and "\n" not in str(e.value)


def test_without_ray_installed_the_error_says_how_to_get_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    with pytest.raises(UserError, match=r"--executor ray needs Ray: pip install 'avbench\[ray\]'"):
        ray_backend.RayExecutor()


def test_wait_returns_outcomes_lost_and_cancelled_tasks_included(fake):
    ex = ray_backend.RayExecutor(threads_per_job=2)
    for i in range(4):
        ex.submit(Job(key=f"k{i}", fn=job_fn, args=(i,)))
    assert ex.wait(timeout=0) == []  # nothing finished yet
    fake.results[0] = Outcome("k0", True, value=0)
    fake.results[1] = RuntimeError("node 10.0.0.3 died")
    fake.results[2] = TaskCancelledError()
    got = {o.key: o for o in ex.wait(timeout=1)}
    assert set(got) == {"k0", "k1", "k2"} and ex.outstanding() == 1  # everything already done, at once
    assert got["k0"].ok and got["k0"].value == 0
    assert not got["k1"].ok and got["k1"].error.startswith("RuntimeError: node 10.0.0.3 died")
    assert not got["k1"].cancelled and got["k1"].threads == 2
    assert got["k2"].cancelled and got["k2"].error == "cancelled"


def test_cancel_and_close_release_only_what_the_executor_started(fake, monkeypatch):
    ex = ray_backend.RayExecutor()
    ex.submit(Job(key="a", fn=job_fn, args=(1,)))
    ex.close()  # outstanding work is cancelled (gently: it ends at once here), then Ray is stopped
    assert fake.cancelled == [(0, False)] and fake.shutdowns == 1 and ex.outstanding() == 0
    with pytest.raises(RuntimeError, match="executor is closed"):
        ex.submit(Job(key="b", fn=job_fn))
    joined = FakeRay(initialized=True)  # a Ray the user started (ray.init before avbench): left running
    monkeypatch.setattr(ray_backend, "import_ray", lambda: joined)
    ray_backend.RayExecutor().close()
    assert joined.init_calls == [] and joined.shutdowns == 0 and joined.initialized


def _warn_and_report(text):
    logging.getLogger("avbench.train").warning(text)
    logging.getLogger("avbench.train").info("an info line stays in the job")
    return results.command()


def test_the_task_records_the_drivers_command_and_prefixes_the_jobs_warnings(capsys, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))  # execute sets it; restored
    monkeypatch.setattr(results, "_command", None)
    logger = logging.getLogger("avbench")
    before = (logger.level, logger.propagate, list(logger.handlers))
    job = Job(key="0:1", fn=_warn_and_report, args=("not converged (test)",), label="sum lr=0.1 seed 1")
    out = ray_backend.execute_recorded(job, Resources(threads=1), ["sweep", "--grid", "lr=0.1"])
    assert out.ok, out.error
    assert out.value == ["sweep", "--grid", "lr=0.1"]  # results.command() inside the job is the driver's
    err = capsys.readouterr().err
    assert "[sum lr=0.1 seed 1] warning: not converged (test)" in err
    assert "an info line" not in err
    assert results.command() == list(sys.argv)  # forgotten after the job
    assert (logger.level, logger.propagate, list(logger.handlers)) == before  # the logger as it was
