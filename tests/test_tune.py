"""avbench tune: the same budget for every strategy, on validation only, and the stored best."""

import json

import pytest

from avbench import runner, tune
from avbench.cache import reader
from avbench.cli import main
from avbench.errors import UserError
from helpers import TINY_SETS

SETS = dict(s.split("=", 1) for s in TINY_SETS)


def _req(tmp_path, **kw):
    base = dict(strategies=["late_fusion", "sum"], dataset="synth", budget=2, max_steps=6, overrides=SETS,
                results_dir=str(tmp_path / "r"), progress=False)
    return tune.TuneRequest(**{**base, **kw})


def test_tune_never_opens_the_test_split_and_gives_every_strategy_the_same_budget(tmp_path, monkeypatch):
    runner.resolve(runner.RunRequest(strategy="sum", dataset="synth", overrides=SETS, progress=False))  # the cache
    opened = []
    real = reader.CacheSplit.__init__

    def spy(self, root, info):
        opened.append(root.name)
        assert root.name != "test", "tuning opened the test split"
        real(self, root, info)

    monkeypatch.setattr(reader.CacheSplit, "__init__", spy)
    out = tune.tune(_req(tmp_path))
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


def test_a_space_beyond_the_step_budget_is_refused(tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text("sum:\n  train.max_steps: {type: int, low: 2, high: 60}\n"
                     "late_fusion:\n  train.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}\n")
    with pytest.raises(UserError, match="exceeds the step budget of 6 per trial"):
        tune.tune(_req(tmp_path, space_file=str(space)))
    space.write_text("train.lr: {type: float, low: 1.0e-3, high: 1.0e-2}\nmodel.not_a_field: {type: int, low: 1, high: 2}\n")
    with pytest.raises(UserError, match="not_a_field"):
        tune.tune(_req(tmp_path, space_file=str(space)))


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
