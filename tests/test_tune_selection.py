"""How avbench tune chooses and records: the choice on signal, ties, seed streams, replicates, the study.

The selection tests work on synthetic trial records (no training); the recording tests run tiny
tunings (a few 4-step trainings) in this process."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import optuna
import pytest

from avbench import tune
from avbench.cli import main
from avbench.tracking import TAG_KIND, TAG_SEED, Tracker
from avbench.tune import select as sel
from helpers import TINY_SETS, InProcessExecutor

SETS = dict(s.split("=", 1) for s in TINY_SETS)


# --- choosing on signal (synthetic trial records, no training) ------------------------------------------
def _draw(rng, margin, n, classes=4):
    """Logits of a configuration whose true class leads by ``margin`` (unit noise), on n clips."""
    y = rng.integers(0, classes, n)
    logits = rng.normal(0.0, 1.0, (n, classes))
    logits[np.arange(n), y] += margin
    return logits, np.eye(classes, dtype=np.float32)[y]


def _trials(rng, margins, n_val):
    """Trial records as a tuning stores them: one seed's validation acc/mAP/loss on ``n_val`` clips."""
    out = []
    for i, m in enumerate(margins):
        s = sel.validation_scores(*_draw(rng, m, n_val), multilabel=False)
        out.append({"number": i, "params": {"margin": m}, "scores": {k: [v] for k, v in s.items()},
                    "val_clips": n_val})
    return out


def test_accuracy_on_a_small_split_picks_the_wrong_configuration_where_the_loss_picks_the_right_one():
    """Eight configurations, better the larger the margin (checked on 4000 test clips); 24 validation
    clips. Accuracy moves in steps of one clip and ties; the loss uses every clip's confidence."""
    margins = [1.0, 1.4, 1.6, 1.8, 2.0, 2.2, 2.4, 3.0]
    test = [sel.validation_scores(*_draw(np.random.default_rng(100 + i), m, 4000), False)["acc"]
            for i, m in enumerate(margins)]
    assert test == sorted(test) and test[-1] - test[-2] > 0.05  # the last configuration is the right one
    rng = np.random.default_rng(0)
    regret = {"val_acc": [], "val_loss": []}
    contrast = None
    for _ in range(60):
        trials = _trials(rng, margins, n_val=24)
        picks = {k: sel.choose(trials, k)["best"] for k in regret}
        for k, best in picks.items():
            regret[k].append(test[-1] - test[best])
        if contrast is None and picks["val_acc"] != 7 and picks["val_loss"] == 7:
            contrast = trials
    assert contrast is not None, "no draw where accuracy picks wrong and the loss right"
    assert sel.choose(contrast, "val_acc")["best"] != 7 and sel.choose(contrast, "val_loss")["best"] == 7
    assert np.mean(regret["val_loss"]) < 0.5 * np.mean(regret["val_acc"])


def test_top_trials_that_cannot_be_told_apart_say_so():
    def rec(n, loss):
        return {"number": n, "params": {}, "scores": {"acc": [0.5] * len(loss), "mAP": [0.5] * len(loss),
                                                       "loss": loss}, "val_clips": 40}

    # An exact tie (one seed each): settled by trial order, and said.
    c = sel.choose([rec(0, [1.2]), rec(1, [1.0]), rec(2, [1.0])], "val_loss")
    assert c["best"] == 1 and c["tied"] == [2] and "exact tie with trial 2" in c["note"]
    # Seeds overlap: within two standard errors of the difference.
    c = sel.choose([rec(0, [1.00, 1.10]), rec(1, [1.02, 1.12]), rec(2, [2.0, 2.1])], "val_loss")
    assert c["best"] == 0 and c["indistinct"] == [1] and c["tied"] == [] and "within 2 standard errors" in c["note"]
    assert c["noise"] == pytest.approx(0.05)  # std 0.0707 over sqrt(2) seeds
    # A clear winner: no note.
    c = sel.choose([rec(0, [1.00, 1.01]), rec(1, [1.5, 1.51])], "val_loss")
    assert c["best"] == 0 and c["note"] == "" and c["ranking"] == [0, 1]
    # Accuracy with one seed: its binomial noise on 40 clips (sqrt(.5*.5/40) = 0.079) covers one clip.
    a = [{"number": 0, "params": {}, "scores": {"acc": [0.525]}, "val_clips": 40},
         {"number": 1, "params": {}, "scores": {"acc": [0.500]}, "val_clips": 40}]
    assert sel.choose(a, "val_acc")["indistinct"] == [1]


def test_capped_values_at_the_top_of_their_range():
    d = {"train.max_steps": optuna.distributions.IntDistribution(135, 540, log=True),
         "train.lr": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True),
         "fixed": optuna.distributions.IntDistribution(8, 8)}
    assert sel.capped({"train.max_steps": 540, "train.lr": 1e-3, "fixed": 8}, d) == {"train.max_steps": 540}
    assert sel.capped({"train.max_steps": 300, "train.lr": 0.0099}, d) == {"train.lr": 1e-2}


def test_each_strategy_has_its_own_stable_sampler_seed_stream():
    a, b = sel.strategy_seed(0, "sum"), sel.strategy_seed(0, "late_fusion")
    assert a != b and a != sel.strategy_seed(1, "sum") and 0 <= a < 2 ** 32
    # The same in another interpreter with another hash salt (Python's own hash() would differ).
    code = "from avbench.tune.select import strategy_seed; print(strategy_seed(0, 'sum'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONHASHSEED": "123"}).stdout
    assert int(out) == a
    # So two strategies' first random trials differ, and the same strategy's are drawn again.
    dists = tune.distributions({"train.lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True}}, 10, "t")
    req = tune.TuneRequest(strategies=["sum", "late_fusion"])

    def first(strategy):
        from avbench.tune.study import ask

        study, drawn = optuna.create_study(direction="maximize"), []
        for _ in range(3):
            trial, params = ask(study, req, strategy, dists)
            drawn.append(params["train.lr"])
            study.tell(trial, 0.0)
        return drawn

    assert first("sum") == first("sum") and first("sum") != first("late_fusion")


def test_asking_and_suggesting_hold_ctrl_c_until_the_journal_write_is_done(monkeypatch):
    """Every suggestion writes the journal; a Ctrl-C inside one left its lock file behind (CI, exit 1 not 130)."""
    import signal

    from avbench.tune.study import ask

    masks = []
    real = optuna.trial.Trial.suggest_float

    def spy(self, *a, **k):
        masks.append(signal.SIGINT in signal.pthread_sigmask(signal.SIG_BLOCK, []))
        return real(self, *a, **k)

    monkeypatch.setattr(optuna.trial.Trial, "suggest_float", spy)
    dists = tune.distributions({"train.lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True}}, 10, "t")
    trial, params = ask(optuna.create_study(direction="maximize"), tune.TuneRequest(strategies=["sum"]), "sum", dists)
    assert masks == [True] and 1e-4 <= params["train.lr"] <= 1e-1
    assert signal.SIGINT not in signal.pthread_sigmask(signal.SIG_BLOCK, [])  # and released afterwards


# --- recording (tiny tunings) -----------------------------------------------------------------------
@pytest.fixture
def in_process(monkeypatch):
    from avbench.executor import options

    monkeypatch.setattr(options, "make", lambda req: InProcessExecutor())


def _runs(results, kind):
    t = Tracker(results)
    exps = [e.experiment_id for e in t.client.search_experiments()]
    return t.client.search_runs(exps, filter_string=f"tags.`{TAG_KIND}` = '{kind}'", max_results=1000)


def test_trials_record_their_seeds_scores_params_and_inputs_and_the_study_reopens(tmp_path, in_process):
    rd = tmp_path / "r"
    req = tune.TuneRequest(strategies=["late_fusion"], dataset="synth", budget=2, max_steps=4, overrides=SETS,
                           results_dir=str(rd), progress=False, seeds=[0, 1], confirm=1, confirm_seeds=1,
                           select="val_loss")
    res = tune.tune(req)["strategies"]["late_fusion"]
    # Every trial: per-seed validation acc, mAP and loss; its score is the mean negative loss.
    for t in res["trials"]:
        assert t["seeds"] == [0, 1] and set(t["scores"]) == {"acc", "mAP", "loss"}
        assert all(len(v) == 2 for v in t["scores"].values()) and all(x > 0 for x in t["scores"]["loss"])
        assert sel.score(t, "val_loss") == pytest.approx(-np.mean(t["scores"]["loss"]))
    # The confirmation stage retrained the top trial on a fresh seed (2) and chose on that.
    (conf,) = res["confirmation"]
    assert conf["seeds"] == [2] and res["selection"]["stage"] == "confirmation"
    assert res["best_trial"] == conf["number"] == sel.top(res["trials"], "val_loss", 1)[0]["number"]
    assert res["select"] == "val_loss" and res["budget"]["confirm"] == {"trials": 1, "seeds": [2]}
    # MLflow: trials tagged with the seeds they trained, full params, the cache as dataset input.
    trials = _runs(rd, "trial")
    assert sorted(r.data.tags[TAG_SEED] for r in trials) == ["0,1", "0,1"]
    assert sorted(r.info.run_name for r in trials) == ["late_fusion-trial0-seed0,1", "late_fusion-trial1-seed0,1"]
    for r in trials:
        assert {"strategy", "cache_key", "train.lr", "train.max_steps", "train.batch_size", "data.train_clips"} <= set(r.data.params)
        assert {"val/fusion/loss", "val/fusion/mAP", "val/fusion/acc", "score/val_loss"} <= set(r.data.metrics)
        assert r.inputs.dataset_inputs and r.inputs.dataset_inputs[0].dataset.name == "synth"
    (c,) = _runs(rd, "confirm")
    assert c.data.tags[TAG_SEED] == "2" and c.data.tags["avbench.tune.trial"] == str(conf["number"])
    (parent,) = _runs(rd, "tune")
    assert parent.inputs.dataset_inputs and "train.batch_size" in parent.data.params
    assert parent.data.tags["avbench.tune.replicate"] == "0" and parent.data.params["select"] == "val_loss"
    # The study is a real Optuna study in the results' journal.
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage = JournalStorage(JournalFileBackend(str(rd / "optuna.journal")))
    study = optuna.load_study(study_name=res["study"]["name"], storage=storage)
    assert [t.number for t in study.trials] == [0, 1]
    assert [t.value for t in study.trials] == pytest.approx([sel.score(t, "val_loss") for t in res["trials"]])
    assert study.user_attrs["strategy_sampler_seed"] == sel.strategy_seed(0, "late_fusion")
    # A rerun reopens it: nothing trains again, the same choice.
    again = tune.tune(req)["strategies"]["late_fusion"]
    assert len(_runs(rd, "trial")) == 2 and len(_runs(rd, "confirm")) == 1
    assert again["best_trial"] == res["best_trial"] and again["params"] == res["params"]


def test_replicates_record_their_sampler_seeds_and_each_choice(tmp_path, in_process):
    rd = tmp_path / "r"
    out = tune.tune(tune.TuneRequest(strategies=["sum"], dataset="synth", budget=1, max_steps=4, overrides=SETS,
                                     results_dir=str(rd), progress=False, sampler_seed=5, replicates=2))
    assert [(r["replicate"], r["sampler_seed"]) for r in out["replicates"]] == [(0, 5), (1, 6)]
    first, second = (r["strategies"]["sum"] for r in out["replicates"])
    assert first["sampler_seed"] == 5 and second["sampler_seed"] == 6
    assert first["params"] != second["params"]  # another sampler seed, another draw
    main_file = json.loads(open(first["files"][0]).read())
    assert [(r["replicate"], r["sampler_seed"]) for r in main_file["replicates"]] == [(0, 5), (1, 6)]
    assert second["files"][0].endswith("replicates/sum-r1.json")
    assert json.loads(open(second["files"][0]).read())["params"] == second["params"]
    tags = sorted((r.data.tags["avbench.tune.replicate"], r.data.tags["avbench.tune.sampler_seed"])
                  for r in _runs(rd, "tune"))
    assert tags == [("0", "5"), ("1", "6")]


def test_cli_says_when_the_top_trials_tie(tmp_path, capsys, in_process):
    """Two trials of one fixed configuration, same seed: an exact tie, said in the output and summary."""
    space = tmp_path / "space.yaml"
    space.write_text("train.lr: {type: categorical, choices: [0.001]}\n")
    sets = [a for s in TINY_SETS for a in ("--set", s)]
    out = tmp_path / "o.json"
    assert main(["tune", "--strategy", "late_fusion", "--dataset", "synth", "--budget", "2", "--max-steps", "4",
                 "--space", str(space), "--select", "val_mAP", "--results-dir", str(tmp_path / "r"),
                 "--no-progress", "--output-json", str(out), *sets]) == 0
    printed = capsys.readouterr().out
    assert "cannot be told apart" in printed and "exact tie with trial 1" in printed
    res = json.loads(out.read_text())["strategies"]["late_fusion"]
    assert res["indistinct"] and res["selection"]["tied"] == [1] and res["best_trial"] == 0
    assert res["capped"] == {} and math.isfinite(res["score"])  # a fixed run length is not "capped"
