"""End to end through the CLI on tiny synth caches, with a temporary MLflow sqlite DB."""

import json
import sqlite3

import pytest

from avbench.cli import main
from helpers import run_args


def _count_runs(results):
    db = results / "mlflow.db"
    if not db.exists():
        return 0
    with sqlite3.connect(db) as c:
        return c.execute("select count(*) from runs").fetchone()[0]


@pytest.mark.slow
def test_run_two_seeds_logs_to_mlflow_and_table_reads_it_back(tmp_path, capsys):
    res = tmp_path / "results"
    out_json = tmp_path / "summary.json"
    assert main(run_args("uavm", res, "--output-json", str(out_json), seeds="0,1", epochs=2)) == 0
    printed = capsys.readouterr().out
    assert "| Audio" in printed and "Fusion" in printed and "acc (%)" in printed
    summary = json.loads(out_json.read_text())
    assert [s["seed"] for s in summary["seeds"]] == [0, 1]
    acc = summary["summary"]["fusion/acc"]
    assert acc["n"] == 2 and 0.0 <= acc["mean"] <= 1.0
    for s in summary["seeds"]:
        assert s["metrics"]["train_clips_per_s"] > 0 and s["metrics"]["eval_clips_per_s"] > 0
    assert summary["recipe"]["epochs"] == 2 and summary["config"]["embed_dim"] == 16
    assert _count_runs(res) == 3  # one parent, two seeds

    from avbench.tracking import Tracker

    tr = Tracker(res)
    parent = tr.client.get_run(summary["parent_run_id"])
    assert parent.data.metrics["fusion/acc_n"] == 2
    assert parent.data.metrics["fusion/acc_mean"] == pytest.approx(acc["mean"])
    child = tr.children(summary["parent_run_id"])[0]
    assert {"result.json", "predictions.npz"} <= {a.path for a in tr.client.list_artifacts(child.info.run_id)}
    hist = tr.client.get_metric_history(child.info.run_id, "fusion/acc")
    assert [m.step for m in hist] == [1]  # the test split read once, its value logged once (last epoch)
    from avbench.hardware import resolve_precision

    assert child.data.params["model.embed_dim"] == "16"
    assert child.data.params["precision"] == resolve_precision("auto", "cpu")[0]  # what this machine computes fast

    assert main(["table", "--dataset", "synth", "--results-dir", str(res)]) == 0
    table = capsys.readouterr().out
    row = next(line for line in table.splitlines() if line.startswith("| uavm"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[6].rstrip("°*†‡") == f"{100 * acc['mean']:.2f} ± {100 * acc['std']:.2f}" and cells[7] == "2"
    assert main(["table", "--dataset", "synth", "--results-dir", str(res), "--format", "csv"]) == 0
    assert capsys.readouterr().out.startswith("strategy,config,protocol,metric,")
    assert main(["table", "--dataset", "synth", "--results-dir", str(res), "--format", "latex"]) == 0
    assert r"\toprule" in capsys.readouterr().out


@pytest.mark.slow
def test_same_seed_gives_identical_metrics(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    assert main(run_args("uavm", tmp_path / "r1", "--output-json", str(a))) == 0
    assert main(run_args("uavm", tmp_path / "r2", "--output-json", str(b))) == 0
    ma = json.loads(a.read_text())["seeds"][0]["metrics"]
    mb = json.loads(b.read_text())["seeds"][0]["metrics"]
    for k in ma:
        if "clips_per_s" not in k and k != "wall_seconds":
            assert ma[k] == mb[k], k


@pytest.mark.slow
def test_resume_continues_from_the_epoch_checkpoint(tmp_path):
    res = tmp_path / "res"
    full = tmp_path / "full.json"
    assert main(run_args("uavm", tmp_path / "ref", "--output-json", str(full), epochs=3)) == 0
    # Train 1 epoch, then resume the 3-epoch run from that checkpoint: same result as uninterrupted.
    import avbench.runner as runner
    from avbench import config as cfgmod

    args = run_args("uavm", res, epochs=3)
    sets = cfgmod.parse_pairs([args[i + 1] for i, a in enumerate(args) if a == "--set"])
    from avbench.train.engine import Engine

    req = runner.RunRequest(strategy="uavm", dataset="synth", epochs=3, overrides=sets, results_dir=str(res),
                            progress=False, save_model=False)
    orig_fit = Engine.fit

    def fit_one_epoch_then_crash(self, resume=False):
        self.on_epoch = lambda e, row: (_ for _ in ()).throw(KeyboardInterrupt()) if e == 1 else None
        return orig_fit(self, resume)

    Engine.fit = fit_one_epoch_then_crash
    try:
        with pytest.raises(KeyboardInterrupt):
            runner.run(req)
    finally:
        Engine.fit = orig_fit
    resumed = tmp_path / "resumed.json"
    assert main(args + ["--resume", "--output-json", str(resumed)]) == 0
    got = json.loads(resumed.read_text())["seeds"][0]
    want = json.loads(full.read_text())["seeds"][0]["metrics"]
    assert got["metrics"]["fusion/acc"] == want["fusion/acc"]
    assert got["metrics"]["audio/mAP"] == pytest.approx(want["audio/mAP"], abs=1e-9)
    # The validation curve comes back whole: points before the interruption were saved with the checkpoint.
    curves = {}
    for name in ("ref", "res"):
        paths = sorted((tmp_path / name).rglob("result.json"))  # the local record and its MLflow copy
        assert paths, name
        curves[name] = json.loads(paths[0].read_text())["validation"]
    assert len(curves["ref"]["curve"]) > 3 and curves["res"]["curve"] == curves["ref"]["curve"]
    assert curves["res"]["converged"] == curves["ref"]["converged"]


@pytest.mark.parametrize("extra, message", [
    (["--dataset", "nosuch"], "unknown dataset 'nosuch'"),
    (["--dataset", "synthh"], "did you mean 'synth'"),
    (["--cache", "/definitely/not/here"], "cache path does not exist"),
    (["--dataset", "synth", "--set", "embed_dimm=8"], "did you mean 'embed_dim'"),
    (["--dataset", "synth", "--set", "embed_dim=big"], "expected int, got 'big'"),
    (["--dataset", "synth", "--set", "train.amp=fp8"], "'fp8' is not one of"),
    (["--dataset", "synth", "--set", "model.audio_dim=1024"], "audio features are 16-d but audio_dim=1024"),
    (["--dataset", "synth", "--set", "audio_dim=1024"], "ambiguous (model and data both define it)"),
    (["--dataset", "synth", "--seeds", "0,one"], "--seeds expects comma-separated integers"),
    (["--dataset", "synth", "--strategy", "uavn"], "unknown strategy 'uavn'; did you mean 'uavm'"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, extra, message):
    res = tmp_path / "res"
    base = ["run", "--strategy", "uavm", "--results-dir", str(res), "--no-progress",
            "--set", "data.train_clips=32", "--set", "data.test_clips=16", "--set", "data.audio_dim=16",
            "--set", "data.steps=4", "--set", "data.classes=3"]
    if "--strategy" in extra:
        base[2] = extra[extra.index("--strategy") + 1]
        extra = [e for i, e in enumerate(extra) if e != "--strategy" and (i == 0 or extra[i - 1] != "--strategy")]
    if "--cache" in extra:  # data.* knobs apply to --dataset only
        base = base[:6]
    assert main(base + extra) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and "Traceback" not in err
    assert _count_runs(res) == 0


def test_list_shows_strategies_datasets_and_origins(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("uavm", "independent", "cross_attention", "synth"):
        assert name in out
    assert "avbench_strategies.uavm:UAVM" in out and "avbench 0.1.0" in out
