"""A process uses the cores it may use, never more: affinity, cgroup CPU quota and OMP_NUM_THREADS each
cap the thread count (avbench.hardware), and the CLI applies it before any command runs."""

import os
import subprocess
import sys
import textwrap

import pytest

from avbench import hardware

needs_affinity = pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
                                    reason="needs sched_setaffinity and at least 2 CPUs to restrict")


def _python(code: str, **env: str) -> str:
    """Run ``code`` in a fresh interpreter without OMP_NUM_THREADS (unless given); return its stdout."""
    environ = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    environ.update(env)
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=environ, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout.strip()


@needs_affinity
def test_restricted_affinity_caps_usable_cpus_and_torch_threads():
    out = _python("""
        import os, torch
        from avbench import hardware
        torch.set_num_threads(len(os.sched_getaffinity(0)))  # what torch picked at start-up
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # then the process is pinned to one core
        print(hardware.usable_cpus(), hardware.configure_threads(), torch.get_num_threads())
    """)
    assert out == "1 1 1"


@needs_affinity
def test_cli_applies_the_limit_before_the_command_runs():
    out = _python("""
        import os, torch
        from avbench.cli import main
        torch.set_num_threads(len(os.sched_getaffinity(0)))
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
        assert main(["show", "sum"]) == 0  # a command that computes (list does not set threads)
        print("threads", torch.get_num_threads())
    """)
    assert out.splitlines()[-1] == "threads 1"


def test_omp_num_threads_caps_and_explicit_n_is_honoured(monkeypatch):
    import torch

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert hardware.omp_threads() == 1 and hardware.usable_cpus() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "3,1")  # nested levels: the outer one counts
    assert hardware.omp_threads() == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "lots")
    assert hardware.omp_threads() is None and hardware.usable_cpus() == hardware.machine_cpus()
    old = torch.get_num_threads()
    try:
        assert hardware.configure_threads(1) == 1 and torch.get_num_threads() == 1
        with pytest.raises(ValueError):
            hardware.configure_threads(0)
    finally:
        torch.set_num_threads(old)


def test_jobs_and_torchrun_ranks_divide_the_cores(monkeypatch):
    import torch

    monkeypatch.setattr(hardware, "usable_cpus", lambda: 8)
    assert [hardware.threads_per_job(j) for j in (1, 2, 3, 8, 20)] == [8, 4, 2, 1, 1]
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    old = torch.get_num_threads()
    try:
        assert hardware.configure_threads() == 2 and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(old)


def _cgroup(tmp_path, proc: str, files: dict[str, str]):
    root = tmp_path / "sys"
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    (tmp_path / "cgroup").write_text(proc)
    return hardware.cgroup_cpu_limit(root, tmp_path / "cgroup")


def test_cgroup_v2_quota(tmp_path):
    assert _cgroup(tmp_path, "0::/job\n", {"job/cpu.max": "250000 100000\n"}) == 2  # 2.5 cores -> 2 threads
    assert _cgroup(tmp_path / "h", "0::/job\n", {"job/cpu.max": "50000 100000\n"}) == 1  # at least one
    assert _cgroup(tmp_path / "a", "0::/job\n", {"job/cpu.max": "max 100000\n"}) is None
    # A parent's tighter quota wins over the leaf's.
    assert _cgroup(tmp_path / "b", "0::/slice/job\n",
                   {"slice/cpu.max": "100000 100000\n", "slice/job/cpu.max": "400000 100000\n"}) == 1


def test_cgroup_v1_quota(tmp_path):
    files = {"cpu,cpuacct/docker/x/cpu.cfs_quota_us": "300000\n", "cpu,cpuacct/docker/x/cpu.cfs_period_us": "100000\n"}
    assert _cgroup(tmp_path, "4:cpu,cpuacct:/docker/x\n", files) == 3
    unlimited = {"cpu,cpuacct/cpu.cfs_quota_us": "-1\n", "cpu,cpuacct/cpu.cfs_period_us": "100000\n"}
    assert _cgroup(tmp_path / "u", "4:cpu,cpuacct:/\n", unlimited) is None


def test_this_machine_is_within_its_limits():
    n = hardware.usable_cpus()
    assert 1 <= n <= hardware.machine_cpus() <= (os.cpu_count() or 1)
    if hasattr(os, "sched_getaffinity"):
        assert n <= len(os.sched_getaffinity(0))
