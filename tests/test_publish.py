"""``avbench.publish``: MLflow is made to hold what a seed's local record holds, and nothing twice.

A record is written by hand (as the runner writes it) and sent to a real MLflow store (sqlite under the
results directory): publishing twice adds nothing; a publish cut short while the seed ran is completed
by the next call into the same child run; each epoch's metrics are logged once, in epoch order; a
replay interrupted after the child run was created finds that run again; ``sync`` counts what it sent,
and records of dead processes become KILLED.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys

import pytest

from avbench import publish
from avbench.record import GroupRecord
from avbench.tracking import TAG_PARENT, TAG_RECORD, TAG_SEED, Tracker

HISTORY = [{"epoch": 1, "train/loss": 1.5, "val/acc": 0.25},
           {"epoch": 2, "train/loss": 0.75, "val/acc": 0.5},
           {"epoch": 3, "train/loss": 0.5, "val/acc": 0.625, "test/acc": 0.75}]


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory):
    """An empty, current MLflow sqlite store, made once: each test starts from a copy of it (creating
    and migrating a store costs seconds)."""
    template = tmp_path_factory.mktemp("template")
    Tracker(template)
    return template / "mlflow.db"


def _tracker(res, empty_store):
    res.mkdir(parents=True)
    shutil.copy(empty_store, res / "mlflow.db")
    return Tracker(res)


@pytest.fixture
def store(tmp_path, empty_store):
    res = tmp_path / "res"
    return res, _tracker(res, empty_store)


def _group(res, name="late_fusion"):
    group = GroupRecord(res, f"{name}-0123abcd")
    group.write_info({"dataset": "synth", "name": name, "params": {"lr": 0.001, "epochs": 3},
                      "tags": {"avbench.strategy": name},
                      "cache": {"name": "synth", "key": "synth-key", "path": str(res / "cache"), "profile": {"clips": 96}}})
    return group


def _seed(group, seed=0, status="FINISHED", epochs=3):
    rec = group.seed(seed)
    rec.update(status=status, params={"lr": 0.001, "seed": seed}, sent=False,
               metrics={"test/acc": 0.75, "train/clips_per_s": 120.0} if status == "FINISHED" else {})
    rec.write_history(HISTORY[:epochs])
    if status == "FINISHED":
        rec.write_result({"metrics": {"test/acc": 0.75}})
    return rec


def _steps(tracker, run_id, key):
    return [(m.step, m.value) for m in tracker.client.get_metric_history(run_id, key)]


def _children(tracker, parent):
    return tracker.children(parent, finished_only=False)


def test_publish_holds_what_the_record_holds_and_twice_adds_nothing(store):
    res, tracker = store
    group = _group(res)
    rec = _seed(group)
    child = publish.publish_seed(tracker, group, rec)
    run = tracker.client.get_run(child)
    parent = run.data.tags[TAG_PARENT]
    assert run.info.status == "FINISHED" and run.data.tags[TAG_SEED] == "0"
    assert run.data.params == {"lr": "0.001", "seed": "0"}
    assert _steps(tracker, child, "train/loss") == [(1, 1.5), (2, 0.75), (3, 0.5)]
    assert _steps(tracker, child, "test/acc") == [(3, 0.75)]  # from the last epoch's row, not again as final
    assert _steps(tracker, child, "train/clips_per_s") == [(3, 120.0)]  # final-only metrics at the last epoch
    assert {a.path for a in tracker.client.list_artifacts(child)} == {"result.json"}
    assert sorted(d.dataset.digest for d in run.inputs.dataset_inputs) == ["synth-key", "synth-key:test",
                                                                          "synth-key:validation"]
    assert tracker.client.get_run(parent).data.metrics["test/acc_mean"] == 0.75
    data = rec.data
    assert data["sent"] is True and data["logged_epochs"] == 3 and data["final_logged"] is True
    assert data["child_run_id"] == child and data["parent_run_id"] == parent and data["tracking_uri"] == tracker.uri

    assert publish.publish_seed(tracker, group, rec) == child  # again: the same run, nothing added
    assert [r.info.run_id for r in _children(tracker, parent)] == [child]
    assert _steps(tracker, child, "train/loss") == [(1, 1.5), (2, 0.75), (3, 0.5)]
    assert _steps(tracker, child, "train/clips_per_s") == [(3, 120.0)]
    assert len(tracker.client.get_run(child).inputs.dataset_inputs) == 3
    assert [a.path for a in tracker.client.list_artifacts(child)] == ["result.json"]


def test_a_partial_publish_is_completed_by_the_next_call(store):
    """Epochs logged live while the seed ran (then the process ended): the next publish adds only the
    rest, to the same child, in epoch order, and ends it."""
    res, tracker = store
    group = _group(res)
    rec = _seed(group, status="RUNNING", epochs=2)
    child = publish.publish_seed(tracker, group, rec)
    assert tracker.client.get_run(child).info.status == "RUNNING"
    assert _steps(tracker, child, "train/loss") == [(1, 1.5), (2, 0.75)]
    assert rec.data["sent"] is False and rec.data["logged_epochs"] == 2 and not rec.data["final_logged"]

    rec.write_history(HISTORY)  # the third epoch, then the seed finishes
    rec.update(status="FINISHED", metrics={"test/acc": 0.75})
    rec.write_result({"metrics": {"test/acc": 0.75}})
    assert publish.publish_seed(tracker, group, rec) == child
    run = tracker.client.get_run(child)
    assert run.info.status == "FINISHED" and rec.data["sent"] is True
    assert _steps(tracker, child, "train/loss") == [(1, 1.5), (2, 0.75), (3, 0.5)]
    assert _steps(tracker, child, "val/acc") == [(1, 0.25), (2, 0.5), (3, 0.625)]
    assert len(_children(tracker, run.data.tags[TAG_PARENT])) == 1


def test_a_replay_interrupted_after_creating_the_run_finds_it_again(store):
    res, tracker = store
    group = _group(res)
    rec = _seed(group, status="FAILED", epochs=1)
    child = publish.publish_seed(tracker, group, rec)
    assert tracker.client.get_run(child).info.status == "FAILED"
    assert tracker.client.get_run(child).data.tags[TAG_RECORD] == rec.data["record_id"]
    rec.update(child_run_id=None, sent=False)  # as if the process died before writing the run's id
    assert publish.publish_seed(tracker, group, rec) == child
    assert _steps(tracker, child, "train/loss") == [(1, 1.5)]  # the record still said 1 epoch logged


def test_a_new_store_gets_a_full_copy(tmp_path, store, empty_store):
    """A record sent to another tracking store (another URI) is sent there in full."""
    res, tracker = store
    group = _group(res)
    rec = _seed(group)
    first = publish.publish_seed(tracker, group, rec)
    other = _tracker(tmp_path / "elsewhere", empty_store)
    second = publish.publish_seed(other, group, rec)
    assert second != first and rec.data["tracking_uri"] == other.uri
    assert _steps(other, second, "train/loss") == [(1, 1.5), (2, 0.75), (3, 0.5)]


def _dead_process_tag() -> str:
    p = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                       check=True)
    return f"{socket.gethostname()}:{int(p.stdout)}:1"  # start time 1: never a live process's


def test_sync_sends_unsent_records_once_and_reaps_dead_ones(store):
    res, tracker = store
    group = _group(res)
    done = _seed(group, 0)
    dead = _seed(group, 1, status="RUNNING", epochs=2)
    dead.update(process=_dead_process_tag())
    _seed(_group(res, "sum"), 0, status="FAILED", epochs=1)
    summary = publish.sync(str(res), tracker)
    assert summary == {"sent": 3, "already": 0, "reaped": 1, "uri": tracker.uri}
    assert dead.status == "KILLED" and dead.data["sent"] is True
    killed = tracker.client.get_run(dead.data["child_run_id"])
    assert killed.info.status == "KILLED" and _steps(tracker, killed.info.run_id, "train/loss") == [(1, 1.5), (2, 0.75)]
    assert tracker.client.get_run(done.data["child_run_id"]).info.status == "FINISHED"
    assert publish.sync(str(res), tracker) == {"sent": 0, "already": 3, "reaped": 0, "uri": tracker.uri}


def test_a_running_record_of_a_live_process_is_left_alone(store):
    res, tracker = store
    group = _group(res)
    rec = _seed(group, status="RUNNING", epochs=1)
    from avbench.tracking import process_tag

    rec.update(process=process_tag())  # this very process
    assert publish.reap(str(res)) == 0 and rec.status == "RUNNING"
    assert publish.sync(str(res), tracker)["sent"] == 0 and "child_run_id" not in rec.data
