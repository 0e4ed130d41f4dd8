"""``avbench sweep`` and other commands' runs: a sweep never modifies a run it did not create; values
that contain the grammar's separators stay one value when quoted."""

import json

import pytest

from avbench import sweep as sw
from avbench.cli import main
from avbench.errors import UserError
from helpers import TINY_SETS


def test_a_quoted_value_with_commas_is_one_point():
    g = sw.parse_grid(['data.event_mix="continuous:2,audio_only:1","continuous:1"'])
    assert g.points() == [{"data.event_mix": "continuous:2,audio_only:1"}, {"data.event_mix": "continuous:1"}]
    assert sw.parse_grid([r"data.event_mix=continuous:2\,audio_only:1"]).points() == \
        [{"data.event_mix": "continuous:2,audio_only:1"}]
    assert sw.parse_grid(["a,b='x;y',1;z,2"]).points() == [{"a": "x;y", "b": "1"}, {"a": "z", "b": "2"}]
    assert sw.parse_grid(["s_dim=16, 64"]).points() == [{"s_dim": "16"}, {"s_dim": "64"}]  # unquoted: as before
    with pytest.raises(UserError, match="unclosed"):
        sw.parse_grid(['a="x,y'])


def _run_args(res, s_dim="8"):
    args = ["run", "--strategy", "uavm", "--dataset", "synth", "--seeds", "0", "--epochs", "1",
            "--results-dir", str(res), "--no-progress", "--no-save-model", "--set", "embed_dim=16",
            "--set", "n_specific=1", "--set", "n_shared=1", "--set", f"s_dim={s_dim}"]
    for s in TINY_SETS:
        args += ["--set", s]
    return args


def _sweep_args(res, grid="s_dim=8,16", name="width"):
    args = ["sweep", "--strategy", "uavm", "--dataset", "synth", "--grid", grid, "--seeds", "0", "--epochs", "1",
            "--results-dir", str(res), "--no-progress", "--no-save-model", "--name", name,
            "--set", "embed_dim=16", "--set", "n_specific=1", "--set", "n_shared=1"]
    for s in TINY_SETS:
        args += ["--set", s]
    return args


def _snapshot(run):
    return (run.info.status, run.info.end_time, dict(run.data.tags), dict(run.data.params), dict(run.data.metrics))


@pytest.mark.slow
def test_a_sweep_reads_a_finished_parent_it_did_not_create_and_changes_nothing(tmp_path):
    from avbench.report.gather import gather
    from avbench.tracking import Tracker

    res = tmp_path / "res"
    assert main(_run_args(res)) == 0
    tr = Tracker(res)
    exp = tr.experiment_id("synth")
    (theirs,) = [r for r in tr.client.search_runs([exp]) if r.data.tags.get("avbench.kind") == "parent"]
    their_seed = tr.children(theirs.info.run_id)[0]
    before = _snapshot(theirs), _snapshot(their_seed)

    assert main(_sweep_args(res)) == 0  # s_dim=8 is the plain run's configuration; s_dim=16 is new

    after = _snapshot(tr.client.get_run(theirs.info.run_id)), _snapshot(tr.client.get_run(their_seed.info.run_id))
    assert after == before  # same end time, status, tags, params, metrics
    parents = [r for r in tr.client.search_runs([exp]) if r.data.tags.get("avbench.kind") == "parent"]
    assert len(parents) == 2
    ours = next(r for r in parents if r.info.run_id != theirs.info.run_id)
    assert ours.data.tags["avbench.created_by"] == "sweep:width"
    assert json.loads(ours.data.tags["avbench.sweep.width"])["point"] == {"s_dim": "16"}
    # The foreign point is recorded on the sweep's own record run.
    (record,) = [r for r in tr.client.search_runs([exp]) if r.data.tags.get("avbench.kind") == "sweep"]
    assert record.data.tags["avbench.sweep_name"] == "width" and record.info.status == "FINISHED"
    member = json.loads(record.data.tags[f"avbench.sweep_member.{theirs.info.run_id}"])
    assert member["point"] == {"s_dim": "8"} and member["x"] == "s_dim"

    # The report sees both points of the sweep; the plain run stays a main row.
    infos = {r.row.parent_run_id: r for r in gather(tr, "synth", predictions=False, analyses=False)}
    assert infos[theirs.info.run_id].sweeps["width"]["point"] == {"s_dim": "8"}
    assert not infos[theirs.info.run_id].from_sweep
    assert infos[ours.info.run_id].sweeps["width"]["point"] == {"s_dim": "16"}

    # Again: nothing trains, nothing of theirs changes, the record run is reused.
    assert main(_sweep_args(res)) == 0
    assert _snapshot(tr.client.get_run(theirs.info.run_id)) == before[0]
    assert len([r for r in tr.client.search_runs([exp]) if r.data.tags.get("avbench.kind") == "sweep"]) == 1
