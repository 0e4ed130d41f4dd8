import json
from pathlib import Path

import pytest

from avbench.cli import main
from avbench.tracking import Tracker, tracking_uri
from helpers import run_args


def test_default_uri_is_sqlite_under_results_dir_and_env_wins(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking_uri(tmp_path / "res") == f"sqlite:///{(tmp_path / 'res').resolve()}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/team.db")
    assert tracking_uri(tmp_path / "res") == f"sqlite:///{tmp_path}/team.db"


def test_parent_is_reused_and_summary_counts_finished_seeds(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    tr = Tracker(tmp_path / "res")
    p1 = tr.parent_run("toy", "g1", "s", {"a": 1}, {})
    assert tr.parent_run("toy", "g1", "s", {"a": 1}, {}) == p1
    assert tr.parent_run("toy", "g2", "s", {"a": 2}, {}) != p1
    for seed, acc in ((0, 0.5), (1, 0.7)):
        c = tr.start_child(p1, seed, "s", {}, {})
        tr.log_metrics(c, {"fusion/acc": acc, "retrieval/a2v_R@1": 0.25})
        tr.finish(c)
    failed = tr.start_child(p1, 2, "s", {}, {})
    tr.log_metrics(failed, {"fusion/acc": 0.0})
    tr.finish(failed, "FAILED")
    summary = tr.update_parent_summary(p1)
    assert summary["fusion/acc"]["n"] == 2 and abs(summary["fusion/acc"]["mean"] - 0.6) < 1e-12
    m = tr.client.get_run(p1).data.metrics
    assert abs(m["fusion/acc_std"] - 0.1414213562) < 1e-9 and m["retrieval/a2v_R_at1_mean"] == 0.25
    assert tr.finished_seed(p1, 1) and tr.finished_seed(p1, 2) is None


# --- MLflow as its users expect (issue 14 item 3) ----------------------------------------------------


def _runs(res):
    tr = Tracker(res)
    exp = tr.experiment_id("synth", create=False)
    return tr, tr.client.search_runs([exp]) if exp else []


def test_a_run_follows_mlflow_conventions(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    res = tmp_path / "res"
    assert main(run_args("uavm", res)) == 0
    tr, runs = _runs(res)
    parent = next(r for r in runs if r.data.tags.get("avbench.kind") == "parent")
    child = next(r for r in runs if r.data.tags.get("avbench.kind") == "seed")
    assert parent.info.status == child.info.status == "FINISHED"
    assert parent.info.end_time >= child.info.end_time  # the parent ran while its seed ran
    assert parent.data.metrics and all(k.startswith(("audio/", "video/", "fusion/", "retrieval/", "converged_", "diverged_"))
                                       for k in parent.data.metrics)  # evaluation metrics only: no lr, stage, train/
    assert "converged_mean" in parent.data.metrics  # the share of seeds whose validation curve had flattened
    for run in (parent, child):
        tags = run.data.tags
        assert tags["mlflow.source.name"].startswith("avbench") and tags["mlflow.user"]
        assert "--strategy uavm" in tags["mlflow.note.content"]
        assert len(tags.get("mlflow.source.git.commit", "0" * 40)) == 40
        assert tags["avbench.host.name"] and tags["avbench.host.cpu"]  # where it ran (avbench.provenance)
        ds = run.inputs.dataset_inputs[0].dataset
        assert ds.name == "synth" and ds.digest == parent.data.params["cache_key"]
        contexts = {i.tags[0].value: i.dataset.name for i in run.inputs.dataset_inputs}
        assert contexts == {"train": "synth", "validation": "synth (validation)", "test": "synth (test)"}
    result = json.loads(Path(tr.client.download_artifacts(child.info.run_id, "result.json")).read_text())
    for key, points in (("fusion/acc", result["validation"]["curve"]),
                        ("fusion/mAP", result["validation"]["convergence_curve"])):
        history = tr.client.get_metric_history(child.info.run_id, f"val_curve/{key}")
        assert [(m.step, m.value) for m in history] == [tuple(p) for p in points] and len(points) >= 2
    exps = {e.name: e for e in tr.client.search_experiments()}
    assert list(exps) == ["avbench-synth"]  # no stray "Default"
    assert exps["avbench-synth"].tags["mlflow.experimentKind"] == "custom_model_development"


@pytest.mark.parametrize("error, status, rc", [(RuntimeError("boom"), "FAILED", None), (KeyboardInterrupt(), "KILLED", 130)])
def test_parent_ends_with_its_seeds(tmp_path, monkeypatch, error, status, rc):
    from avbench.train.engine import Engine

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)

    def fail(self, resume=False):
        raise error

    monkeypatch.setattr(Engine, "fit", fail)
    res = tmp_path / "res"
    if rc is None:
        with pytest.raises(RuntimeError):
            main(run_args("uavm", res))
    else:
        assert main(run_args("uavm", res)) == rc
    _, runs = _runs(res)
    assert sorted(r.info.status for r in runs) == [status, status]


def test_sweep_parents_are_named_after_the_sweep():
    from avbench.runner import sweep_run_name

    tags = {"avbench.created_by": "sweep:depth", "avbench.sweep.depth": '{"point": {"n_shared": "2"}, "x": "n_shared"}'}
    assert sweep_run_name(tags, "uavm") == "depth: uavm n_shared=2"
    assert sweep_run_name({}, "uavm") is None


def test_the_test_split_is_read_once_unless_asked_and_then_the_run_says_so(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    once, every = tmp_path / "once", tmp_path / "every"
    assert main(run_args("late_fusion", once, epochs=2, model_sets=())) == 0
    assert main(run_args("late_fusion", every, "--set", "train.eval_every_epoch=true", epochs=2, model_sets=())) == 0
    for res, n, tagged in ((once, 1, False), (every, 2, True)):
        tr, runs = _runs(res)
        child = next(r for r in runs if r.data.tags.get("avbench.kind") == "seed")
        parent = next(r for r in runs if r.data.tags.get("avbench.kind") == "parent")
        history = tr.client.get_metric_history(child.info.run_id, "fusion/acc")
        assert len({m.step for m in history}) == n  # one test evaluation, or one per epoch
        assert (parent.data.tags.get("avbench.test_every_epoch") == "true") is tagged
