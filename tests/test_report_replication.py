"""The report's Replication section on small MLflow stores with known metrics (no training): Kendall's
tau, flipped pairs, calls that survive every replicate, and the hierarchical interval."""

import json
import math

import numpy as np
import pytest
from scipy.stats import kendalltau

from avbench.cli import main
from avbench.report import replication as rp

# Fusion accuracy per seed (0, 1, 2). R0 orders A > B > C > D, every gap 0.10 (all six pairs called).
# R1 swaps B and C (a flip) and puts D within noise of B (B > D called in R0 only).
R0 = {"A": [0.80, 0.81, 0.82], "B": [0.70, 0.71, 0.72], "C": [0.60, 0.61, 0.62], "D": [0.50, 0.51, 0.52]}
R1 = {"A": [0.80, 0.81, 0.82], "B": [0.60, 0.61, 0.62], "C": [0.70, 0.71, 0.72], "D": [0.59, 0.60, 0.625]}


def _store(path, rows, sampler_seed):
    from avbench.tracking import Tracker

    tr = Tracker(path)
    tuned = path / f"tuned-{sampler_seed}.json"
    tuned.write_text(json.dumps({"sampler_seed": sampler_seed, "overrides": {}}))
    for name, vals in rows.items():
        parent = tr.parent_run("synth", f"g-{name}", name, {"strategy": name, "primary_metric": "acc",
                                                            "protocol": "standard", "data.seed": "0"},
                               {"avbench.tuned": str(tuned)})
        for seed, v in enumerate(vals):
            kid = tr.start_child(parent, seed, name, {}, {})
            tr.log_metrics(kid, {"fusion/acc": v, "audio/acc": v - 0.2})
            tr.finish(kid)
        tr.finish(parent)
    return path


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    d = tmp_path_factory.mktemp("replicates")
    return _store(d / "r0", R0, 0), _store(d / "r1", R1, 1)


@pytest.fixture(scope="module")
def report(stores, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    assert main(["report", "--dataset", "synth", "--out", str(out), "--results-dir", str(stores[0]),
                 "--replicate", str(stores[1])]) == 0
    return json.loads((out / "report.json").read_text()), (out / "report.md").read_text()


def _means_from_mlflow(path):
    """Each row's fusion mean, read straight from the MLflow runs (not through the report)."""
    from avbench.tracking import Tracker, metric_name

    tr = Tracker(path)
    exp = tr.experiment_id("synth", create=False)
    out = {}
    for p in tr.client.search_runs([exp], filter_string="tags.`avbench.kind` = 'parent'"):
        vals = [c.data.metrics[metric_name("fusion/acc")] for c in tr.children(p.info.run_id)]
        out[p.info.run_name] = float(np.mean(vals))
    return out


def test_tau_equals_scipy_on_the_known_rankings_and_the_mlflow_runs(report, stores):
    data, md = report
    col = data["replication"]["columns"]["fusion"]
    (tau,) = col["kendall_tau"]
    names = sorted(R0)
    known = kendalltau([np.mean(R0[n]) for n in names], [np.mean(R1[n]) for n in names]).statistic
    assert known == pytest.approx(4 / 6)  # one discordant pair of six
    assert tau["tau"] == pytest.approx(known)
    m0, m1 = _means_from_mlflow(stores[0]), _means_from_mlflow(stores[1])
    assert tau["tau"] == pytest.approx(kendalltau([m0[n] for n in names], [m1[n] for n in names]).statistic)
    assert "## Replication" in md and "0.67" in md
    assert "**Only 2 replicates.**" in md and "factor of 0.50" in md  # the bootstrap over 2 is optimistic
    # The main table's cells carry the interval over replicates and seeds beside the seeds-only one.
    low, high = data["replication"]["columns"]["fusion"]["row_spread"]["B"]["hierarchical_ci"]
    assert f"⟨{100 * low:.2f}, {100 * high:.2f}⟩" in md
    assert [r["label"] for r in data["replication"]["replicates"]] == ["R0", "R1"]
    assert "sampler seed 1" in data["replication"]["replicates"][1]["seeds"]


def test_flipped_pair_is_listed(report):
    data, md = report
    col = data["replication"]["columns"]["fusion"]
    assert col["flips"][0]["pairs"] == [["B", "C"]]  # higher in R0 first
    assert "B / C" in md


def test_a_call_of_one_replicate_only_does_not_survive(report):
    col = report[0]["replication"]["columns"]["fusion"]
    assert ["B", "D"] in col["calls"]["R0"] and ["B", "D"] not in col["calls"]["R1"]
    assert ["D", "B"] not in col["calls"]["R1"]
    assert sorted(col["surviving_calls"]) == [["A", "B"], ["A", "C"], ["A", "D"], ["C", "D"]]
    assert {tuple(d["pair"]) for d in col["calls_in_some_replicates"]} == {("B", "C"), ("B", "D")}
    # Across replicates (hierarchical bootstrap): the flipped pair is not called, a pair apart in both is.
    hier = {tuple(h["pair"]): h["sign"] for h in col["hierarchical_calls"]}
    assert hier[("B", "C")] == 0 and hier[("A", "B")] == 1 and hier[("C", "D")] == 1
    # The audio column is R0's fusion column shifted: the same replicate numbers.
    audio = report[0]["replication"]["columns"]["audio"]
    assert audio["kendall_tau"][0]["tau"] == pytest.approx(4 / 6)


def test_row_spread_across_replicates_beside_across_seeds(report):
    spread = report[0]["replication"]["columns"]["fusion"]["row_spread"]
    assert spread["A"]["replicate_std"] == pytest.approx(0.0, abs=1e-12)
    assert spread["A"]["seed_std"] == pytest.approx(0.01)
    assert spread["B"]["replicate_std"] == pytest.approx(np.std([0.71, 0.61], ddof=1))
    low, high = spread["B"]["hierarchical_ci"]
    assert low <= 0.61 + 1e-9 and high >= 0.71 - 1e-9  # both replicates' means inside
    low_a, high_a = spread["A"]["hierarchical_ci"]
    assert high_a - low_a < 0.03


def test_hierarchical_interval_widens_when_replicates_disagree():
    seeds = [0.80, 0.81, 0.82]
    agree = rp.hierarchical_interval([seeds, seeds])
    disagree = rp.hierarchical_interval([seeds, [v - 0.1 for v in seeds]])
    assert agree["ci_high"] - agree["ci_low"] < 0.03
    assert disagree["ci_high"] - disagree["ci_low"] > 0.09  # spans both replicates' means
    assert disagree["ci_low"] < 0.715 and disagree["ci_high"] > 0.805  # reaches into each replicate's seeds


def test_hierarchical_call_needs_every_replicate():
    a = [{0: 0.80, 1: 0.81, 2: 0.82}, {0: 0.80, 1: 0.81, 2: 0.82}]
    b_agree = [{0: 0.70, 1: 0.71, 2: 0.72}, {0: 0.70, 1: 0.71, 2: 0.72}]
    b_flip = [{0: 0.70, 1: 0.71, 2: 0.72}, {0: 0.90, 1: 0.91, 2: 0.92}]
    assert rp.hierarchical_diff(a, b_agree)["p"] == 0.0
    flip = rp.hierarchical_diff(a, b_flip)
    assert flip["p"] > 0.5 and flip["ci_low"] < 0 < flip["ci_high"]
    fam = rp.hierarchical_family({("a", "s", "acc"): a, ("b", "s", "acc"): b_flip})
    assert next(iter(fam.values())).sign == 0


def test_replicate_that_is_not_a_directory_is_a_user_error(stores, tmp_path, capsys):
    assert main(["report", "--dataset", "synth", "--out", str(tmp_path / "o"), "--results-dir", str(stores[0]),
                 "--replicate", str(tmp_path / "nope")]) == 2
    assert "--replicate" in capsys.readouterr().err


def test_rows_missing_from_a_replicate_are_left_out_and_named():
    k = {n: (n, "standard", "acc") for n in "ABE"}
    r0 = {k["A"]: {0: 0.8, 1: 0.82}, k["B"]: {0: 0.6, 1: 0.62}, k["E"]: {0: 0.7, 1: 0.71}}
    r1 = {k["A"]: {0: 0.6, 1: 0.61}, k["B"]: {0: 0.8, 1: 0.81}}
    c = rp.replicate_column("fusion", [r0, r1], [{}, {}])
    assert c.keys == [k["A"], k["B"]] and c.left_out == [k["E"]]
    assert c.tau[(0, 1)] == pytest.approx(-1.0) and c.flips[(0, 1)] == [(k["A"], k["B"])]
    assert rp.column_json(c, ["R0", "R1"])["left_out"] == ["E"]


def test_expected_tau_agrees_with_scipy_on_simulated_replicates():
    """The vectorised expectation equals the mean of scipy's tau over the same kind of draws."""
    means, std = [0.80, 0.78, 0.75, 0.70, 0.60], [0.01, 0.03, 0.02, 0.04, 0.01]
    rng = np.random.default_rng(1)
    draws = [(means + rng.standard_normal(5) * std, means + rng.standard_normal(5) * std) for _ in range(4000)]
    scipy_mean = np.mean([kendalltau(a, b).statistic for a, b in draws])
    assert rp.expected_tau(means, std, draws=4000) == pytest.approx(scipy_mean, abs=0.02)
    assert rp.expected_tau(means, 1e-6) == 1.0  # spreads far below the gaps: the order never changes
    assert abs(rp.expected_tau([0.5] * 6, 0.01)) < 0.02  # rows that tie: an unrelated order


def test_std_for_tau_is_the_spread_at_which_the_expected_tau_reaches_the_target():
    means = [0.0, 0.01, 0.02, 0.03, 0.04, 0.05]  # evenly spaced, 1 point apart
    need = rp.std_for_tau(means, 0.9)
    assert rp.expected_tau(means, need) >= 0.9 > rp.expected_tau(means, need * 1.1)
    assert 0.001 < need < 0.01  # below the gap: neighbours must rarely swap
    assert math.isnan(rp.std_for_tau([0.5, 0.5, 0.6], 0.9))  # an exact tie: no spread orders it


def test_report_gives_the_expected_tau_and_the_spread_it_needs(report):
    fusion = report[0]["replication"]["columns"]["fusion"]
    spread = fusion["row_spread"]
    pooled = [np.mean(spread[k]["replicate_means"]) for k in "ABCD"]
    assert fusion["expected_tau"] == pytest.approx(rp.expected_tau(pooled, [spread[k]["replicate_std"] for k in "ABCD"]))
    # B and C swap between R0 and R1, so their means over replicates tie exactly: no spread helps
    assert pooled[1] == pytest.approx(pooled[2]) and fusion["replicate_std_for_tau"]["std"] is None
    section = report[1].split("### Fusion")[1]
    assert "fresh replicates, if each row's" in section and f"{fusion['expected_tau']:.2f}" in section
    assert "no spread reaches it (rows tie exactly)" in section
    audio = report[0]["replication"]["columns"]["audio"]
    assert audio["replicate_std_for_tau"]["std"] is None  # the same rows, shifted: the same tie
