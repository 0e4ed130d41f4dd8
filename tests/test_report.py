"""Significance logic on known values, and ``avbench report`` from a temporary MLflow DB of real runs."""

import json
import math
import re

import numpy as np
import pytest

from avbench.cli import main
from avbench.metrics.stats import mean_std_ci
from avbench.report import significance as sig
from helpers import TINY_SETS


# --- confidence intervals and significance ----------------------------------------------------------
def test_t_interval_over_seeds_on_known_values():
    s = mean_std_ci([0.80, 0.81, 0.82])
    assert s["mean"] == pytest.approx(0.81) and s["std"] == pytest.approx(0.01)
    half = 4.302652729911275 * 0.01 / math.sqrt(3)  # t(0.975, df=2)
    assert s["ci_low"] == pytest.approx(0.81 - half) and s["ci_high"] == pytest.approx(0.81 + half)
    assert math.isnan(mean_std_ci([0.5])["ci_low"])


def test_converged_counts_from_the_mean_of_the_0_1_flag():
    from avbench.report.cells import converged, converged_count

    assert converged_count(mean_std_ci([1.0, 0.0, 1.0])) == (2, 3) and converged(mean_std_ci([1.0, 0.0, 1.0])) == "2/3 ⚠"
    assert converged(mean_std_ci([1.0, 1.0])) == "2/2" and converged(None) == "-"


def test_ci_overlap_on_known_intervals():
    a = mean_std_ci([0.80, 0.81, 0.82])  # 0.785 .. 0.835
    b = mean_std_ci([0.90, 0.91, 0.92])
    c = mean_std_ci([0.82, 0.83, 0.84])  # 0.805 .. 0.855: overlaps a
    assert sig.ci_overlap(a, b) is False and sig.ci_overlap(a, c) is True
    assert sig.ci_overlap(a, mean_std_ci([0.9])) is None
    v = sig.compare(b, a)  # no per-clip scores: Welch's t-test over the seeds
    assert (v.sign, v.by, v.mark) == (1, "t-test", ">>") and sig.pretty(v.mark) == "≫"
    assert v.p == pytest.approx(0.000255, rel=0.01) and v.p_adj == v.p  # t = 12.25, df = 4; a family of one
    assert sig.compare(a, b).mark == "<<"
    assert sig.compare(a, c).mark == "="  # overlapping, no per-clip scores: nothing called
    assert sig.compare(a, mean_std_ci([0.9])).mark == "n/a"


def _scores(correct: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Scores whose argmax is the true class where ``correct`` and another class elsewhere."""
    n, c = labels.shape
    truth = labels.argmax(1)
    pred = np.where(correct, truth, (truth + 1) % c)
    s = np.zeros((n, c))
    s[np.arange(n), pred] = 1.0
    return s


def test_paired_bootstrap_on_known_differences():
    rng = np.random.default_rng(0)
    n, c = 400, 5
    labels = np.eye(c, dtype=np.uint8)[rng.integers(0, c, n)]
    base = rng.random(n) < 0.6
    a = {s: _scores(base, labels) for s in (0, 1, 2)}
    same = sig.paired_bootstrap(a, {s: v.copy() for s, v in a.items()}, labels)
    assert same["diff"] == 0.0 and not same["significant"] and same["p"] == 1.0
    # B is A with 10% of the clips turned wrong: A is better by exactly that share of A's hits.
    worse = base & (rng.random(n) >= 0.1)
    b = {s: _scores(worse, labels) for s in (0, 1, 2)}
    r = sig.paired_bootstrap(a, b, labels)
    assert r["diff"] == pytest.approx((base.sum() - worse.sum()) / n)
    assert r["significant"] and r["ci_low"] > 0 and r["p"] < 0.01 and r["seeds"] == [0, 1, 2]
    # Seed matching: seeds the two share only; none shared -> no test.
    assert sig.paired_bootstrap({0: a[0]}, {1: b[1]}, labels) is None
    # mAP: fewer resamples by default; the numpy AP equals the metrics module's (sklearn's), ties included.
    m = sig.paired_bootstrap(a, b, labels, primary="mAP")
    assert m["n_boot"] == 200 and m["diff"] > 0 and m["significant"]
    from avbench.metrics.classification import mean_average_precision

    multi = (rng.random((n, c)) < 0.3).astype(np.uint8)
    noisy = np.round(rng.random((n, c)) + 0.5 * multi, 1)  # rounded: many tied scores
    for lab, sc in ((labels, a[0]), (multi, noisy), (multi[:50], noisy[:50])):
        assert sig.mean_ap(sc, lab) == pytest.approx(mean_average_precision(sc, lab), abs=1e-12)
    # Overlapping CIs but a clear paired difference: called by the bootstrap ("> / <").
    sa, sb = mean_std_ci([0.60, 0.62, 0.58]), mean_std_ci([0.55, 0.60, 0.56])
    assert sig.ci_overlap(sa, sb) is True
    v = sig.compare(sa, sb, a, b, labels)
    assert v.mark == ">" and v.by == "bootstrap"


def test_holm_adjusts_a_family_of_real_p_values():
    # Holm (1979) step-down on four p-values: sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1, made monotone.
    assert sig.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert sig.holm([0.2, None, 0.01]) == [pytest.approx(0.2), None, pytest.approx(0.02)]
    # Real bootstrap p-values: A; B = A with 10% of the clips turned wrong (a clear difference); C = A with
    # five clips turned wrong (significant alone, not in the family); D = a copy of A. Six pairs: the three
    # with B come first, so A vs C is adjusted by 3 (and stays above the later ones).
    rng = np.random.default_rng(1)
    n, c = 600, 5
    labels = np.eye(c, dtype=np.uint8)[rng.integers(0, c, n)]
    base = rng.random(n) < 0.6
    hits = np.flatnonzero(base)
    worse_b, worse_c = base.copy(), base.copy()
    worse_b[hits[: n // 10]] = False
    worse_c[hits[:5]] = False
    rows = {name: {s: _scores(v, labels) for s in (0, 1)}
            for name, v in (("A", base), ("B", worse_b), ("C", worse_c), ("D", base))}
    stats = {k: mean_std_ci([float(_scores_acc(v[s], labels)) for s in v]) for k, v in rows.items()}
    alone = sig.compare(stats["A"], stats["C"], rows["A"], rows["C"], labels)
    assert 0.01 < alone.p < 0.05 and alone.sign == 1  # one comparison: called
    fam = sig.compare_family({k: (stats[k], rows[k], "same clips") for k in rows}, labels)
    ac, ab, ad = fam[("A", "C")], fam[("A", "B")], fam[("A", "D")]
    assert ac.p == pytest.approx(alone.p) and ac.p_adj == pytest.approx(3 * ac.p)
    assert ac.p_adj >= 0.05 and ac.sign == 0 and ac.mark == "="  # not called once the family is accounted for
    assert ab.p_adj < 0.001 and ab.sign == 1 and fam[("B", "A")].sign == -1
    assert ad.p == 1.0 and ad.mark == "="


def _scores_acc(scores, labels):
    return (labels[np.arange(len(labels)), scores.argmax(1)] > 0).mean()


# --- the report from real runs ------------------------------------------------------------------------
def _run(results, strategy, seeds, *sets, epochs=1, save=True):
    args = ["run", "--strategy", strategy, "--dataset", "synth", "--seeds", seeds, "--epochs", str(epochs),
            "--results-dir", str(results), "--no-progress"] + ([] if save else ["--no-save-model"])
    for s in TINY_SETS + list(sets):
        args += ["--set", s]
    assert main(args) == 0


UAVM = ("embed_dim=16", "n_specific=1", "n_shared=1")


def make_runs(results):
    _run(results, "uavm", "0,1", *UAVM, epochs=2)
    _run(results, "late_fusion", "0,1")
    _run(results, "cross_attention", "0", *UAVM, save=False)
    _run(results, "report_plugins:Constant", "0,1", save=False)  # at chance by construction
    _run(results, "report_plugins:Constant", "0", "width=8", save=False)  # the same configuration as width=0
    args = ["sweep", "--strategy", "uavm", "--dataset", "synth", "--grid", "s_dim=4,8", "--seeds", "0",
            "--epochs", "1", "--results-dir", str(results), "--no-progress"]
    for s in TINY_SETS + list(UAVM):
        args += ["--set", s]
    assert main(args) == 0
    common = ["--results-dir", str(results), "--no-plots"]
    for parent in _parents(results, "uavm", sweep=True):
        assert main(["analyze", "--run", parent, "--what", "probe,retrieval"] + common) == 0
    for parent in _parents(results, "uavm", sweep=False):
        assert main(["analyze", "--run", parent, "--what", "probe,retrieval,attention,tsne",
                     "--tsne-per-class", "2", "--attention-clips", "8"] + common) == 0
        assert main(["analyze", "--run", parent, "--what", "robustness", "--noise-levels", "0,0.5,1",
                     "--shift-levels", "0,0.5", "--seeds", "0"] + common) == 0
    assert main(["analyze", "--dataset", "synth", "--strategy", "cross_attention,late_fusion",
                 "--what", "probe,attention"] + common) == 0


def _parents(results, strategy, sweep):
    from avbench.tracking import Tracker

    tr = Tracker(results)
    out = []
    for r in tr.client.search_runs([tr.experiment_id("synth")], filter_string="tags.`avbench.kind` = 'parent'"):
        if r.data.params.get("strategy") == strategy and ("avbench.created_by" in r.data.tags) == sweep:
            out.append(r.info.run_id)
    return out


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    import os

    root = tmp_path_factory.mktemp("report")
    os.environ["AVBENCH_CACHE_DIR"] = str(root / "cache")
    try:
        make_runs(root / "results")
    finally:
        del os.environ["AVBENCH_CACHE_DIR"]
    return root / "results"


def _table(md: str, header_start: str) -> list[list[str]]:
    lines = md.splitlines()
    i = next(k for k, line in enumerate(lines) if line.startswith(header_start))
    rows = []
    for line in lines[i:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip().strip("|").split(" | ")])
    return [rows[0]] + rows[2:]


@pytest.mark.slow
def test_report_has_table_marks_plots_and_lists_what_is_missing(results, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["report", "--dataset", "synth", "--out", str(out), "--results-dir", str(results)]) == 0
    assert "wrote" in capsys.readouterr().err  # a message (logging, stderr), not data
    md = (out / "report.md").read_text()
    table = _table(md, "| # | strategy")
    head, body = table[0], table[1:]
    assert head[:10] == ["#", "strategy", "config", "configured", "protocol", "metric", "seeds", "Audio", "Video",
                         "Fusion"]
    # How each row was configured, in words (25.4): no row is called "default" when fields were set.
    configured = {r[1]: r[head.index("configured")] for r in body}
    assert configured["late_fusion"] == "defaults" and configured["uavm"] == "3 field(s) set"
    how = md.split("### How each row was configured", 1)[1].split("###", 1)[0]
    assert "uavm (s_dim=0): set away from the defaults: embed_dim=16, n_shared=1, n_specific=1" in how
    assert "sweep `s_dim` point s_dim=4" in how
    assert "n_specific=1; recipe `default`" in how  # every row names its recipe (issue 22)
    assert {"params", "train clips/s", "infer clips/s"} <= set(head)
    by_name = {r[1]: r for r in body}
    # Sweep points are listed separately; constant width=8 is merged into width=0 (same resolved config).
    assert set(by_name) == {"uavm", "late_fusion", "cross_attention", "constant"}
    assert "constant (width=8) is #" in md and "constant (width=0)" in md
    fusion = head.index("Fusion")
    assert re.match(r"^\d+\.\d\d ± \d+\.\d\d \(\d+\.\d\d–\d+\.\d\d\)", by_name["uavm"][fusion])
    assert not re.search(r"\(-\d", md) and not re.search(r"–100\.0[1-9]", md)  # intervals clipped to [0, 100]
    # The chance-level row is flagged, in its cells and in words.
    assert all(c.endswith("°") for c in (by_name["constant"][head.index(k)] for k in ("Audio", "Video", "Fusion")))
    chance = md.split("### Chance level", 1)[1]
    assert "**Not above chance**" in chance and "constant (width=0): Audio, Video, Fusion" in chance
    # Chance = always predicting the most frequent test class: at least 1/4, a whole number of the 48 clips.
    level = float(re.search(r"acc \(standard\): Audio (\d+\.\d\d)%", chance).group(1))
    assert level >= 25.0 and abs(level * 48 / 100 - round(level * 48 / 100)) < 0.01
    assert by_name["cross_attention"][head.index("Audio")] == "-"
    assert re.match(r"^\d+\.\d\d \(1 seed\)", by_name["cross_attention"][fusion])
    assert sum("★" in c for r in body for c in r) >= 2  # a best row per column with 2+ rows
    # The marks are explained, and pairwise matrices use them.
    assert "★ is the column's best row" in md and "≫ / ≪" in md and "seed-matched paired bootstrap" in md
    assert "Holm's step-down method" in md and "at most 5% per table column" in md
    # The converged column counts each row's seeds whose 0/1 `converged` metric is 1, as MLflow holds it.
    from avbench.tracking import Tracker

    tr = Tracker(results)
    conv = head.index("converged")
    for name in ("uavm", "late_fusion"):
        (parent,) = _parents(results, name, sweep=False)
        flags = [c.data.metrics["converged"] for c in tr.children(parent)]
        want = f"{int(sum(flags))}/{len(flags)}" + ("" if all(flags) else " ⚠")
        assert by_name[name][conv] == want, (name, flags)
        late = rf"{name}( \([^)]*\))?: {len(flags) - int(sum(flags))} of {len(flags)} seed\(s\) not converged"
        assert bool(re.search(late, md)) != all(flags)  # the row's label may carry its config: "uavm (s_dim=0)"
    assert "### Convergence" in md and "still rose over the last 20% of its learning-rate integral" in md
    pair = _table(md, "| row vs column")
    assert all(c in {"", "≫", "≪", ">", "<", "=", "n/a"} for r in pair[1:] for c in r[1:])
    assert "Sweep points" in md and "Sweep `s_dim`" in md

    figs = {p.name for p in (out / "figures").iterdir() if p.suffix == ".png"}
    for ext in ("pdf", "svg"):  # every figure also in vector formats, for papers
        assert {f[:-4] for f in figs} == {p.stem for p in (out / "figures").glob(f"*.{ext}")}
    assert (out / "figures" / "sweep_s_dim.pdf").read_bytes().startswith(b"%PDF")
    from avbench import results as contract

    data = json.loads((out / "report.json").read_text())
    contract.validate(data)
    assert data["kind"] == "report" and {r["strategy"] for r in data["rows"]} >= {"uavm", "constant"}
    assert next(r for r in data["rows"] if r["label"] == "constant (width=0)")["not_above_chance"] == [
        "audio", "video", "fusion"]
    for name in ("sweep_s_dim.png", "sweep_s_dim_analyses.png", "probe_per_layer.png", "retrieval_per_layer.png",
                 "attention_per_layer.png", "robustness_curves.png", "probe_coefficients.png",
                 "cost_train_clips_per_s.png", "cost_parameters.png"):
        assert name in figs, name
        assert f"(figures/{name})" in md
    assert any(re.match(r"tsne_\d+\.png", f) for f in figs) and any(re.match(r"attention_\d+\.png", f) for f in figs)
    # Missing pieces are listed, not dropped.
    missing = md.split("## Missing pieces", 1)[1]
    assert "registered strategies without a finished run on synth:" in missing and "vq_codes" in missing
    assert "cross_attention" in missing and "1 seed, so no confidence interval" in missing
    assert "no Audio column (joint attention" in missing
    assert "event-types: not run for any row" in missing
    assert "cross_attention: probe, attention skipped: its joint layers mix both modalities" in md  # with its reason

    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == len(figs)
    assert 'src="figures/' not in page and "<table>" in page and "★" in page


@pytest.mark.slow
def test_regeneration_is_identical(results, tmp_path):
    """Training is deterministic per seed (test_cli) and so are analyses (test_analysis); here: the
    report is a deterministic function of what MLflow holds, down to the PNG bytes."""
    from avbench.report.document import build_report
    from avbench.tracking import Tracker

    a = build_report(Tracker(results), "synth", tmp_path / "a")
    b = build_report(Tracker(results), "synth", tmp_path / "b")
    assert a.markdown.read_text() == b.markdown.read_text()
    assert a.html.read_text() == b.html.read_text()
    for f in a.figures:
        assert f.read_bytes() == (tmp_path / "b" / "figures" / f.name).read_bytes(), f.name



@pytest.mark.slow
def test_report_of_another_dataset_is_a_user_error(results, tmp_path, capsys):
    assert main(["report", "--dataset", "vggsound", "--out", str(tmp_path / "o"), "--results-dir", str(results)]) == 2
    assert "no finished runs for dataset 'vggsound'" in capsys.readouterr().err


@pytest.mark.slow
def test_analysis_needs_the_saved_model(results, capsys):
    ca = _parents(results, "cross_attention", sweep=False)[0]
    assert main(["analyze", "--run", ca, "--what", "robustness", "--results-dir", str(results)]) == 2
    assert "has no model.pt: it was run with --no-save-model" in capsys.readouterr().err
    # One run failing does not stop the others.
    assert main(["analyze", "--dataset", "synth", "--strategy", "cross_attention,late_fusion", "--what", "robustness",
                 "--seeds", "0", "--noise-levels", "0,0.5,1", "--shift-levels", "0,0.5", "--no-plots",
                 "--results-dir", str(results)]) == 2
    out = capsys.readouterr().out
    assert "1 analysis(es) recorded, 0 skipped, 1 failed" in out and "cross_attention seed 0" in out


def test_report_without_runs_is_a_user_error(tmp_path, capsys):
    assert main(["report", "--dataset", "synth", "--out", str(tmp_path / "o"), "--results-dir", str(tmp_path)]) == 2
    assert "no MLflow database at" in capsys.readouterr().err
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.slow
def test_table_data_on_stdout_numbers_in_csv_booktabs_with_bold_best(results, capsys):
    import csv
    import io

    assert main(["table", "--dataset", "synth", "--results-dir", str(results), "--format", "csv"]) == 0
    cap = capsys.readouterr()
    assert "mean ± std over seeds" in cap.err and "mean ± std" not in cap.out  # notes on stderr only
    assert "constant (width=8) has the same resolved configuration as" in cap.err
    rows = list(csv.DictReader(io.StringIO(cap.out)))
    assert {r["strategy"] for r in rows} >= {"uavm", "late_fusion", "cross_attention", "constant"}
    uavm = next(r for r in rows if r["strategy"] == "uavm" and r["config"] == "s_dim=0")
    mean, lo, hi = float(uavm["fusion_mean"]), float(uavm["fusion_ci_low"]), float(uavm["fusion_ci_high"])
    assert int(uavm["fusion_n"]) == 2 and 0.0 <= lo <= mean <= hi <= 100.0 and float(uavm["fusion_std"]) >= 0
    assert int(uavm["parameters"]) > 1000 and uavm["unit"] == "%"
    ca = next(r for r in rows if r["strategy"] == "cross_attention")
    assert ca["audio_mean"] == "" and int(ca["fusion_n"]) == 1 and ca["fusion_ci_low"] == ""
    assert main(["table", "--dataset", "synth", "--results-dir", str(results), "--format", "latex"]) == 0
    tex = capsys.readouterr().out
    assert tex.count(r"\toprule") == tex.count(r"\midrule") == tex.count(r"\bottomrule") == 1
    assert r"\begin{tabular}" in tex and r"\end{tabular}" in tex and r"late\_fusion" in tex
    # Bold only where the report's test calls a difference from the column's best (25.6).
    from avbench.commands.table import table_rows
    from avbench.report.table import bold_cells
    from avbench.tracking import Tracker

    shown, marks, _ = table_rows(Tracker(results), "synth")
    want = sorted(f"{100 * shown[i].row.cells[c]['mean']:.2f}" for i, c in bold_cells([r.row for r in shown], marks))
    assert sorted(re.findall(r"\\textbf\{([\d.]+)\}", tex)) == want
    assert r"\resizebox{\columnwidth}{!}{%" in tex and r"Fusion (\%)" in tex  # fits a column, units in headers
    assert r"$^{\circ}$" in tex  # the chance-level row is marked
    assert main(["table", "--dataset", "synth", "--results-dir", str(results)]) == 0
    md = capsys.readouterr().out
    # 4 classes + 8 widths = 12 parameters, printed as such (not "0.00M"); 10.5k-parameter uavm as "10.5k".
    assert re.search(r"^\| constant +\|.*\| +12 +\|$", md, re.M) and re.search(r"\| +\d+\.\d+k +\|$", md, re.M)


def test_latex_bolds_only_a_best_that_the_test_calls_and_fits_a_column():
    from avbench.report.table import TableRow, bold_cells, render_table

    def row(name, values, protocol="standard"):
        return TableRow(name, name, {}, protocol, "acc", {"fusion": mean_std_ci(values)}, {}, len(values))

    rows = [row("a", [0.80, 0.81]), row("b", [0.50, 0.51]), row("c", [0.30, 0.31], "cross-modal"),
            row("d", [0.20, 0.21], "cross-modal")]
    marks = {(0, "fusion"): "★", (1, "fusion"): "†", (2, "fusion"): "★°", (3, "fusion"): ""}
    assert bold_cells(rows, marks) == {(0, "fusion")}  # c is best of its protocol but at chance, nothing called
    tex = render_table(rows, "latex", marks)
    assert tex.count(r"\textbf") == 1 and r"\textbf{80.50}" in tex and r"$^{\dagger}$" in tex
    assert r"\resizebox{\columnwidth}{!}{%" in tex and tex.rstrip().endswith(r"\end{tabular}}")
    assert r"Fusion (\%)" in tex and "params (count)" in tex
    assert render_table(rows[:2], "latex", {(0, "fusion"): "★"}).count(r"\textbf") == 0  # no call, no bold


def test_a_tuned_row_says_its_budget_score_and_rounded_values():
    from avbench.report.cells import configured, round_value, tuned_summary, tuned_values

    tuned = {"strategy": "sum", "metric": "fusion/acc", "value": 0.81234, "budget": {"trials": 20},
             "overrides": {"train.lr": "0.0012345678901234", "train.max_steps": "300",
                           "train.weight_decay": "5.000000000000001e-07", "train.schedule": "cosine"}}
    assert tuned_summary(tuned) == "tuned: 20 trials, best validation fusion/acc 81.2%"
    assert tuned_values(tuned) == "lr=0.00123, max_steps=300, schedule=cosine, weight_decay=5e-07"
    assert configured(tuned, None, {}) == tuned_summary(tuned)  # never "default" for a tuned row
    assert configured(None, "s_dim", {"s_dim": "4"}) == "sweep s_dim"
    assert configured(None, None, {}) == "defaults" and configured(None, None, {"a": "1"}) == "1 field(s) set"
    assert configured({"missing": "/gone/sum.json"}, None, {}) == "tuned (its tuned file is gone)"
    chosen = {**tuned, "select": "val_loss", "score": -0.5123, "params": {"train.lr": 0.0012345678901234}}
    assert tuned_summary(chosen) == "tuned: 20 trials, chosen on val_loss 0.512 (validation fusion/acc 81.2%)"
    assert tuned_values(chosen) == "lr=0.00123"  # the searched values, not the fixed --set ones
    sobol = {**chosen, "budget": {"trials": 8, "sampler": "sobol"}}
    assert tuned_summary(sobol) == "tuned: 8 Sobol' trials, chosen on val_loss 0.512 (validation fusion/acc 81.2%)"
    assert configured(None, None, {}, "default") == "defaults"
    assert configured(None, None, {}, "cmg") == "defaults; recipe cmg"
    assert [round_value(v) for v in ("10", "10.0", "0.4", "5e-07", "True", "continuous,instant")] == \
        ["10", "10", "0.4", "5e-07", "True", "continuous,instant"]
