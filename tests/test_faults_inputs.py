"""The fault suite, continued (issue 24): values and files checked before work starts, shared things
built once by concurrent processes, special output files, and a full results disk that leaves the
tracking store usable. Same rules as ``tests/test_faults.py``: exit 2 and one line naming the problem,
no traceback, nothing left RUNNING or half-written; real processes and a real tmpfs where possible.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from avbench.cli import main
from helpers import TINY_SETS, assert_clean_error, default_sigint, run_args, runs_by_status, tiny_cache


def tiny(results: Path, *extra: str, seeds: str = "0") -> list[str]:
    return run_args("late_fusion", results, *extra, seeds=seeds, model_sets=())


# --- 1. values that would overflow, hang or silently do nothing --------------------------------------
BAD_INPUTS = [
    (["--seeds", "99999999999999999999"], "out of the generators' range"),
    (["--seeds", "4294967296"], "out of the generators' range"),
    (["--seeds", "0,,1"], "an empty item"),
    (["--seeds", "0,"], "an empty item"),
    (["--set", "data.classes=100000"], "needs data.train_clips >= 2 x classes"),
    (["--set", "data.train_clips=200000000"], "of memory, the machine has"),
    (["--set", "data.steps=100000000"], "of memory, the machine has"),
    (["--set", "data.audio_dim=1000000000"], "of memory, the machine has"),
    (["--set", "data.onset_jitter=1000000"], "onset_jitter=1000000: must be below data.steps=8"),
    (["--set", "data.val_fraction=0.001"], "val_fraction=0.001: holds out 0 of 96"),
    (["--set", "data.seed=99999999999"], "data.seed=99999999999: must be at most"),
]


@pytest.mark.parametrize("extra, message", BAD_INPUTS, ids=[" ".join(e) for e, _ in BAD_INPUTS])
def test_bad_input_is_one_line_before_any_work(tmp_path, capsys, extra, message):
    res = tmp_path / "res"
    rc = main(tiny(res, "--cache-root", str(tmp_path / "cache"), *extra))
    assert_clean_error(capsys, rc, message, res)
    assert runs_by_status(res) == {} and not (res / "runs").exists()
    assert not list((tmp_path / "cache").rglob("*.npy"))  # nothing was generated


def test_a_zero_width_mlp_is_refused(tmp_path, capsys):
    rc = main(run_args("uavm", tmp_path / "res", "--set", "mlp_ratio=1e-9"))
    assert_clean_error(capsys, rc, "mlp_ratio=1e-9: gives embed_dim=16 an MLP of int(16 x 1e-09) = 0 units")


@pytest.mark.parametrize("extra, message", [
    (["--set", "data.val_fraction=0.9"], "larger than the 9 training clips (87 held out for validation)"),
    (["--set", "train.warmup_steps=100000"], "train.warmup_steps=100000 is not shorter than the run's 5 steps"),
], ids=["zero steps after the hold-out", "warm-up longer than the run"])
def test_a_run_that_would_not_train_as_asked_is_refused_before_mlflow(tmp_path, capsys, extra, message):
    res = tmp_path / "res"
    assert_clean_error(capsys, main(tiny(res, "--cache-root", str(tmp_path / "cache"), *extra)), message, res)
    assert runs_by_status(res) == {}


def test_a_diverged_run_is_a_result_marked_diverged_not_a_crash(tmp_path, capsys):
    out = tmp_path / "o.json"
    assert main(tiny(tmp_path / "res", "--set", "train.lr=1e30", "--output-json", str(out))) == 0
    err = capsys.readouterr().err
    assert "seed 0 diverged: the training loss was not finite from epoch 0" in err and "Traceback" not in err
    seed = json.loads(out.read_text())["seeds"][0]
    assert seed["metrics"]["diverged"] == 1.0 and runs_by_status(tmp_path / "res") == {"FINISHED": 2}
    fine = tmp_path / "fine.json"
    assert main(tiny(tmp_path / "res2", "--output-json", str(fine))) == 0
    assert json.loads(fine.read_text())["seeds"][0]["metrics"]["diverged"] == 0.0


@pytest.mark.parametrize("content", [bytes(range(256)) * 4, b"a: 1\n\x00\x01\x02"], ids=["binary", "nul bytes"])
def test_config_that_is_not_text_is_one_line(tmp_path, capsys, content):
    cfg = tmp_path / "bin.yaml"
    cfg.write_bytes(content)
    assert_clean_error(capsys, main(tiny(tmp_path / "res", "--config", str(cfg))), "not a text file")


def test_config_that_is_huge_is_one_line(tmp_path, capsys):
    cfg = tmp_path / "big.yaml"
    cfg.write_text("# " + "x" * (2 << 20) + "\n")
    assert_clean_error(capsys, main(tiny(tmp_path / "res", "--config", str(cfg))), "not a configuration file")


def test_bench_batch_that_cannot_fit_is_one_line(capsys):
    rc = main(["bench", "--strategy", "late_fusion", "--synthetic", "--batch-size", "100000000"])
    assert_clean_error(capsys, rc, "of memory, the machine has")


# --- 2. sweeps: checked as a whole before anything trains --------------------------------------------
def _sweep(tmp_path: Path, *extra: str) -> list[str]:
    args = ["sweep", "--strategy", "late_fusion", "--dataset", "synth", "--epochs", "1", "--results-dir",
            str(tmp_path / "res"), "--no-progress", "--no-save-model"]
    for s in TINY_SETS:
        args += ["--set", s]
    return args + list(extra)


@pytest.mark.parametrize("grid, message", [
    ("bogus=1,2", "bogus: unknown key"),
    ("lr=a,b", "expected float, got 'a'"),
    ("lr=-1,0.01", "lr=-1: must be in (0, inf)"),
], ids=["unknown key", "not a number", "one bad value"])
def test_sweep_grid_is_validated_point_by_point_before_anything_trains(tmp_path, capsys, grid, message):
    res = tmp_path / "res"
    rc = main(_sweep(tmp_path, "--grid", grid))
    line = assert_clean_error(capsys, rc, message, res)
    assert "nothing was trained" in line
    assert not (res / "runs").exists() and runs_by_status(res).get("FINISHED", 0) == 0


@pytest.mark.parametrize("tie, message", [
    ("n_specific=9**9**9", "beyond +-1e+12"),
    ("n_specific=10**13", "beyond +-1e+12"),
    ("n_specific=n_shared*" + "9" * 20, "beyond +-1e+12"),
    ("n_specific=" + "+".join(["1"] * 150), "at most 200"),
], ids=["power tower", "large power", "large product", "long expression"])
def test_tie_is_bounded_arithmetic(tmp_path, capsys, tie, message):
    rc = main(_sweep(tmp_path, "--grid", "n_shared=1,2", "--tie", tie, "--dry-run"))
    assert_clean_error(capsys, rc, message)


@pytest.mark.parametrize("flag, value", [("--jobs", "0"), ("--jobs", "-2"), ("--threads-per-job", "0")])
def test_executor_counts_must_be_positive(tmp_path, capsys, flag, value):
    rc = main(_sweep(tmp_path, "--grid", "lr=0.001", flag, value))
    assert_clean_error(capsys, rc, f"{flag} {value}: must be at least 1")


# --- 3. output paths ------------------------------------------------------------------------------------
def test_output_json_refuses_a_device(tmp_path, capsys):
    res = tmp_path / "res"
    before = os.stat("/dev/null")
    rc = main(tiny(res, "--output-json", "/dev/null"))
    assert_clean_error(capsys, rc, "is a character device, not a regular file", res)
    after = os.stat("/dev/null")
    assert (after.st_ino, after.st_mode) == (before.st_ino, before.st_mode)  # still the device
    assert not (res / "runs").exists()  # refused before training


def test_output_json_refuses_a_fifo(tmp_path, capsys):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    assert_clean_error(capsys, main(tiny(tmp_path / "res", "--output-json", str(fifo))), "is a FIFO")


def test_output_json_dash_is_standard_output(tmp_path, capsys):
    assert main(tiny(tmp_path / "res", "--output-json", "-")) == 0
    out = capsys.readouterr().out
    doc = json.loads(out[out.index("{"):])  # the table first, then the summary as JSON
    assert doc["seeds"][0]["seed"] == 0
    assert not Path("-").exists() and not Path("-.config.yaml").exists()


def test_the_atomic_writer_refuses_special_files_itself(tmp_path):
    from avbench import fsguard
    from avbench.cache.format import write_json_atomic
    from avbench.errors import UserError

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(UserError, match="is a FIFO"):
        write_json_atomic(fifo, {"a": 1})
    with pytest.raises(UserError, match="character device"):
        with fsguard.atomic_write("/dev/null") as tmp:
            tmp.write_text("x")
    assert not list(tmp_path.glob("*.tmp"))


# --- 4. cache verification ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def verified_cache(tmp_path_factory):
    root = tiny_cache(tmp_path_factory.mktemp("vc") / "cache")
    return root


def test_val_rows_out_of_range_is_caught_by_verify_and_refused_by_run(tmp_path, capsys, verified_cache):
    root = tmp_path / "cache"
    shutil.copytree(verified_cache, root)
    rows_file = root / "train" / "val_rows.npy"
    rows = np.load(rows_file)
    rows[-1] = 999999
    np.save(rows_file, rows)
    rc = main(["cache", "verify", str(root)])
    captured = capsys.readouterr()
    assert rc in (1, 2) and "row 999999 is out of range [0, 96)" in captured.out + captured.err
    args = ["run", "--strategy", "late_fusion", "--cache", str(root), "--epochs", "1", "--results-dir",
            str(tmp_path / "res"), "--no-progress", "--no-save-model", "--set", "train.batch_size=16"]
    assert_clean_error(capsys, main(args), "out of range", tmp_path / "res")


def test_val_rows_that_are_a_pickle_are_refused(tmp_path, capsys, verified_cache):
    root = tmp_path / "cache"
    shutil.copytree(verified_cache, root)
    np.save(root / "train" / "val_rows.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    rc = main(["cache", "verify", str(root)])
    captured = capsys.readouterr()
    assert rc in (1, 2) and "val_rows.npy" in captured.out + captured.err and "Traceback" not in captured.err


def test_remembered_verification_is_not_fooled_by_a_same_size_same_mtime_edit(tmp_path, verified_cache):
    from avbench.cache import verify
    from avbench.errors import UserError

    root = tmp_path / "cache"
    shutil.copytree(verified_cache, root)
    verify.checked_cache(root)  # verified and remembered
    audio = root / "train" / "audio.npy"
    st = audio.stat()
    arr = np.load(audio, mmap_mode="r+")
    arr[5, 3, 2] = np.nan  # NaN bytes written in place: size unchanged
    arr.flush()
    del arr
    os.utime(audio, ns=(st.st_atime_ns, st.st_mtime_ns))  # and the mtime put back
    assert audio.stat().st_size == st.st_size and audio.stat().st_mtime_ns == st.st_mtime_ns
    with pytest.raises(UserError, match="NaN or Inf"):
        verify.checked_cache(root)


# --- 5. shared things built once ------------------------------------------------------------------------
def _spawn(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parent)}
    return subprocess.Popen([sys.executable, "-m", "avbench", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, preexec_fn=default_sigint)


@pytest.mark.slow
def test_four_processes_on_one_fresh_cache_root_all_finish_once(tmp_path):
    """Four ``avbench run`` at once, one seed each, on a cache root and results folder that do not
    exist yet: one process generates the synth cache and records its validation split, the others
    wait and reuse it; every seed is trained and recorded exactly once."""
    cache_root, res = tmp_path / "cache", tmp_path / "res"
    procs = [_spawn(tiny(res, "--cache-root", str(cache_root), seeds=str(k))) for k in range(4)]
    outs = [p.communicate(timeout=900) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0 and "Traceback" not in err, err[-3000:]
    # Results are local first: four writers on one sqlite store may keep one out of it for a while (on a
    # busy machine its tracking gave up); that process said so and `avbench sync` sends it, once.
    with sqlite3.connect(res / "mlflow.db") as c:
        sent = {int(v) for (v,) in c.execute("select value from tags where key = 'avbench.seed'")}
    hints = sum(f"avbench sync --results-dir {res}" in err for _, err in outs)
    assert hints >= 4 - len(sent)
    assert main(["sync", "--results-dir", str(res)]) == 0
    assert runs_by_status(res) == {"FINISHED": 5}  # one parent and one child per seed
    with sqlite3.connect(res / "mlflow.db") as c:
        seeds = sorted(int(v) for (v,) in c.execute("select value from tags where key = 'avbench.seed'"))
    assert seeds == [0, 1, 2, 3]
    caches = [p.parent for p in cache_root.rglob("manifest.json")]
    assert len(caches) == 1 and not list(cache_root.rglob("*.tmp")) and not list(cache_root.rglob("manifest.pending*"))
    assert main(["cache", "verify", str(caches[0])]) == 0


@pytest.mark.slow
def test_a_dead_builder_does_not_block_the_next(tmp_path):
    """A process killed while it holds the synth lock (kill -9) releases it with its life; the next
    run rebuilds the half-written cache and finishes."""
    import signal
    import time

    code = ("import sys, time; from avbench.locks import file_lock; "
            "l = file_lock(sys.argv[1]); l.__enter__(); print('held', flush=True); time.sleep(600)")
    from avbench.datasets.synth import SynthCard, SynthKnobs
    from avbench.locks import lock_beside
    from helpers import TINY

    path = SynthCard().cache_dir(tmp_path / "cache", SynthKnobs(**TINY))
    (path / "train").mkdir(parents=True)
    (path / "train" / "audio.npy").write_bytes(b"half")  # what the dead builder left
    holder = subprocess.Popen([sys.executable, "-c", code, str(lock_beside(path))], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    t0 = time.monotonic()
    assert main(tiny(tmp_path / "res", "--cache-root", str(tmp_path / "cache"))) == 0
    assert time.monotonic() - t0 < 600
    assert main(["cache", "verify", str(path)]) == 0


def test_the_lock_makes_builders_take_turns(tmp_path):
    """Two holders never overlap: each appends 'in'/'out' around a pause, under the lock."""
    log = tmp_path / "log"
    code = ("import sys, time; from avbench.locks import file_lock\n"
            "with file_lock(sys.argv[1]):\n"
            "    open(sys.argv[2], 'a').write('in\\n'); time.sleep(0.3); open(sys.argv[2], 'a').write('out\\n')\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path / ".lock"), str(log)]) for _ in range(3)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    assert log.read_text().split() == ["in", "out"] * 3


def test_the_lock_is_reentrant_in_its_thread_and_still_excludes_other_threads(tmp_path):
    import threading

    from avbench.locks import file_lock

    lock, order = tmp_path / ".lock", []
    with file_lock(lock):
        with file_lock(lock):  # a builder calling another builder under the same lock: no wait
            order.append("nested")
        def take() -> None:
            with file_lock(lock):
                order.append("other")

        other = threading.Thread(target=take)
        other.start()
        other.join(timeout=0.5)
        assert other.is_alive() and order == ["nested"]  # another thread waits while this one holds it
    other.join(timeout=30)
    assert order == ["nested", "other"]


# --- 6. a full results disk ----------------------------------------------------------------------------
def _can_mount() -> str | None:
    if os.geteuid() != 0:
        return "mounting a tmpfs needs root"
    if shutil.which("mount") is None:
        return "no mount command"
    return None


@pytest.fixture
def small_tmpfs(tmp_path):
    why = _can_mount()
    if why:
        pytest.skip(why)
    mnt = tmp_path / "fs"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()[:200]})")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_full_results_disk_leaves_a_store_the_next_run_and_sync_use(tmp_path, capsys, small_tmpfs):
    cache_root = tmp_path / "cache"
    assert main(tiny(tmp_path / "warm", "--cache-root", str(cache_root))) == 0  # the cache lives elsewhere
    capsys.readouterr()
    res = small_tmpfs / "res"
    fill = small_tmpfs / "fill"
    with open(fill, "wb") as f:  # all but 400 KiB taken: the store (~1 MiB) and the results cannot fit
        f.write(b"\0" * (shutil.disk_usage(small_tmpfs).free - (400 << 10)))
    rc = main(tiny(res, "--cache-root", str(cache_root)))
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err, err
    assert "results are complete" not in err  # never said before they are written
    assert not list(small_tmpfs.rglob("*.tmp")) and not list(small_tmpfs.rglob(".*.tmp"))
    assert not (res / "mlflow.db").exists() or runs_by_status(res) == {}  # no half-made store
    fill.unlink()  # space again: the next run and sync work normally
    assert main(tiny(res, "--cache-root", str(cache_root))) == 0
    assert runs_by_status(res) == {"FINISHED": 2}
    capsys.readouterr()
    assert main(["sync", "--results-dir", str(res)]) == 0
    assert "Traceback" not in capsys.readouterr().err


def test_a_half_migrated_store_is_repaired_or_refused_in_one_line(tmp_path, capsys):
    res = tmp_path / "res"
    (res / "runs").mkdir(parents=True)
    with sqlite3.connect(res / "mlflow.db") as c:  # what an interrupted creation leaves: no runs yet
        c.execute("create table experiments (experiment_id integer)")
        c.execute("create table _alembic_tmp_jobs (id integer)")
    assert main(["sync", "--results-dir", str(res)]) == 0  # set aside and recreated
    assert list(res.glob("mlflow.db.broken-*")) and runs_by_status(res) == {}
    assert main(tiny(res)) == 0 and runs_by_status(res) == {"FINISHED": 2}
    capsys.readouterr()
    with sqlite3.connect(res / "mlflow.db") as c:  # the same damage in a store that holds runs
        c.execute("create table _alembic_tmp_jobs (id integer)")
    assert_clean_error(capsys, main(["sync", "--results-dir", str(res)]), "half-migrated and holding 2 run(s)")


@pytest.mark.parametrize("bound", [".nan", ".inf", "'a'"])
def test_a_search_space_with_a_bound_that_is_not_a_finite_number_is_one_line(tmp_path, capsys, bound):
    space = tmp_path / "space.yaml"
    space.write_text(f"train.lr: {{type: float, low: {bound}, high: 0.1, log: true}}\n")
    res = tmp_path / "res"
    args = ["tune", "--strategy", "late_fusion", "--dataset", "synth", "--budget", "2", "--max-steps", "4",
            "--space", str(space), "--results-dir", str(res), "--no-progress"]
    for s in TINY_SETS:
        args += ["--set", s]
    assert_clean_error(capsys, main(args), "bounds must be finite numbers", res)
