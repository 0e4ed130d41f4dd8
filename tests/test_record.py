"""The local record of truth (``avbench.record``): what a group and its seeds hold on disk, written
atomically (a failed write leaves the previous file and no temporary behind), read back as written, a
torn or missing file read as "nothing", and the seeds found in a results directory in order."""

from __future__ import annotations

import json
import os

import pytest

from avbench import record
from avbench.errors import UserError
from avbench.record import ACTIVE, ENDED, GroupRecord, SeedRecord, all_seeds


def test_group_info_and_seed_record_round_trip(tmp_path):
    group = GroupRecord(tmp_path / "res", "late_fusion-abc123")
    assert group.info is None and group.seeds() == []  # nothing written yet
    group.write_info({"dataset": "synth", "name": "late_fusion", "params": {"lr": 0.001}, "tags": {}})
    assert group.info == {"dataset": "synth", "name": "late_fusion", "params": {"lr": 0.001}, "tags": {},
                          "group": "late_fusion-abc123"}
    assert group.dir == (tmp_path / "res").resolve() / "runs" / "late_fusion-abc123"

    rec = group.seed(3)
    assert rec.seed == 3 and rec.dir == group.dir / "seed3"
    assert rec.data == {} and rec.status is None and rec.history == [] and rec.result is None
    rec.update(status=ACTIVE, params={"lr": 0.001})
    rec.update(logged_epochs=2)  # an update keeps what the record held
    data = rec.data
    assert data["status"] == "RUNNING" and data["params"] == {"lr": 0.001} and data["logged_epochs"] == 2
    assert data["seed"] == 3 and isinstance(data["updated"], float)
    assert json.loads((rec.dir / "record.json").read_text()) == data  # plain JSON on disk


def test_status_moves_from_running_to_an_ended_state():
    assert ACTIVE == "RUNNING" and ENDED == ("FINISHED", "FAILED", "KILLED") and ACTIVE not in ENDED


@pytest.mark.parametrize("end", ENDED)
def test_each_ended_status_is_kept(tmp_path, end):
    rec = GroupRecord(tmp_path, "g").seed(0)
    rec.update(status=ACTIVE)
    assert rec.status == "RUNNING"
    rec.update(status=end, sent=False)
    assert rec.status == end and rec.data["sent"] is False


def test_history_result_and_artifacts(tmp_path):
    rec = GroupRecord(tmp_path, "g").seed(0)
    rows = [{"epoch": 1, "train/loss": 1.25}, {"epoch": 2, "train/loss": 0.5, "test/acc": 0.75}]
    rec.write_history(rows[:1])
    assert rec.history == rows[:1]
    rec.write_history(rows)  # every epoch rewrites the whole history
    assert rec.history == rows
    assert rec.artifacts() == []  # history.json and record.json are not artifacts
    rec.write_result({"metrics": {"test/acc": 0.75}})
    assert rec.result == {"metrics": {"test/acc": 0.75}}
    rec.path("model.pt").write_bytes(b"weights")
    rec.path("notes.txt").write_text("not an artifact")
    assert [p.name for p in rec.artifacts()] == ["result.json", "model.pt"]  # present ones, in a fixed order


def test_a_torn_or_foreign_file_reads_as_nothing(tmp_path):
    group = GroupRecord(tmp_path, "g")
    rec = group.seed(0)
    rec.update(status="FINISHED")
    (rec.dir / "record.json").write_text('{"status": "FINI')  # torn by hand (avbench never writes this)
    (rec.dir / "history.json").write_text("")
    assert rec.data == {} and rec.status is None and rec.history == []
    (group.dir / "group.json").write_text("[1, 2")
    assert group.info is None


def test_a_failed_write_leaves_the_previous_file_and_no_temporary(tmp_path, monkeypatch):
    rec = GroupRecord(tmp_path, "g").seed(0)
    rec.update(status="RUNNING", logged_epochs=1)
    before = (rec.dir / "record.json").read_bytes()

    real = record.Path.write_bytes

    def disk_full(self, text, *_, **__):  # half the bytes reach the disk, then it is full
        real(self, text.encode()[: len(text) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(record.Path, "write_text", disk_full)
    with pytest.raises(UserError, match=r"cannot write .*record.json: no space left on device"):
        rec.update(status="FINISHED")
    monkeypatch.undo()
    assert (rec.dir / "record.json").read_bytes() == before
    assert rec.status == "RUNNING" and rec.data["logged_epochs"] == 1
    assert sorted(p.name for p in rec.dir.iterdir()) == ["record.json"]  # no .record.json.<pid>.tmp left


def test_a_write_never_shows_a_partial_file(tmp_path, monkeypatch):
    """The new content is written under a temporary name and renamed: while it is being written, the
    record still reads as the old one."""
    rec = GroupRecord(tmp_path, "g").seed(0)
    rec.update(status="RUNNING")
    seen = []
    real = record.Path.write_text

    def spy(self, text, *a, **k):
        seen.append((self.name, SeedRecord(rec.dir, 0).status))  # what a reader sees mid-write
        return real(self, text, *a, **k)

    monkeypatch.setattr(record.Path, "write_text", spy)
    rec.update(status="FINISHED")
    monkeypatch.undo()
    assert seen == [(f".record.json.{os.getpid()}.tmp", "RUNNING")]
    assert rec.status == "FINISHED"


def test_reset_forgets_a_seed_and_all_seeds_lists_every_group_in_order(tmp_path):
    res = tmp_path / "res"
    a, b = GroupRecord(res, "a-group"), GroupRecord(res, "b-group")
    for seed in (10, 2, 0):
        a.seed(seed).update(status="FINISHED")
    b.seed(1).update(status="FAILED")
    (a.dir / "seedling").mkdir()  # not a seed directory
    assert [s.seed for s in a.seeds()] == [0, 10, 2]  # sorted by name, as the runner replays them
    assert [(g.group, s.seed, s.status) for g, s in all_seeds(res)] == [
        ("a-group", 0, "FINISHED"), ("a-group", 10, "FINISHED"), ("a-group", 2, "FINISHED"), ("b-group", 1, "FAILED")]
    rec = a.seed(10)
    rec.write_history([{"epoch": 1}])
    rec.path("model.pt").write_bytes(b"w")
    rec.reset()
    assert rec.data == {} and rec.history == [] and list(rec.dir.iterdir()) == []
    assert list(all_seeds(tmp_path / "empty")) == []
