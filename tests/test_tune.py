"""avbench tune: the same budget for every strategy, on validation only, and the stored best."""

import json
import os
import sqlite3
from pathlib import Path

import pytest

from avbench import runner, tune
from avbench.cache import reader
from avbench.cli import main
from avbench.errors import UserError
from helpers import TINY_SETS, InProcessExecutor

SETS = dict(s.split("=", 1) for s in TINY_SETS)


def _req(tmp_path, **kw):
    base = dict(strategies=["late_fusion", "sum"], dataset="synth", budget=2, max_steps=6, overrides=SETS,
                results_dir=str(tmp_path / "r"), progress=False)
    return tune.TuneRequest(**{**base, **kw})


@pytest.mark.parametrize("path", ["executor", "prune"])
def test_tune_never_opens_the_test_split_and_gives_every_strategy_the_same_budget(tmp_path, monkeypatch, path):
    runner.resolve(runner.RunRequest(strategy="sum", dataset="synth", overrides=SETS, progress=False))  # the cache
    opened = []
    real = reader.CacheSplit.__init__

    def spy(self, root, info):
        opened.append(root.name)
        assert root.name != "test", "tuning opened the test split"
        real(self, root, info)

    monkeypatch.setattr(reader.CacheSplit, "__init__", spy)
    # Both ways a trial runs: as an executor job (avbench.tune.trial_job, here in this process so the spy
    # sees it) and in-process with --prune.
    from avbench.executor import options

    monkeypatch.setattr(options, "make", lambda req: InProcessExecutor())
    out = tune.tune(_req(tmp_path, prune=path == "prune"))
    assert "train" in opened and "test" not in opened
    assert out["budget"]["trials"] == 2 and out["budget"]["max_steps_per_trial"] == 6
    for name, res in out["strategies"].items():
        assert len(res["trials"]) == 2 and res["budget"]["finished"] == 2
        assert all(2 <= t["steps"] <= 6 for t in res["trials"])  # the default space: 25-100% of the budget
        assert res["budget"]["steps_trained"] == sum(t["steps"] for t in res["trials"]) <= 2 * 6
        assert res["metric"] == "fusion/acc" and 0 <= res["value"] <= 1
        assert res["validation"]["source"] == "holdout"
    # The best configuration is stored; run --tuned finds it and --set still wins.
    res = out["strategies"]["sum"]
    stored = json.loads(open(res["files"][0]).read())
    assert stored["params"] == res["params"] and stored["budget"]["trials"] == 2
    req = runner.RunRequest(strategy="sum", dataset="synth", overrides={**SETS, "train.lr": "0.5"},
                            results_dir=str(tmp_path / "r"), progress=False)
    tuned = tune.apply_tuned(req, "auto")
    assert tuned.overrides["train.max_steps"] == str(res["params"]["train.max_steps"])
    assert tuned.overrides["train.lr"] == "0.5" and tuned.overrides["train.schedule"] == "cosine"


def test_run_length_budget_trains_every_trial_the_whole_budget(tmp_path, monkeypatch):
    """--run-length budget: train.max_steps leaves the space, every trial and the choice train the budget
    (the searched default draws 25-100% of it, above); the tuned file says which it was."""
    from avbench.executor import options

    monkeypatch.setattr(options, "make", lambda req: InProcessExecutor())
    out = tune.tune(_req(tmp_path, strategies=["sum"], budget=3, run_length="budget"))
    res = out["strategies"]["sum"]
    assert out["budget"]["run_length"] == "budget" and res["budget"]["run_length"] == "budget"
    assert "train.max_steps" not in res["space"] and set(res["space"]) == {"train.lr", "train.weight_decay"}
    assert [t["steps"] for t in res["trials"]] == [6, 6, 6] and res["budget"]["steps_trained"] == 18
    assert res["params"]["train.max_steps"] == 6 and res["overrides"]["train.max_steps"] == "6"
    assert res["capped"] == {}  # the pinned run length is not "capped": nothing was searched
    with pytest.raises(UserError, match="--run-length whole: one of searched, budget"):
        tune.tune(_req(tmp_path, run_length="whole"))


def test_sobol_sampler_tries_each_quarter_of_the_range_and_says_so(tmp_path, monkeypatch):
    """--sampler sobol, budget 4: one learning rate in each quarter of the declared (log) range; the
    tuned file, the summary and the tuning parent say which sampler proposed the trials."""
    import math

    from avbench.executor import options
    from avbench.tracking import Tracker

    monkeypatch.setattr(options, "make", lambda req: InProcessExecutor())
    out = tune.tune(_req(tmp_path, strategies=["sum"], budget=4, sampler="sobol"))
    res = out["strategies"]["sum"]
    low, high = res["space"]["train.lr"]["low"], res["space"]["train.lr"]["high"]
    quarters = sorted(int(4 * math.log(t["params"]["train.lr"] / low) / math.log(high / low)) for t in res["trials"])
    assert quarters == [0, 1, 2, 3]
    assert res["budget"]["sampler"] == "sobol" and out["budget"]["sampler"].startswith("scrambled Sobol' seed 0")
    parent = Tracker(str(tmp_path / "r")).client.get_run(res["tuning_parent_run"])
    assert parent.data.params["sampler"] == "sobol"
    with pytest.raises(UserError, match="--sampler grid: one of tpe, sobol"):
        tune.tune(_req(tmp_path, sampler="grid"))


def test_cv_scores_every_trial_on_every_fold_and_records_the_folds(tmp_path, monkeypatch):
    import numpy as np

    from avbench.executor import options
    from avbench.tune import study

    monkeypatch.setattr(options, "make", lambda req: InProcessExecutor())
    seen = []
    real = study._fit_one

    def spy(req, r, recipe, seed, callback):
        seen.append((r.cache.validation.rows.copy(), r.cache.fit_rows().copy()))
        return real(req, r, recipe, seed, callback)

    monkeypatch.setattr(study, "_fit_one", spy)
    res = tune.tune(_req(tmp_path, strategies=["sum"], budget=1, cv=3, seeds=[0, 1]))["strategies"]["sum"]
    trial = res["trials"][0]
    assert len(seen) == 6 and len(trial["values"]) == 6 and len(trial["scores"]["mAP"]) == 6  # 3 folds x 2 seeds
    assert trial["value"] == pytest.approx(np.mean(trial["values"]))
    folds = [v for v, _ in seen[::2]]
    everything = np.sort(np.concatenate(folds))
    assert len(np.unique(everything)) == len(everything) == trial["val_clips"]  # each clip validated once
    for val, fit in seen:  # training never sees its fold, and trains on all the rest
        assert not np.intersect1d(val, fit).size and len(val) + len(fit) == len(everything)
    v = res["validation"]
    assert v["source"] == "cv" and v["k"] == 3 and [f["fold"] for f in v["folds"]] == [0, 1, 2]
    assert [f["size"] for f in v["folds"]] == [len(f) for f in folds]
    assert len({f["ids_sha256"] for f in v["folds"]}) == 3
    # A hold-out tuning of the same request is a different tuning, not a resumed one.
    res0 = tune.tune(_req(tmp_path, strategies=["sum"], budget=1, seeds=[0, 1]))["strategies"]["sum"]
    assert res0["validation"]["source"] == "holdout" and res0["tuning_parent_run"] != res["tuning_parent_run"]
    with pytest.raises(UserError, match="at least 2 folds"):
        tune.tune(_req(tmp_path, cv=1))


def test_a_per_strategy_space_file_serves_any_subset_of_its_strategies(tmp_path):
    from avbench.tune.space import load_space_file

    space = tmp_path / "space.yaml"
    space.write_text("sum:\n  train.lr: {type: float, low: 1.0e-3, high: 1.0e-2}\n"
                     "uavm:\n  s_dim: {type: int, low: 16, high: 64}\n")
    assert load_space_file(space, ["sum", "late_fusion"]) == {"sum": {"train.lr": {"type": "float", "low": 1e-3,
                                                                                     "high": 1e-2}}}
    with pytest.raises(UserError, match="none of the strategies tuned"):
        load_space_file(space, ["late_fusion"])
    space.write_text("train.lr: {type: float, low: 1.0e-3, high: 1.0e-2}\n")  # one space for every strategy
    assert set(load_space_file(space, ["sum", "late_fusion"])) == {"sum", "late_fusion"}


def test_a_space_beyond_the_step_budget_is_refused(tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text("sum:\n  train.max_steps: {type: int, low: 2, high: 60}\n"
                     "late_fusion:\n  train.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}\n")
    with pytest.raises(UserError, match="exceeds the step budget of 6 per trial"):
        tune.tune(_req(tmp_path, space_file=str(space)))
    space.write_text("train.lr: {type: float, low: 1.0e-3, high: 1.0e-2}\nmodel.not_a_field: {type: int, low: 1, high: 2}\n")
    with pytest.raises(UserError, match="not_a_field"):
        tune.tune(_req(tmp_path, space_file=str(space)))


@pytest.mark.slow  # tune then run through the CLI: 25 s on the shared 2-core machine
def test_cli_tune_and_run_tuned(tmp_path, capsys):
    sets = [a for s in TINY_SETS for a in ("--set", s)]
    rd = str(tmp_path / "r")
    assert main(["tune", "--strategy", "late_fusion", "--dataset", "synth", "--budget", "1", "--max-steps", "4",
                 "--results-dir", rd, "--no-progress", *sets]) == 0
    assert "1 trials each, at most 4 steps per trial" in capsys.readouterr().out
    out = tmp_path / "o.json"
    assert main(["run", "--strategy", "late_fusion", "--dataset", "synth", "--tuned", "--results-dir", rd,
                 "--no-progress", "--no-save-model", "--output-json", str(out), *sets]) == 0
    summary = json.loads(out.read_text())
    (stored,) = (tmp_path / "r" / "tuned").glob("synth-*/late_fusion.json")
    best = json.loads(stored.read_text())["params"]
    assert summary["recipe"]["schedule"] == "cosine" and 1 <= best["train.max_steps"] <= 4
    assert summary["recipe"]["max_steps"] == best["train.max_steps"] and summary["recipe"]["lr"] == best["train.lr"]
    assert main(["tune", "--strategy", "late_fusion", "--dataset", "synth", "--budget", "0"]) == 2


# --- trials on the executor ---------------------------------------------------------------------------
BOOM = "sweep_plugins:BoomPool"  # tests/sweep_plugins.py: boom=1 raises inside training


@pytest.fixture
def two_cores(monkeypatch):
    """Two one-thread jobs at once, and the test strategy importable in spawned workers."""
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs 2 usable cores")
    d = str(Path(__file__).parent)
    monkeypatch.syspath_prepend(d)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (d, os.environ.get("PYTHONPATH")) if p))
    monkeypatch.setenv("OMP_NUM_THREADS", "2")


def _trial_runs(results):
    """{status: count} of the trial runs in the store."""
    with sqlite3.connect(results / "mlflow.db") as c:
        rows = c.execute("select r.status from runs r join tags k on k.run_uuid = r.run_uuid "
                         "and k.key = 'avbench.kind' and k.value = 'trial'").fetchall()
    return {st: sum(1 for (x,) in rows if x == st) for st in {x for (x,) in rows}}


@pytest.mark.slow
def test_same_trials_with_one_or_two_jobs_and_skip_tuned_resumes(tmp_path, two_cores):
    """Each study stays sequential, so --jobs 2 (two strategies at once) tunes exactly as --jobs 1."""
    space = tmp_path / "space.yaml"  # rates that learn something in 40 steps, so the scores differ
    space.write_text("train.lr: {type: float, low: 1.0e-2, high: 3.0e-1, log: true}\n")
    kw = dict(budget=3, max_steps=40, space_file=str(space), threads_per_job=1)
    seen = {}
    for jobs in (1, 2):
        out = tune.tune(_req(tmp_path / f"j{jobs}", jobs=jobs, **kw))
        assert not out["failed"]
        seen[jobs] = {s: [(t["number"], t["params"], t["value"]) for t in r["trials"]]
                      for s, r in out["strategies"].items()}
    assert sorted(seen[1]) == ["late_fusion", "sum"] and all(len(v) == 3 for v in seen[1].values())
    assert len({t[2] for v in seen[1].values() for t in v}) > 1  # the trials really differ
    assert seen[2] == seen[1]
    # --skip-tuned: both strategies have a stored configuration, nothing trains again.
    before = _trial_runs(tmp_path / "j2" / "r")
    again = tune.tune(_req(tmp_path / "j2", jobs=2, skip_tuned=True, **kw))
    assert all(r["skipped"] for r in again["strategies"].values())
    assert [(t["number"], t["params"], t["value"]) for t in again["strategies"]["sum"]["trials"]] == seen[2]["sum"]
    assert _trial_runs(tmp_path / "j2" / "r") == before == {"FINISHED": 6}


@pytest.mark.slow
def test_a_failing_trial_is_reported_and_the_tuning_goes_on(tmp_path, two_cores, capsys):
    space = tmp_path / "space.yaml"
    space.write_text(f"'{BOOM}':\n  boom: {{type: categorical, choices: [0, 1]}}\n"
                     "late_fusion:\n  train.lr: {type: float, low: 1.0e-3, high: 1.0e-2, log: true}\n")
    rd = tmp_path / "r"
    sets = [a for s in TINY_SETS for a in ("--set", s)]
    out = tmp_path / "out.json"
    assert main(["tune", "--strategy", f"{BOOM},late_fusion", "--dataset", "synth", "--budget", "4",
                 "--max-steps", "4", "--space", str(space), "--results-dir", str(rd), "--no-progress",
                 "--jobs", "2", "--threads-per-job", "1", "--output-json", str(out), *sets]) == 0
    printed = capsys.readouterr().out
    res = json.loads(out.read_text())["strategies"]
    boom = res[BOOM]
    failed = boom["failed_trials"]
    ok = boom["trials"]
    assert failed and ok and len(failed) + len(ok) == 4  # this sampler seed draws both boom=0 and boom=1
    assert all(t["params"]["boom"] == 0 for t in ok) and boom["params"]["boom"] == 0
    assert all("RuntimeError: boom at step 0" in f for f in failed) and "failed trial" in printed
    assert len(res["late_fusion"]["trials"]) == 4
    assert _trial_runs(rd) == {"FINISHED": 4 + len(ok), "FAILED": len(failed)}


def test_prune_is_refused_with_jobs_or_ray(tmp_path, capsys):
    base = ["tune", "--strategy", "sum", "--dataset", "synth", "--budget", "1", "--prune",
            "--results-dir", str(tmp_path / "r")]
    for extra in (["--jobs", "2"], ["--executor", "ray"]):
        assert main(base + extra) == 2
        err = capsys.readouterr().err
        assert "--prune runs trials in this process" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_ctrl_c_cancels_running_trials_and_closes_their_runs(tmp_path, two_cores):
    """Interrupt a --jobs 2 tuning once a trial has finished: exit 130, no trial run left RUNNING."""
    import signal
    import subprocess
    import sys
    import time

    from helpers import default_sigint

    rd = tmp_path / "r"
    sets = [a for s in TINY_SETS + ["embed_dim=16"] for a in ("--set", s)]
    args = ["tune", "--strategy", "uavm,independent", "--dataset", "synth", "--budget", "3", "--max-steps", "150",
            "--results-dir", str(rd), "--no-progress", "--jobs", "2", "--threads-per-job", "1", *sets]
    proc = subprocess.Popen([sys.executable, "-m", "avbench", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, preexec_fn=default_sigint)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if _trial_runs(rd).get("FINISHED"):
                break
        except sqlite3.OperationalError:  # the store is not there yet or being written
            pass
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    log = proc.communicate(timeout=120)[0]
    runs = _trial_runs(rd)
    assert proc.returncode == 130, log
    assert runs.get("FINISHED") and not runs.get("RUNNING"), runs
    assert runs["FINISHED"] < 6  # it stopped: not every trial of the budget ran
    assert not list(rd.glob("tuned/*/*.json"))  # an interrupted tuning stores no "best" configuration

    # The rerun reopens each Optuna study from the results' journal (load_if_exists), keeps the finished
    # trials, trains again the one each strategy had in flight, and trains only the rest; the outcome
    # is the uninterrupted tuning's, trial for trial.
    first = runs["FINISHED"]
    out = tmp_path / "resumed.json"
    assert main([*args, "--output-json", str(out)]) == 0
    assert _trial_runs(rd)["FINISHED"] == 6  # none trained twice, none lost
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage = JournalStorage(JournalFileBackend(str(rd / "optuna.journal")))
    for summary in optuna.get_all_study_summaries(storage):  # the trial in flight kept its number
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        assert [(t.number, t.state.name) for t in study.trials] == [(i, "COMPLETE") for i in range(3)]
    whole = tmp_path / "whole.json"
    assert main([*args[:args.index("--results-dir") + 1], str(tmp_path / "w"), *args[args.index("--results-dir") + 2:],
                 "--output-json", str(whole)]) == 0
    trials = {p: {s: [(t["number"], t["params"], t["value"]) for t in r["trials"]]
                  for s, r in json.loads(p.read_text())["strategies"].items()} for p in (out, whole)}
    assert trials[out] == trials[whole] and all(len(v) == 3 for v in trials[whole].values())
    assert first >= 1
