from avbench.tracking import Tracker, tracking_uri


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
