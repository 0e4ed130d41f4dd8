"""The bad-input and fault suite (issue 13): every case ends with exit 2 and one line naming the problem,
no traceback, no MLflow run left RUNNING and nothing half-written, or (tracking outages) with a
finished run whose local results are complete and can be sent later with ``avbench sync``.

The counts of this file are the README's reliability figures (``pytest --collect-only -q``).
"""

from __future__ import annotations

import errno
import json
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from avbench.cli import main
from helpers import assert_clean_error, default_sigint, run_args, runs_by_status, tiny_cache


def base_args(results: Path, *extra: str) -> list[str]:
    return run_args("uavm", results, *extra)


# --- 1. values that pass parsing but would break training --------------------------------------------
BAD_VALUES = [
    (["--seeds", "-1"], "--seeds must be non-negative"),
    (["--seeds", "0,-3"], "--seeds must be non-negative"),
    (["--set", "train.batch_size=0"], "batch_size=0: must be in [1, inf)"),
    (["--set", "train.batch_size=-4"], "batch_size=-4: must be in [1, inf)"),
    (["--set", "train.batch_size=100000"], "zero training steps"),
    (["--set", "train.eval_batch_size=0"], "eval_batch_size=0: must be in [1, inf)"),
    (["--set", "train.lr=nan"], "lr=nan: must be in (0, inf)"),
    (["--set", "train.lr=-1"], "lr=-1: must be in (0, inf)"),
    (["--set", "train.lr=inf"], "lr=inf: must be in (0, inf)"),
    (["--set", "train.epochs=0"], "epochs=0: must be in [1, inf)"),
    (["--epochs", "0"], "--epochs must be at least 1"),
    (["--set", "train.mixup_prob=1.5"], "mixup_prob=1.5: must be in [0, 1]"),
    (["--set", "train.label_smoothing=-0.1"], "label_smoothing=-0.1: must be in [0, 1)"),
    (["--set", "train.weight_decay=nan"], "weight_decay=nan"),
    (["--set", "train.retrieval_per_class=0"], "retrieval_per_class=0"),
    (["--set", "num_heads=0"], "num_heads=0: must be in [1, inf)"),
    (["--set", "mlp_ratio=nan"], "mlp_ratio=nan: must be in (0, inf)"),
    (["--set", "embed_dim=0"], "embed_dim=0: must be in [1, inf)"),  # declared on the strategy's Config
    (["--set", "n_shared=-1"], "n_shared=-1: must be in [0, inf)"),
    (["--set", "lambda_mt=1.5"], "lambda_mt=1.5: must be in [0, 1]"),
    (["--set", "data.snr=-1"], "snr=-1: must be in [0, inf)"),
    (["--set", "data.secondary_rate=2"], "secondary_rate=2: must be in [0, 1]"),
    (["--set", "data.train_clips=10"], "zero training steps"),
    (["--set", "data.classes=1"], "classes=1: must be in [2, inf)"),
    (["--set", "data.seed=-5"], "seed=-5: must be in [0, inf)"),
    (["--device", "bogus"], "--device bogus: not a device"),
    (["--device", "tpu"], "--device tpu"),
    (["--device", "cuda:7"], "--device cuda:7"),
    (["--train-modality", "audio"], "--train-modality audio only applies with --protocol cross-modal"),
    (["--protocol", "cross-modal"], "needs --train-modality"),
]


@pytest.mark.parametrize("extra, message", BAD_VALUES, ids=[" ".join(e) for e, _ in BAD_VALUES])
def test_bad_value_is_one_line_exit_2_and_no_run(tmp_path, capsys, extra, message):
    res = tmp_path / "res"
    rc = main(base_args(res, *extra))
    assert_clean_error(capsys, rc, message, res)
    assert runs_by_status(res) == {} and not (res / "runs").exists()


def test_ranges_are_declared_once_and_plugins_get_the_generic_rules():
    import dataclasses

    from avbench import config as cfgmod
    from avbench.errors import UserError

    @dataclasses.dataclass
    class PluginConfig:
        width: int = cfgmod.in_range(8, "[1, inf)")
        dropout: float = 0.1  # a probability by its name
        num_heads: int = 2  # a count by its name
        scale: float = 1.0  # finite by its type

    for key, value in (("width", "0"), ("dropout", "1.5"), ("num_heads", "0"), ("scale", "nan")):
        with pytest.raises(UserError, match=f"--set {key}={value}: must be"):
            cfgmod.apply_overrides(PluginConfig(), {key: value})
    assert cfgmod.apply_overrides(PluginConfig(), {"width": "3", "dropout": "1"}).width == 3
    assert str(cfgmod.Range.parse("(0, inf)")) == "(0, inf)" and not cfgmod.Range.parse("[0, 1]").contains(float("nan"))


# --- 2. corrupt caches: `cache verify` finds each, `run` refuses it before any MLflow run ---------------
@pytest.fixture(scope="module")
def good_cache(tmp_path_factory):
    return tiny_cache(tmp_path_factory.mktemp("good") / "cache")


def _edit_manifest(root: Path, fn) -> None:
    p = root / "manifest.json"
    data = json.loads(p.read_text())
    data = fn(data)
    p.write_text(json.dumps(data))


def _edit_array(root: Path, rel: str, fn) -> None:
    arr = np.load(root / rel)
    np.save(root / rel, fn(arr.copy()))


def _set(d, key, value):
    d[key] = value
    return d


def _split_set(d, split, key, value):
    d["splits"][split][key] = value
    return d


def _nan_rows(a):
    a[3] = np.nan
    return a


def _inf_row(a):
    a[0, 0, 0] = np.inf
    return a


def _label2(a):
    a[0, 0] = 2
    return a


def _no_label(a):
    a[1] = 0
    return a


def _two_labels(a):
    a[2, :2] = 1
    return a


def _not_done(a):
    a[5:9] = False
    return a


def _truncate_ids(root):
    p = root / "train" / "ids.txt"
    p.write_text("".join(line + "\n" for line in p.read_text().splitlines()[:-7]))


def _dup_ids(root):
    p = root / "test" / "ids.txt"
    lines = p.read_text().splitlines()
    lines[1] = lines[0]
    p.write_text("".join(line + "\n" for line in lines))


def _empty_split(name):
    def fn(root):
        _edit_manifest(root, lambda d: _split_set(d, name, "size", 0))
    return fn


def _drop_test(root):
    def fn(d):
        d["splits"].pop("test")
        d["splits"].pop("val", None)
        return d
    _edit_manifest(root, fn)


CORRUPTIONS = {
    "nan rows in train audio": (lambda r: _edit_array(r, "train/audio.npy", _nan_rows), "NaN or Inf"),
    "inf in test video": (lambda r: _edit_array(r, "test/video.npy", _inf_row), "NaN or Inf"),
    "empty train split": (_empty_split("train"), "the split is empty"),
    "empty test split": (_empty_split("test"), "the split is empty"),
    "no test split": (_drop_test, "no test split"),
    "task regression": (lambda r: _edit_manifest(r, lambda d: _set(d, "task", "regression")), "task 'regression'"),
    "present false everywhere": (lambda r: _edit_array(r, "train/present.npy", lambda a: a & False),
                                 "no clip has audio or video present"),
    "manifest is a list": (lambda r: _edit_manifest(r, lambda d: [d]), "holds a list"),
    "manifest key missing": (lambda r: _edit_manifest(r, lambda d: {k: v for k, v in d.items() if k != "num_classes"}),
                             "no 'num_classes'"),
    "manifest not json": (lambda r: (r / "manifest.json").write_text("{not json"), "unreadable"),
    "manifest size is a string": (lambda r: _edit_manifest(r, lambda d: _split_set(d, "train", "size", "96")),
                                  "is not a count"),
    "manifest num_steps 0": (lambda r: _edit_manifest(r, lambda d: _set(d, "num_steps", 0)), "num_steps=0"),
    "truncated ids.txt": (_truncate_ids, "ids.txt has 89 ids for 96 rows"),
    "duplicate ids": (_dup_ids, "duplicate ids"),
    "audio dim differs from manifest": (lambda r: _edit_manifest(r, lambda d: _set(d, "audio_dim", 20)),
                                        "audio.npy is float16"),
    "manifest size differs from arrays": (lambda r: _edit_manifest(r, lambda d: _split_set(d, "test", "size", 50)),
                                          "expected"),
    "labels out of range": (lambda r: _edit_array(r, "train/labels.npy", _label2), "values other than 0/1"),
    "labels wrong dtype": (lambda r: _edit_array(r, "train/labels.npy", lambda a: a.astype(np.int64)),
                           "labels.npy is int64"),
    "clip without label": (lambda r: _edit_array(r, "test/labels.npy", _no_label), "clips have no label"),
    "two labels in multiclass": (lambda r: _edit_array(r, "train/labels.npy", _two_labels), "several labels"),
    "rows not marked done": (lambda r: _edit_array(r, "train/done.npy", _not_done), "4 rows are not marked done"),
    "video array missing": (lambda r: (r / "train" / "video.npy").unlink(), "cannot open arrays"),
    "classes.csv short": (lambda r: (r / "classes.csv").write_text("index,mid,display_name\n0,a,a\n"),
                          "classes.csv has 1 rows"),
}


@pytest.mark.parametrize("case", list(CORRUPTIONS))
def test_corrupt_cache_is_caught_by_verify_and_refused_by_run(tmp_path, capsys, good_cache, case):
    corrupt, message = CORRUPTIONS[case]
    root = tmp_path / "cache"
    shutil.copytree(good_cache, root)
    corrupt(root)
    rc = main(["cache", "verify", str(root)])
    captured = capsys.readouterr()
    assert rc in (1, 2) and message in captured.out + captured.err and "Traceback" not in captured.err
    res = tmp_path / "res"
    args = ["run", "--strategy", "uavm", "--cache", str(root), "--epochs", "1", "--results-dir", str(res),
            "--no-progress", "--no-save-model", "--set", "train.batch_size=16", "--set", "embed_dim=16"]
    assert_clean_error(capsys, main(args), message.split(",")[0], res)
    assert runs_by_status(res) == {}


def test_a_sound_cache_is_verified_once_per_version(tmp_path, good_cache, monkeypatch):
    from avbench.cache import verify

    root = tmp_path / "cache"
    shutil.copytree(good_cache, root)
    calls = []
    real = verify.verify_cache
    monkeypatch.setattr(verify, "verify_cache", lambda r: calls.append(r) or real(r))
    verify.checked_cache(root)
    verify.checked_cache(root)
    assert len(calls) == 1  # remembered
    _edit_array(root, "train/audio.npy", _nan_rows)  # a new version is checked again, and refused
    with pytest.raises(Exception, match="NaN or Inf"):
        verify.checked_cache(root)
    assert len(calls) == 2


# --- 3. paths and disks ---------------------------------------------------------------------------------
def test_output_json_that_is_a_directory_fails_before_training(tmp_path, capsys):
    res = tmp_path / "res"
    (tmp_path / "out").mkdir()
    assert_clean_error(capsys, main(base_args(res, "--output-json", str(tmp_path / "out"))), "is a directory", res)
    assert not (res / "runs").exists()


def test_output_json_under_a_file_fails_before_training(tmp_path, capsys):
    res = tmp_path / "res"
    (tmp_path / "f").write_text("x")
    assert_clean_error(capsys, main(base_args(res, "--output-json", str(tmp_path / "f" / "o.json"))), "is a file", res)
    assert not (res / "runs").exists()


def test_results_dir_that_is_a_file(tmp_path, capsys):
    res = tmp_path / "res"
    res.write_text("x")
    assert_clean_error(capsys, main(base_args(res)), "--results-dir")


def test_results_dir_under_a_file(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    assert_clean_error(capsys, main(base_args(tmp_path / "f" / "res")), "is a file")


def test_cache_root_that_is_a_file_when_the_cache_must_be_made(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    rc = main(base_args(tmp_path / "res", "--cache-root", str(tmp_path / "f"), "--set", "data.seed=77"))
    assert_clean_error(capsys, rc, str(tmp_path / "f"))


@pytest.mark.parametrize("where", ["under a file", "a file"])
def test_report_out_that_cannot_be_a_directory(tmp_path, capsys, where):
    (tmp_path / "f").write_text("x")
    out = tmp_path / "f" / "report" if where == "under a file" else tmp_path / "f"
    rc = main(["report", "--dataset", "synth", "--results-dir", str(tmp_path / "res"), "--out", str(out)])
    assert_clean_error(capsys, rc, "--out")


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES, errno.ENOSPC])
def test_cache_root_write_error_is_one_line(tmp_path, capsys, monkeypatch, code):
    from avbench.cache import writer

    def refuse(self, *a, **k):
        raise OSError(code, "simulated", str(tmp_path / "root" / "synth"))

    monkeypatch.setattr(writer.CacheWriter, "__init__", refuse)
    rc = main(base_args(tmp_path / "res", "--cache-root", str(tmp_path / "root"), "--set", "data.seed=78"))
    assert_clean_error(capsys, rc, str(tmp_path / "root" / "synth"))


@pytest.mark.parametrize("stage", ["estimate", "preallocation"])
def test_cache_refused_when_the_disk_is_too_small(tmp_path, capsys, monkeypatch, stage):
    """The synth estimate refuses before generating anything; the writer's own check (any cache: an
    import, an extraction) refuses before preallocating a split."""
    from avbench import fsguard
    from avbench.datasets import synth

    monkeypatch.setattr(fsguard, "free_bytes", lambda path: 1 << 20)
    if stage == "preallocation":
        monkeypatch.setattr(synth, "check_resources", lambda knobs, path: None)
    rc = main(base_args(tmp_path / "res", "--cache-root", str(tmp_path / "root"), "--set", "data.seed=79"))
    line = assert_clean_error(capsys, rc, "synth cache" if stage == "estimate" else "cache split")
    assert "needs" in line and "only 1.0 MiB free" in line
    assert not list((tmp_path / "root").rglob("manifest.json"))  # nothing a later run would trust
    caches = [p for p in (tmp_path / "root").glob("synth/*") if p.is_dir()]
    if stage == "estimate":
        assert caches == []  # nothing generated
    else:
        assert main(["cache", "verify", str(caches[0])]) == 2  # unfinished


def _full_after_training(monkeypatch):
    from avbench import fsguard

    real = fsguard.check_space

    def check(path, need, what):
        if what == "results":
            raise fsguard.UserError(f"{what} {path}: needs {fsguard.human(need)}, only 0 B free")
        real(path, need, what)

    monkeypatch.setattr(fsguard, "check_space", check)


def test_results_disk_full_is_refused_before_writing(tmp_path, capsys, monkeypatch):
    _full_after_training(monkeypatch)
    res = tmp_path / "res"
    assert_clean_error(capsys, main(base_args(res)), "only 0 B free", res)
    assert runs_by_status(res) == {"FAILED": 2}  # the seed and its parent, never RUNNING
    assert not list(res.rglob("predictions.npz"))


@pytest.mark.parametrize("code, words", [(errno.ENOSPC, "no space left on device"), (errno.EROFS, "read-only"),
                                         (errno.EACCES, "permission denied")])
def test_write_error_while_saving_results_leaves_no_torn_file(tmp_path, capsys, monkeypatch, code, words):
    import avbench.artifacts as artifacts

    def fail(f, **arrays):
        f.write(b"partial")
        raise OSError(code, {errno.ENOSPC: "No space left on device", errno.EROFS: "Read-only file system",
                             errno.EACCES: "Permission denied"}[code])

    monkeypatch.setattr(artifacts.np, "savez_compressed", fail)
    res = tmp_path / "res"
    line = assert_clean_error(capsys, main(base_args(res)), words, res)
    assert "predictions.npz" in line
    assert not list(res.rglob("predictions.npz")) and not list(res.rglob(".predictions*"))
    assert runs_by_status(res) == {"FAILED": 2}


def test_output_json_write_error_at_the_end_keeps_the_results(tmp_path, capsys, monkeypatch):
    from avbench import results

    def fail(path, doc):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(results, "write", fail)
    res = tmp_path / "res"
    line = assert_clean_error(capsys, main(base_args(res, "--output-json", str(tmp_path / "o.json"))),
                              "no space left on device", res)
    assert "o.json" in line
    assert runs_by_status(res) == {"FINISHED": 2} and list(res.rglob("result.json"))


# --- 4. identity, concurrency, signals --------------------------------------------------------------
def test_rerun_is_skipped_force_replaces_and_tables_count_one_seed(tmp_path, capsys):
    res = tmp_path / "res"
    assert main(base_args(res)) == 0
    capsys.readouterr()
    assert main(base_args(res)) == 0
    assert "seed 0 of uavm already finished" in capsys.readouterr().err
    assert main(base_args(res, "--force")) == 0
    assert runs_by_status(res) == {"FINISHED": 2}  # one parent, one child (the replaced one is deleted)
    capsys.readouterr()
    assert main(["table", "--dataset", "synth", "--results-dir", str(res), "--format", "csv"]) == 0
    out = capsys.readouterr().out
    assert ",1," in out or ",1\n" in out


@pytest.mark.slow
def test_tracking_store_creation_is_safe_for_three_processes(tmp_path):
    import subprocess
    import sys

    code = ("import sys; from avbench.tracking import Tracker; t = Tracker(sys.argv[1]); "
            "print(t.parent_run('toy', 'g', 'n', {'a': 1}, {}))")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "res")], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [o[1][-500:] for o in outs]
    assert len({o[0].strip() for o in outs}) == 1  # one parent for the group
    with sqlite3.connect(tmp_path / "res" / "mlflow.db") as c:
        assert c.execute("select count(*) from experiments where lifecycle_stage = 'active'").fetchone()[0] == 1


def test_stale_running_runs_of_dead_processes_become_killed(tmp_path):
    from avbench.tracking import TAG_PROCESS, Tracker, process_alive, process_tag

    tr = Tracker(tmp_path / "res")
    parent = tr.parent_run("toy", "g", "n", {}, {})
    dead = tr.start_child(parent, 0, "n", {}, {})
    tr.client.set_tag(dead, TAG_PROCESS, process_tag().rsplit(":", 2)[0] + ":999999999:1")
    alive = tr.start_child(parent, 1, "n", {}, {})
    assert process_alive(process_tag()) is True and process_alive("otherhost:1:1") is None
    assert tr.mark_stale_killed() == 1
    assert tr.client.get_run(dead).info.status == "KILLED" and tr.client.get_run(alive).info.status == "RUNNING"


def _spawn(args, **kw):
    import os
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parent), **kw.pop("env", {})}
    return subprocess.Popen([sys.executable, "-m", "avbench", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, preexec_fn=default_sigint, **kw)


def _wait_for(predicate, proc, timeout=240):
    import time

    t0 = time.monotonic()
    while not predicate():
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.monotonic() - t0 < timeout, "timed out"
        time.sleep(0.1)


def _checkpoint_exists(res):
    return lambda: bool(list(res.glob("checkpoints/*/seed0.pt")))


@pytest.mark.slow
@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_sigterm_and_sigint_end_the_seed_and_parent_killed(tmp_path, sig):
    import signal

    res = tmp_path / "res"
    proc = _spawn(run_args("uavm", res, epochs=30))
    _wait_for(_checkpoint_exists(res), proc)
    proc.send_signal(getattr(signal, sig))
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err, err[-2000:]
    assert runs_by_status(res) == {"KILLED": 2}
    rec = json.loads(next(res.glob("runs/*/seed0/record.json")).read_text())
    assert rec["status"] == "KILLED"


@pytest.fixture
def one_thread(monkeypatch):
    """In-process runs on the thread count ``_spawn`` gives its subprocess: float sums depend on it."""
    import torch

    before = torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    yield
    torch.set_num_threads(before)


@pytest.mark.slow
def test_sigkill_then_resume_gives_identical_metrics_and_one_child(tmp_path, one_thread):
    import signal

    ref = tmp_path / "ref.json"
    sets = ["--set", "data.train_clips=192"]
    assert main(run_args("uavm", tmp_path / "r0", "--output-json", str(ref), *sets, epochs=4)) == 0
    res = tmp_path / "res"
    proc = _spawn(run_args("uavm", res, *sets, epochs=4))
    _wait_for(_checkpoint_exists(res), proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert runs_by_status(res).get("RUNNING") == 2  # what a kill -9 leaves ...
    out = tmp_path / "resumed.json"
    assert main(run_args("uavm", res, "--resume", "--output-json", str(out), *sets, epochs=4)) == 0
    assert runs_by_status(res) == {"FINISHED": 2}  # ... reaped, and the seed's child reused
    want = json.loads(ref.read_text())["seeds"][0]["metrics"]
    got = json.loads(out.read_text())["seeds"][0]["metrics"]
    for k, v in want.items():
        if "clips_per_s" not in k and k != "wall_seconds":
            assert got[k] == v, k
    from avbench.tracking import Tracker

    tr = Tracker(res)
    child = tr.children(json.loads(out.read_text())["parent_run_id"])[0].info.run_id
    _assert_epochs_logged_once(tr.client, child, 4)


def _assert_epochs_logged_once(client, run_id: str, epochs: int) -> None:
    """Every epoch's row reached MLflow once, in order; the test split's metrics once, at the last epoch."""
    assert sorted(m.step for m in client.get_metric_history(run_id, "lr")) == list(range(epochs))
    assert [m.step for m in client.get_metric_history(run_id, "fusion/acc")] == [epochs - 1]


# --- 5. tracking outages ----------------------------------------------------------------------------
def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_server_down_at_start_finishes_locally_and_sync_sends_it_once(tmp_path, capsys, monkeypatch):
    res = tmp_path / "res"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{_free_port()}")
    out = tmp_path / "o.json"
    assert main(run_args("uavm", res, "--output-json", str(out), epochs=2)) == 0
    err = capsys.readouterr().err
    assert "is not reachable" in err and f"avbench sync --results-dir {res}" in err and "Traceback" not in err
    seed_dir = next(res.glob("runs/*/seed0"))
    assert {p.name for p in seed_dir.iterdir()} >= {"result.json", "predictions.npz", "history.json", "record.json"}
    assert len(json.loads((seed_dir / "history.json").read_text())) == 2
    assert main(base_args(res, "--strict-tracking", "--seeds", "1")) == 2  # asked to be strict: refused at start
    assert "not starting (--strict-tracking)" in capsys.readouterr().err
    assert not (seed_dir.parent / "seed1").exists()
    monkeypatch.delenv("MLFLOW_TRACKING_URI")  # the server is back (here: the results dir's sqlite store)
    assert main(["sync", "--results-dir", str(res)]) == 0
    assert "sent 1 seed run(s)" in capsys.readouterr().out
    assert main(["sync", "--results-dir", str(res)]) == 0
    assert "sent 0 seed run(s)" in capsys.readouterr().out and runs_by_status(res) == {"FINISHED": 2}
    from avbench.tracking import Tracker

    tr = Tracker(res)
    child = [r for r in tr.client.search_runs([tr.experiment_id("synth")]) if r.data.tags.get("avbench.seed")][0]
    _assert_epochs_logged_once(tr.client, child.info.run_id, 2)
    assert {a.path for a in tr.client.list_artifacts(child.info.run_id)} >= {"result.json", "predictions.npz"}


def test_outage_mid_run_is_one_line_and_the_run_finishes(tmp_path, capsys, monkeypatch):
    from avbench.tracking import Tracker

    calls = {"n": 0}
    real = Tracker.log_metrics

    def flaky(self, *a, **k):
        calls["n"] += 1
        if calls["n"] >= 2:
            raise ConnectionError("Max retries exceeded with url: /api/2.0/mlflow/runs/log-batch")
        return real(self, *a, **k)

    monkeypatch.setattr(Tracker, "log_metrics", flaky)
    res = tmp_path / "res"
    assert main(run_args("uavm", res, epochs=3)) == 0
    err = capsys.readouterr().err
    assert err.count("avbench sync --results-dir") == 1 and "Traceback" not in err
    rec = json.loads(next(res.glob("runs/*/seed0/record.json")).read_text())
    assert rec["status"] == "FINISHED" and rec["logged_epochs"] == 1 and not rec["sent"]
    monkeypatch.undo()
    assert main(["sync", "--results-dir", str(res)]) == 0
    assert runs_by_status(res) == {"FINISHED": 2}  # the child left RUNNING by the outage is completed
    tr = Tracker(res)
    child = tr.client.get_run(rec["child_run_id"])
    _assert_epochs_logged_once(tr.client, child.info.run_id, 3)


@pytest.mark.slow
def test_real_mlflow_server_killed_mid_run(tmp_path):
    """A real ``mlflow server`` on 127.0.0.1, killed after the first epoch reached it."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import requests

    port = _free_port()
    uri = f"http://127.0.0.1:{port}"

    def start_server():
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        p = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
                              "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}", "--workers", "1",
                              "--default-artifact-root", str(tmp_path / "art")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True)
        t0 = time.monotonic()
        while time.monotonic() - t0 < 180:
            try:
                if requests.get(uri + "/health", timeout=1).ok:
                    return p
            except requests.RequestException:
                time.sleep(0.5)
        os.killpg(p.pid, signal.SIGKILL)
        pytest.skip("mlflow server did not start within 180 s on this machine")

    server = start_server()
    res = tmp_path / "res"
    try:
        proc = _spawn(run_args("uavm", res, "--set", "data.train_clips=192", epochs=6), env={"MLFLOW_TRACKING_URI": uri})
        record = res / "runs"
        _wait_for(lambda: any(json.loads(p.read_text()).get("logged_epochs", 0) >= 1
                              for p in record.glob("*/seed0/record.json")), proc)
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
        _, err = proc.communicate(timeout=300)
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
    assert proc.returncode == 0, err[-2000:]
    assert "Traceback" not in err and "avbench sync --results-dir" in err
    rec = json.loads(next(res.glob("runs/*/seed0/record.json")).read_text())
    assert rec["status"] == "FINISHED" and not rec["sent"]
    server = start_server()  # back again: sync completes the child the outage left RUNNING
    try:
        env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
        out = subprocess.run([sys.executable, "-m", "avbench", "sync", "--results-dir", str(res)], env=env,
                             capture_output=True, text=True, timeout=300, check=False)
        assert out.returncode == 0 and "sent 1 seed run(s)" in out.stdout, out.stderr[-2000:]
        from mlflow.tracking import MlflowClient

        client = MlflowClient(uri)
        runs = client.search_runs([client.get_experiment_by_name("avbench-synth").experiment_id])
        assert sorted(r.info.status for r in runs) == ["FINISHED", "FINISHED"]
        child = next(r for r in runs if r.data.tags.get("avbench.seed") == "0")
        _assert_epochs_logged_once(client, child.info.run_id, 6)
    finally:
        os.killpg(server.pid, signal.SIGKILL)
