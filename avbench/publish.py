"""Send the local record to MLflow, idempotently; the runner's end of a seed and ``avbench sync`` alike.

A seed's record (``avbench.record``) says which MLflow runs mirror it and how much of it they hold
(``logged_epochs``, ``final_logged``, ``sent``), so replaying it twice, or after a run that logged
half of it live before the server went away, adds nothing twice. Records of processes that died
(SIGKILL, power loss) are marked KILLED here, locally and in MLflow.
"""

from __future__ import annotations

import uuid
from typing import Any

from avbench.record import ACTIVE, ENDED, GroupRecord, SeedRecord, all_seeds
from avbench.tracking import TAG_PROCESS, TAG_RECORD, Resilient, Tracker, process_alive, process_tag


def reap(results_dir: str, track: Resilient | None = None) -> int:
    """Records and MLflow runs left RUNNING by dead processes of this host become KILLED."""
    n = 0
    for _, rec in all_seeds(results_dir):
        data = rec.data
        if data.get("status") == ACTIVE and process_alive(data.get("process", "")) is False:
            rec.update(status="KILLED", sent=False)
            n += 1
    if track is not None:
        n += track.call(Tracker.mark_stale_killed) or 0
    return n


def _live(tracker: Tracker, run_id: str | None) -> bool:
    if not run_id:
        return False
    try:
        return tracker.client.get_run(run_id).info.lifecycle_stage == "active"
    except Exception:  # noqa: BLE001 - another store, or deleted for good
        return False


def ensure_parent(tracker: Tracker, group: GroupRecord) -> str:
    info = group.info or {}
    found = tracker.find_parent(info["dataset"], group.group)
    if found:
        return found
    return tracker.parent_run(info["dataset"], group.group, info["name"], info["params"], info["tags"])


def ensure_child(tracker: Tracker, group: GroupRecord, rec: SeedRecord, parent: str) -> str:
    data = rec.data
    if _live(tracker, data.get("child_run_id")) and data.get("tracking_uri") == tracker.uri:
        return data["child_run_id"]
    record_id = data.get("record_id") or uuid.uuid4().hex
    for run in tracker.seed_runs(parent, rec.seed):  # a replay interrupted after creating the run
        if run.data.tags.get(TAG_RECORD) == record_id:
            child = run.info.run_id
            break
    else:
        info = group.info or {}
        child = tracker.start_child(parent, rec.seed, info["name"], data.get("params", {}),
                                    {**info.get("tags", {}), TAG_RECORD: record_id})
        rec.update(logged_epochs=0, final_logged=False)
    rec.update(child_run_id=child, parent_run_id=parent, record_id=record_id, tracking_uri=tracker.uri)
    return child


def log_epochs(tracker: Tracker, rec: SeedRecord, child: str) -> None:
    """History rows MLflow does not have yet, in order."""
    logged = int(rec.data.get("logged_epochs", 0))
    history = rec.history
    for i in range(logged, len(history)):
        row = history[i]
        tracker.log_metrics(child, {k: v for k, v in row.items() if k != "epoch"}, step=int(row.get("epoch", i)))
        rec.update(logged_epochs=i + 1)


def log_final(tracker: Tracker, group: GroupRecord, rec: SeedRecord, child: str) -> None:
    data = rec.data
    if data.get("final_logged"):
        return
    # One value per metric: the last epoch's row already holds the final test metrics (the engine
    # evaluates the test split at the last epoch), so only the rest (throughput, converged, ...) is
    # logged here, at that epoch's step.
    last = rec.history[-1] if rec.history else {}
    final = {k: v for k, v in data.get("metrics", {}).items() if k not in last}
    tracker.log_metrics(child, final, step=int(last.get("epoch", 0)))
    log_validation_curve(tracker, rec, child)
    have = {a.path for a in tracker.client.list_artifacts(child)}
    for path in rec.artifacts():
        if path.name not in have:
            tracker.log_file(child, path)
    cache = (group.info or {}).get("cache")
    if cache:
        tracker.log_dataset(child, cache["name"], cache["key"], cache["path"], cache.get("profile", {}))
    rec.update(final_logged=True)


def log_validation_curve(tracker: Tracker, rec: SeedRecord, child: str) -> None:
    """The validation curve the convergence flag judged, as stepped metrics (step = training step of its
    stage): ``val_curve/<column>/<metric>`` for the primary metric and ``val_curve/<column>/mAP``."""
    v = (rec.result or {}).get("validation") or {}
    curves = {v.get("metric"): v.get("curve"), v.get("convergence_metric"): v.get("convergence_curve")}
    for key, points in curves.items():  # one key when the primary metric is mAP
        if key and points:
            tracker.log_curve(child, f"val_curve/{key}", points)


def publish_seed(tracker: Tracker, group: GroupRecord, rec: SeedRecord, close_parent: bool = False) -> str:
    """Make MLflow hold what the record holds; returns the child run id. ``close_parent`` (sync) ends a
    parent left RUNNING by a process that is gone (or by this one)."""
    parent = ensure_parent(tracker, group)
    child = ensure_child(tracker, group, rec, parent)
    log_epochs(tracker, rec, child)
    status = rec.status
    if status == "FINISHED":
        log_final(tracker, group, rec, child)
    if status in ENDED:
        tracker.finish(child, status)
        if status == "FINISHED":
            tracker.update_parent_summary(parent)
        if close_parent and not _parent_owner_alive(tracker, parent):  # (a reaped parent included)
            tracker.finish(parent, status)
    rec.update(sent=status in ENDED)
    return child


def _parent_owner_alive(tracker: Tracker, parent: str) -> bool:
    """Another live process still runs seeds of this parent (it will end the parent itself)."""
    owner = tracker.client.get_run(parent).data.tags.get(TAG_PROCESS, "")
    return bool(owner) and owner != process_tag() and process_alive(owner) is not False


def sync(results_dir: str, tracker: Tracker) -> dict[str, Any]:
    """Replay every unsent record (``avbench sync``); returns counts for the message."""
    reaped = reap(results_dir, Resilient(tracker))
    sent, already = 0, 0
    for group, rec in all_seeds(results_dir):
        if group.info is None or rec.status is None or rec.status == ACTIVE:
            continue
        if rec.data.get("sent") and _live(tracker, rec.data.get("child_run_id")) \
                and rec.data.get("tracking_uri") == tracker.uri:
            already += 1
            continue
        publish_seed(tracker, group, rec, close_parent=True)
        sent += 1
    return {"sent": sent, "already": already, "reaped": reaped, "uri": tracker.uri}
