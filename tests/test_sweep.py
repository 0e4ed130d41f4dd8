"""``avbench sweep``: grid parsing, ties, and a real resumable sweep on a tiny synth cache."""

import json
import os
import sqlite3
from pathlib import Path

import pytest

from avbench import sweep as sw
from avbench.cli import main
from avbench.errors import UserError
from helpers import TINY_SETS, default_sigint


def test_single_axes_multiply():
    g = sw.parse_grid(["s_dim=16,64", "lambda_mt=0.1,0.5,0.9"])
    pts = g.points()
    assert len(pts) == 6
    assert pts[0] == {"s_dim": "16", "lambda_mt": "0.1"} and pts[-1] == {"s_dim": "64", "lambda_mt": "0.9"}
    assert g.x_key == "s_dim" and sw.default_name(g) == "s_dim-lambda_mt"


def test_tied_axis_gives_n_plus_ns_equal_6():
    g = sw.parse_grid(["n_shared=0,3,6"], ["n_specific=6-n_shared"])
    assert [(p["n_specific"], p["n_shared"]) for p in g.points()] == [("6", "0"), ("3", "3"), ("0", "6")]
    assert g.x_key == "n_shared"


def test_zipped_axis_is_the_same_grid_as_the_tie():
    zipped = sw.parse_grid(["n_specific,n_shared=6,0;3,3;0,6"]).points()
    tied = sw.parse_grid(["n_shared=0,3,6"], ["n_specific=6-n_shared"]).points()
    assert [sorted(p.items()) for p in zipped] == [sorted(p.items()) for p in tied]
    assert sw.parse_grid(["n_specific,n_shared=6,0;3,3;0,6"]).x_key == "n_shared"


def test_tie_arithmetic_and_prefixed_keys():
    g = sw.parse_grid(["model.s_dim=16,32"], ["embed_dim=model.s_dim*2", "lambda_mt=1/4"])
    assert [(p["embed_dim"], p["lambda_mt"]) for p in g.points()] == [("32", "0.25"), ("64", "0.25")]


@pytest.mark.parametrize("grids, ties, message", [
    (["s_dim"], [], "expects key=v1,v2"),
    (["a,b=1,2;3"], [], "has 1 value(s) for 2 keys"),
    (["s_dim=1,1"], [], "repeated value"),
    (["s_dim=16", "s_dim=32"], [], "more than once"),
    (["n_shared=0,3"], ["n_specific=6-nshared"], "'nshared' is not a swept key"),
    (["n_shared=0,3"], ["n_specific=__import__('os').getpid()"], "only numbers, swept keys"),
    (["n_shared=0,3"], ["n_specific=6/(n_shared-3)"], "division by zero"),
    (["lr=fast"], ["x=lr*2"], "not a number"),
    ([], [], "at least one --grid"),
])
def test_bad_grids_are_user_errors(grids, ties, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        sw.parse_grid(grids, ties)


def _runs(results):
    with sqlite3.connect(results / "mlflow.db") as c:
        return c.execute("select count(*) from runs").fetchone()[0]


def _sweep_args(results, seeds="0", *extra):
    args = ["sweep", "--strategy", "uavm", "--dataset", "synth", "--grid", "s_dim=8,6", "--seeds", seeds,
            "--epochs", "1", "--results-dir", str(results), "--no-progress", "--no-save-model",
            "--set", "embed_dim=16", "--set", "n_specific=1", "--set", "n_shared=1"]
    for s in TINY_SETS:
        args += ["--set", s]
    return args + list(extra)


@pytest.mark.slow
def test_sweep_resumes_skips_finished_and_reports_failures(tmp_path, capsys):
    res = tmp_path / "res"
    out = tmp_path / "sweep.json"
    # s_dim=6 is not divisible by 4 heads: that point fails, the sweep goes on and exits 1.
    assert main(_sweep_args(res, "0", "--output-json", str(out))) == 1
    printed = capsys.readouterr().out
    assert "1 of 2 point(s) failed" in printed and "s_dim=6 is not divisible by num_heads=4" in printed
    first = json.loads(out.read_text())
    assert [p["status"] for p in first["points"]] == ["ran", "failed"]
    runs_after_first = _runs(res)
    assert runs_after_first == 2  # one parent, one seed

    from avbench.tracking import Tracker

    tr = Tracker(res)
    parent = tr.client.get_run(first["points"][0]["parent_run_id"])
    tag = json.loads(parent.data.tags["avbench.sweep.s_dim"])
    assert tag["point"] == {"s_dim": "8"} and tag["x"] == "s_dim"
    assert parent.data.tags["avbench.created_by"] == "sweep:s_dim"
    child = tr.children(parent.info.run_id)[0]
    fused = child.data.metrics["fusion/acc"]

    # The same command again: nothing is retrained.
    assert main(_sweep_args(res, "0", "--output-json", str(out))) == 1
    again = json.loads(out.read_text())
    assert [p["status"] for p in again["points"]] == ["skipped", "failed"]
    assert _runs(res) == runs_after_first
    assert again["points"][0]["summary"]["fusion/acc"]["mean"] == fused

    # A new seed: seed 0 is skipped, seed 1 runs into the same parent.
    assert main(_sweep_args(res, "0,1", "--output-json", str(out))) == 1
    more = json.loads(out.read_text())
    assert more["points"][0]["status"] == "partial"
    assert more["points"][0]["parent_run_id"] == parent.info.run_id
    assert _runs(res) == runs_after_first + 1
    assert sorted(c.data.tags["avbench.seed"] for c in tr.children(parent.info.run_id)) == ["0", "1"]


@pytest.mark.slow
def test_sweep_tags_an_existing_parent_without_claiming_it(tmp_path, capsys):
    """A point equal to a plain `avbench run` reuses that run's parent instead of duplicating it, and never
    modifies it (the membership is on the sweep's record run; tests/test_sweep_records.py)."""
    res = tmp_path / "res"
    base = ["run", "--strategy", "uavm", "--dataset", "synth", "--seeds", "0", "--epochs", "1",
            "--results-dir", str(res), "--no-progress", "--no-save-model", "--set", "embed_dim=16",
            "--set", "n_specific=1", "--set", "n_shared=1", "--set", "s_dim=8"]
    for s in TINY_SETS:
        base += ["--set", s]
    assert main(base) == 0
    n = _runs(res)
    args = _sweep_args(res)
    args[args.index("s_dim=8,6")] = "s_dim=8"
    assert main(args + ["--name", "width"]) == 0
    assert "skipped" in capsys.readouterr().out
    assert _runs(res) == n + 1  # nothing trained; the one new run is the sweep's record run
    from avbench.tracking import Tracker

    tr = Tracker(res)
    runs = tr.client.search_runs([tr.experiment_id("synth")])
    parents = [r for r in runs if r.data.tags.get("avbench.kind") == "parent"]
    assert len(parents) == 1
    assert "avbench.sweep.width" not in parents[0].data.tags and "avbench.created_by" not in parents[0].data.tags


def test_dry_run_lists_points_and_bad_name_is_rejected(tmp_path, capsys):
    args = ["sweep", "--strategy", "uavm,independent", "--dataset", "synth", "--grid", "n_shared=0,6",
            "--tie", "n_specific=6-n_shared", "--results-dir", str(tmp_path / "r"), "--dry-run"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "2 strategy(ies) x 2 point(s)" in out and "independent: n_shared=6, n_specific=0" in out
    assert not (tmp_path / "r" / "mlflow.db").exists()
    assert main(args + ["--name", "bad name"]) == 2
    assert "--name 'bad name'" in capsys.readouterr().err


# --- executors: several jobs at once, Ray, failures inside a job, Ctrl-C and resume -------------------
BOOM = "sweep_plugins:BoomPool"  # tests/sweep_plugins.py
EVAL = ("audio/", "video/", "fusion/")


@pytest.fixture
def boom(tmp_path, monkeypatch):
    """The strategy importable here, in spawned workers (sys.path) and in Ray workers (PYTHONPATH)."""
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs 2 usable cores")
    d = Path(__file__).parent
    monkeypatch.syspath_prepend(str(d))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(d), os.environ.get("PYTHONPATH")) if p))
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # two usable cores: two jobs of one thread each
    return d


def _boom_args(results, grid, seeds, *extra, epochs=1):
    args = ["sweep", "--strategy", BOOM, "--dataset", "synth", "--grid", grid, "--seeds", seeds,
            "--epochs", str(epochs), "--results-dir", str(results), "--no-progress", "--no-save-model"]
    for s in TINY_SETS:
        args += ["--set", s]
    return args + list(extra)


def _per_seed(out_json):
    """{(point, seed): eval metrics} from --output-json."""
    data = json.loads(out_json.read_text())
    return {(json.dumps(p["point"], sort_keys=True), s["seed"]): {k: v for k, v in s["metrics"].items()
                                                                  if k.startswith(EVAL)}
            for p in data["points"] for s in p["seeds"]}


def _seed_runs(results):
    """[(parent id, seed, status, run id)] of every seed run in the store."""
    with sqlite3.connect(results / "mlflow.db") as c:
        return c.execute(
            "select p.value, s.value, r.status, r.run_uuid from runs r "
            "join tags k on k.run_uuid = r.run_uuid and k.key = 'avbench.kind' and k.value = 'seed' "
            "join tags p on p.run_uuid = r.run_uuid and p.key = 'mlflow.parentRunId' "
            "join tags s on s.run_uuid = r.run_uuid and s.key = 'avbench.seed'").fetchall()


@pytest.mark.slow
def test_a_job_that_fails_is_reported_while_the_others_finish(boom, tmp_path, capsys):
    res, out = tmp_path / "res", tmp_path / "out.json"
    assert main(_boom_args(res, "boom=0,1", "0,1", "--jobs", "2", "--output-json", str(out))) == 1
    printed = capsys.readouterr().out
    assert "1 of 2 point(s) failed" in printed and "RuntimeError: boom at step 0" in printed
    points = json.loads(out.read_text())["points"]
    assert [p["status"] for p in points] == ["ran", "failed"]
    assert [s["status"] for s in points[0]["seeds"]] == ["ran", "ran"]
    assert points[1]["error"].startswith("seed 0: RuntimeError: boom at step 0") and "seed 1:" in points[1]["error"]
    assert points[0]["summary"]["fusion/acc"]["n"] == 2
    status = {(parent, seed): st for parent, seed, st, _ in _seed_runs(res)}
    good, bad = points[0]["parent_run_id"], points[1]["parent_run_id"]
    assert status == {(good, "0"): "FINISHED", (good, "1"): "FINISHED", (bad, "0"): "FAILED", (bad, "1"): "FAILED"}


@pytest.mark.slow
def test_same_metrics_per_point_and_seed_whatever_the_executor(boom, tmp_path):
    """local --jobs 1, local --jobs 2 and a local 2-CPU Ray cluster, one thread per job each."""
    ray = pytest.importorskip("ray")
    grid, seeds = "hidden=4,8", "0,1"
    runs = {}
    for label, extra in (("jobs1", ["--jobs", "1"]), ("jobs2", ["--jobs", "2"])):
        out = tmp_path / f"{label}.json"
        assert main(_boom_args(tmp_path / label, grid, seeds, *extra, "--threads-per-job", "1",
                               "--output-json", str(out))) == 0
        runs[label] = _per_seed(out)
    ray.init(num_cpus=2, include_dashboard=False)
    try:
        out = tmp_path / "ray.json"
        assert main(_boom_args(tmp_path / "ray", grid, seeds, "--executor", "ray", "--threads-per-job", "1",
                               "--output-json", str(out))) == 0
        runs["ray"] = _per_seed(out)
    finally:
        ray.shutdown()
    assert len(runs["jobs1"]) == 4 and all(len(m) >= 3 for m in runs["jobs1"].values())
    assert len({m["fusion/acc"] for m in runs["jobs1"].values()}) > 1  # the points and seeds really differ
    assert runs["jobs2"] == runs["jobs1"]
    assert runs["ray"] == runs["jobs1"]


@pytest.mark.slow
def test_ctrl_c_marks_running_jobs_killed_and_a_rerun_resumes(boom, tmp_path):
    """Interrupt a --jobs 2 sweep after its first finished seed; the rerun trains exactly the rest."""
    import signal
    import subprocess
    import sys
    import time

    res = tmp_path / "res"
    args = _boom_args(res, "hidden=4,8", "0,1", "--jobs", "2", epochs=2)
    proc = subprocess.Popen([sys.executable, "-m", "avbench", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, preexec_fn=default_sigint)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if any(st == "FINISHED" for *_, st, _ in _seed_runs(res)):
                break
        except sqlite3.OperationalError:  # the store is not there or being created
            pass
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    log = proc.communicate(timeout=120)[0]
    first = _seed_runs(res)
    finished_first = {(p, s): r for p, s, st, r in first if st == "FINISHED"}
    assert proc.returncode == 130, log
    assert len(finished_first) >= 1
    assert not [r for r in first if r[2] == "RUNNING"]  # cancelled runs are closed, not left running
    killed = [r for r in first if r[2] == "KILLED"]

    assert main(args) == 0
    final = _seed_runs(res)
    finished = {}
    for p, s, st, r in final:
        if st == "FINISHED":
            assert (p, s) not in finished, f"seed {s} of {p} trained twice"
            finished[(p, s)] = r
    assert len(finished) == 4  # none lost
    assert all(finished[k] == r for k, r in finished_first.items())  # finished seeds were not retrained
    # the rerun made at most one run per missing seed (a seed that finished locally while the cancel
    # closed its MLflow run as KILLED is sent by the rerun into that same run, not trained again)
    assert len(final) <= len(first) + (4 - len(finished_first))
    assert {st for *_, st, _ in final} <= {"FINISHED", "KILLED"} and len(killed) <= 2


# --- a sweep without a grid: the final runs of a tuned comparison, recorded as avbench run records them ---
def _write_tuned(results, sets):
    """A stored tuned configuration for sum on the tiny cache, as avbench tune writes it."""
    from avbench import runner, tune

    r = runner.resolve(runner.RunRequest(strategy="sum", dataset="synth", overrides=sets, progress=False))
    tuned = {"strategy": "sum", "dataset": "synth", "cache_key": r.cache.manifest.key, "metric": "fusion/acc",
             "value": 0.5, "budget": {"trials": 1},
             "overrides": {"train.schedule": "cosine", "train.lr": "0.00123", "train.max_steps": "5"}}
    tune.write_tuned(results, tune.TuneRequest(strategies=["sum"], dataset="synth"), tuned)


def _parents(results):
    from avbench.report.table import collect_rows
    from avbench.tracking import Tracker

    tr = Tracker(results)
    rows = collect_rows(tr, "synth")
    return tr, rows, [tr.client.get_run(r.parent_run_id) for r in rows]


@pytest.mark.slow
def test_a_gridless_tuned_sweep_records_what_run_tuned_records(tmp_path):
    sets = dict(s.split("=", 1) for s in TINY_SETS)
    flags = [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]
    common = ["--strategy", "sum", "--dataset", "synth", "--tuned", "--no-progress", "--no-save-model", *flags]
    swept, ran = tmp_path / "swept", tmp_path / "ran"
    for rd in (swept, ran):
        _write_tuned(rd, sets)
    assert main(["sweep", *common, "--seeds", "0", "--results-dir", str(swept)]) == 0
    assert main(["run", *common, "--seeds", "0", "--results-dir", str(ran)]) == 0

    (_, rows_s, (ps,)), (_, rows_r, (pr,)) = _parents(swept), _parents(ran)
    assert ps.data.params["train.lr"] == "0.00123" and ps.data.params["train.max_steps"] == "5"  # the tuned config
    assert ps.info.run_name == pr.info.run_name == "sum"
    assert [(r.name, r.strategy, r.config, r.protocol, r.seeds) for r in rows_s] == \
        [(r.name, r.strategy, r.config, r.protocol, r.seeds) for r in rows_r]
    same = {k: v for k, v in pr.data.params.items() if k != "cache"}
    assert {k: v for k, v in ps.data.params.items() if k != "cache"} == same
    volatile = ("avbench.process", "mlflow.source", "mlflow.user", "avbench.tuned")
    keys = {k for k in pr.data.tags if not k.startswith(volatile)}
    assert {k for k in ps.data.tags if not k.startswith(volatile)} == keys
    assert not [k for k in ps.data.tags if k.startswith(("avbench.sweep.", "avbench.created_by"))]
    assert ps.data.tags["avbench.tuned"].startswith(str(swept.resolve()))

    # run --skip-finished with the same configuration sees the sweep's seed as finished: nothing trains.
    n = _runs(swept)
    out = tmp_path / "rerun.json"
    assert main(["run", *common, "--seeds", "0", "--results-dir", str(swept), "--skip-finished",
                 "--output-json", str(out)]) == 0
    summary = json.loads(out.read_text())
    assert summary["parent_run_id"] == ps.info.run_id and summary["seeds"][0]["skipped"]
    assert _runs(swept) == n
