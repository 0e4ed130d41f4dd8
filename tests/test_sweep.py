"""``avbench sweep``: grid parsing, ties, and a real resumable sweep on a tiny synth cache."""

import json
import sqlite3

import pytest

from avbench import sweep as sw
from avbench.cli import main
from avbench.errors import UserError
from helpers import TINY_SETS


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
    """A point equal to a plain `avbench run` joins that run's parent (by tag) instead of duplicating it."""
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
    assert _runs(res) == n
    from avbench.tracking import Tracker

    tr = Tracker(res)
    runs = tr.client.search_runs([tr.experiment_id("synth")])
    parents = [r for r in runs if r.data.tags.get("avbench.kind") == "parent"]
    assert len(parents) == 1
    assert "avbench.sweep.width" in parents[0].data.tags and "avbench.created_by" not in parents[0].data.tags


def test_dry_run_lists_points_and_bad_name_is_rejected(tmp_path, capsys):
    args = ["sweep", "--strategy", "uavm,independent", "--dataset", "synth", "--grid", "n_shared=0,6",
            "--tie", "n_specific=6-n_shared", "--results-dir", str(tmp_path / "r"), "--dry-run"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "2 strategy(ies) x 2 point(s)" in out and "independent: n_shared=6, n_specific=0" in out
    assert not (tmp_path / "r" / "mlflow.db").exists()
    assert main(args + ["--name", "bad name"]) == 2
    assert "--name 'bad name'" in capsys.readouterr().err
