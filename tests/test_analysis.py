"""The UAVM analyses (probe, retrieval, attention, t-SNE), robustness and the event-type wiring,
on known arrays and on tiny models trained here."""

import json

import numpy as np
import pytest
import torch

from avbench.analysis import driver, loading
from avbench.analysis.attention import attention_difference
from avbench.analysis.probe import modality_probe, probe_layer
from avbench.analysis.retrieval import layer_retrieval
from avbench.analysis.robustness import add_noise, effective_robustness, relative_robustness
from avbench.cli import main
from helpers import TINY


# --- known values ---------------------------------------------------------------------------------
def test_probe_separates_two_distributions_and_not_one():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(200, 8))
    shifted = probe_layer(a, rng.normal(size=(200, 8)) + 1.5)
    assert shifted["acc"] >= 0.97 and len(shifted["coef_sorted"]) == 8
    assert shifted["coef_sorted"] == sorted(shifted["coef_sorted"], reverse=True)
    same = probe_layer(a, rng.normal(size=(200, 8)))
    assert 0.35 <= same["acc"] <= 0.65
    # One informative dimension: the L1 probe puts (nearly) all its weight there.
    v = a.copy()
    v[:, 3] += 4.0
    one = probe_layer(a, v)
    assert one["acc"] >= 0.97 and one["top_share"] > 0.5


def test_probe_reports_every_layer_and_says_why_one_is_skipped():
    rng = np.random.default_rng(1)
    a = {"layer0": rng.normal(size=(40, 4)), "layer1": rng.normal(size=(40, 6))}
    v = {"layer0": rng.normal(size=(40, 4)), "layer1": rng.normal(size=(40, 5))}
    res = modality_probe(a, v)
    assert res["layers"] == ["layer0"] and "differ in width" in res["skipped"]["layer1"]


def test_retrieval_of_identical_embeddings_is_perfect():
    rng = np.random.default_rng(0)
    emb = {"layer0": rng.normal(size=(30, 8)), "layer1": rng.normal(size=(30, 5, 8))}
    res = layer_retrieval(emb, {k: v.copy() for k, v in emb.items()})
    assert res["layers"] == ["layer0", "layer1"]
    for d in res["per_layer"].values():
        assert d["a2v_R_at1"] == 1.0 and d["v2a_R_at1"] == 1.0 and d["a2v_medr"] == 1.0
    shuffled = layer_retrieval(emb, {k: v[::-1].copy() for k, v in emb.items()})
    assert shuffled["per_layer"]["layer0"]["a2v_R_at1"] < 0.2
    # A collapsed layer (one vector for every clip) would tie everywhere: it is left out, with the reason.
    flat = layer_retrieval({"codes": np.ones((30, 4))}, {"codes": np.ones((30, 4))})
    assert flat["layers"] == [] and "collapsed" in flat["skipped"]["codes"]


def test_tsne_skips_a_collapsed_layer_instead_of_crashing():
    from avbench.analysis.tsne import tsne_layers

    rng = np.random.default_rng(0)
    a = {"live": rng.normal(size=(12, 4)), "dead": np.ones((12, 4))}
    v = {"live": rng.normal(size=(12, 4)) + 2, "dead": np.ones((12, 4))}
    res = tsne_layers(a, v)
    assert res["layers"] == ["live"] and res["coords"]["live"].shape == (24, 2)
    assert "collapsed" in res["skipped"]["dead"]


def test_relative_and_effective_robustness_on_known_curves():
    levels = [round(0.1 * i, 1) for i in range(11)]
    assert relative_robustness([0.8] * 11, levels) == pytest.approx(0.8)
    assert relative_robustness(np.linspace(1.0, 0.0, 11), levels) == pytest.approx(0.5)
    # Over 0..0.5 the area is divided by the range: a constant curve keeps its value.
    assert relative_robustness([0.6] * 6, [0, 0.1, 0.2, 0.3, 0.4, 0.5]) == pytest.approx(0.6)
    # MultiBench: sum(f - (b + f0 - b0)).
    assert effective_robustness([0.9, 0.8, 0.7], [0.8, 0.6, 0.4]) == pytest.approx(0.3)
    assert effective_robustness([0.5, 0.4], [0.7, 0.6]) == pytest.approx(0.0)


def test_noise_mixes_from_clean_to_pure_noise_deterministically():
    x = torch.randn(4, 30, 64) * 3 + 1
    assert torch.equal(add_noise(x, 0.0, torch.Generator().manual_seed(0)), x)
    n1 = add_noise(x, 1.0, torch.Generator().manual_seed(5))
    assert torch.equal(n1, add_noise(x, 1.0, torch.Generator().manual_seed(5)))
    # Pure noise: uncorrelated with x, with the norm of each step.
    corr = np.corrcoef(x.flatten().numpy(), n1.flatten().numpy())[0, 1]
    assert abs(corr) < 0.05
    ratio = (n1.norm(dim=-1) / x.norm(dim=-1)).mean().item()
    assert 0.9 < ratio < 1.1
    half = add_noise(x, 0.5, torch.Generator().manual_seed(5))
    assert torch.allclose(half, 0.5 * x + 0.5 * n1)


# --- tiny trained models ----------------------------------------------------------------------------
SETS = {f"data.{k}": str(v) for k, v in TINY.items() if k != "seed"} | {"train.batch_size": "16"}
UAVM = {"embed_dim": "16", "n_specific": "2", "n_shared": "1", "s_dim": "8"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from avbench import runner

    base = tmp_path_factory.mktemp("analysis")
    results = str(base / "results")
    out = {"results": results}
    torch.set_num_threads(1)
    for name, epochs, extra in (("uavm", 4, UAVM), ("late_fusion", 1, {}), ("cross_attention", 1, UAVM),
                                ("event_layers", 1, {"embed_dim": "16"})):
        req = runner.RunRequest(strategy=name, dataset="synth", seeds=[0], epochs=epochs, overrides={**SETS, **extra},
                                results_dir=results, progress=False, cache_root=str(base / "cache"))
        out[name] = runner.run(req)
    return out


def _open(trained, name):
    from avbench.tracking import Tracker

    tr = Tracker(trained["results"])
    return loading.open_run(tr, trained[name]["seeds"][0]["run_id"])


@pytest.mark.slow
def test_probe_on_a_trained_model_reports_every_layer_and_separates_the_inputs(trained):
    run = _open(trained, "uavm")
    out = driver.analyze(run, "probe", driver.Options(plots=False))
    layers = list(run.strategy.embed(torch.zeros(1, TINY["steps"], TINY["audio_dim"]), None))
    assert out.status == "done" and out.result["layers"] == layers == ["layer0", "layer1", "layer2", "layer3"]
    # synth's audio and video come from different distributions: the input layer separates them.
    assert out.result["per_layer"]["layer0"]["acc"] >= 0.95
    assert set(out.metrics) >= {f"analysis/probe/{k}/acc" for k in layers}


@pytest.mark.slow
def test_attention_difference_is_zero_for_one_input_and_positive_for_paired_clips(trained):
    run = _open(trained, "uavm")
    b = run.prepare(next(run.batches())[1])
    same = attention_difference(run.strategy, ("audio", b.audio), ("audio", b.audio))
    assert list(same) == ["layer1", "layer2", "layer3"] and all(v == 0.0 for v in same.values())
    same_v = attention_difference(run.strategy, ("video", b.video), ("video", b.video))
    assert all(v == 0.0 for v in same_v.values())
    paired = attention_difference(run.strategy, ("audio", b.audio), ("video", b.video))
    assert all(v > 1e-4 for v in paired.values())
    out = driver.analyze(run, "attention", driver.Options(plots=False))
    heat = out.result["heatmap"]
    assert np.asarray(heat["audio"]).shape == (4, TINY["steps"])  # heads x T
    assert np.allclose(np.asarray(heat["audio"]).sum(1), 1.0, atol=1e-4)


@pytest.mark.slow
def test_retrieval_and_tsne_per_layer_on_a_trained_model(trained, tmp_path):
    run = _open(trained, "uavm")
    out = driver.analyze(run, "retrieval", driver.Options(plots=False))
    assert out.result["layers"] == ["layer0", "layer1", "layer2", "layer3", "logits"]
    assert out.result["clips"] == 5 * TINY["classes"]
    for d in out.result["per_layer"].values():
        assert 0.0 <= d["a2v_R_at1"] <= d["a2v_R_at5"] <= d["a2v_R_at10"] <= 1.0
    ts = driver.analyze(run, "tsne", driver.Options(plots=False, tsne_per_class=5))
    n = ts.result["n"]
    assert n == 5 * TINY["classes"] and np.asarray(ts.result["coords"]["layer2"]).shape == (2 * n, 2)
    from avbench.report.plots import analysis_figure

    for o in (out, ts):
        assert analysis_figure(o.what, o.result, "uavm", tmp_path / f"{o.what}.png")
        assert (tmp_path / f"{o.what}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_robustness_clean_point_is_the_logged_result_and_effective_needs_the_baseline(trained, tmp_path):
    run = _open(trained, "uavm")
    logged = trained["uavm"]["seeds"][0]["metrics"]
    out = driver.analyze(run, "robustness", driver.Options(plots=False, noise_levels=(0.0, 0.5, 1.0),
                                                            shift_levels=(0.0, 0.25, 0.5)))
    res = out.result
    # Level 0 is evaluation itself: same preprocessing, precision and batches as the engine.
    assert res["clean"] == pytest.approx(logged["fusion/acc"], abs=1e-12)
    assert res["drop"]["video"] == {"value": pytest.approx(logged["audio/acc"], abs=1e-12), "how": "audio-only"}
    assert res["drop"]["audio"]["value"] == pytest.approx(logged["video/acc"], abs=1e-12)
    assert res["curves"]["noise_audio"]["levels"] == [0.0, 0.5, 1.0]
    assert res["curves"]["shift"]["steps"] == [0, 2, 4]
    assert res["baseline"] == "late_fusion seed 0"
    for c in res["curves"].values():
        assert len(c["baseline_values"]) == len(c["values"])
        assert c["effective"] == pytest.approx(effective_robustness(c["values"], c["baseline_values"]))
    # The baseline's own curve was recorded on the baseline run.
    base = _open(trained, "late_fusion")
    assert base.tracker.client.get_run(base.run_id).data.tags[driver.TAG_PREFIX + "robustness"] == "done"
    # A strategy that cannot predict from one modality is given zeros, and that is said.
    ca = driver.analyze(_open(trained, "cross_attention"), "robustness",
                        driver.Options(plots=False, noise_levels=(0.0, 1.0), shift_levels=(0.0, 0.5)))
    assert ca.result["drop"]["video"]["how"] == "fusion with zero video"
    from avbench.report.plots import analysis_figure

    assert analysis_figure("robustness", res, "uavm", tmp_path / "r.png") and (tmp_path / "r.png").stat().st_size > 0


@pytest.mark.slow
def test_cli_records_analyses_skips_with_reasons_and_summarises_the_parent(trained, capsys):
    res = trained["results"]
    parent = trained["uavm"]["parent_run_id"]
    assert main(["analyze", "--run", parent, "--what", "probe,retrieval,attention", "--results-dir", res,
                 "--attention-clips", "16"]) == 0
    out = capsys.readouterr().out
    assert "-- probe" in out and "| layer0" in out and "MAE paired A vs V" in out
    run = _open(trained, "uavm")
    tags = run.tracker.client.get_run(run.run_id).data.tags
    assert tags["avbench.analysis.probe"] == "done"
    arts = {a.path for a in run.tracker.client.list_artifacts(run.run_id, "analysis")}
    assert {"analysis/probe.json", "analysis/probe.png", "analysis/attention.png"} <= arts
    saved = json.loads(loading.download_artifact(run.tracker, run.run_id, "analysis/retrieval.json").read_text())
    assert saved["layers"][-1] == "logits"
    pm = run.tracker.client.get_run(parent).data.metrics
    assert pm["analysis/probe/layer0/acc_n"] == 1 and pm["analysis/probe/layer0/acc_mean"] >= 0.95

    # No per-layer representations or attention maps: skipped, with the strategy's own reason.
    assert main(["analyze", "--run", trained["cross_attention"]["parent_run_id"], "--what", "probe,attention",
                 "--results-dir", res]) == 0
    out = capsys.readouterr().out
    assert "probe: skipped: its joint layers mix both modalities" in out
    ca = _open(trained, "cross_attention")
    assert ca.tracker.client.get_run(ca.run_id).data.tags["avbench.analysis.attention"].startswith("skipped: its joint")

    assert main(["analyze", "--run", "nosuchrun", "--what", "probe", "--results-dir", res]) == 2
    assert "no run 'nosuchrun'" in capsys.readouterr().err

    # --skip-done does not redo recorded analyses.
    assert main(["analyze", "--run", parent, "--what", "probe", "--results-dir", res, "--skip-done"]) == 0
    assert "already recorded" in capsys.readouterr().out


@pytest.mark.slow
def test_event_types_read_head_logits_and_synth_event_types(trained, capsys):
    res = trained["results"]
    assert main(["analyze", "--run", trained["event_layers"]["parent_run_id"], "--what", "event-types",
                 "--results-dir", res]) == 0
    out = capsys.readouterr().out
    assert "categories" in out and "clip share" in out and "generating type" in out
    run = _open(trained, "event_layers")
    metrics = run.tracker.client.get_run(run.run_id).data.metrics
    assert 0.0 <= metrics["analysis/event_types/event_type_match"] <= 1.0
    shares = [v for k, v in metrics.items() if k.startswith("analysis/event_types/event_share_")]
    assert len(shares) >= 2 and sum(shares) == pytest.approx(1.0)
    assert "analysis/event_types.png" in {a.path for a in run.tracker.client.list_artifacts(run.run_id, "analysis")}
    # uavm has no named heads.
    assert main(["analyze", "--run", trained["uavm"]["parent_run_id"], "--what", "event-types",
                 "--results-dir", res]) == 0
    assert "event-types: skipped: the strategy does not declare 'heads' support" in capsys.readouterr().out


def test_bad_analyze_input_is_a_one_line_error(tmp_path, capsys):
    assert main(["analyze", "--run", "nosuchrun", "--what", "probe", "--results-dir", str(tmp_path)]) == 2
    assert "no MLflow database at" in capsys.readouterr().err
    assert main(["analyze", "--run", "x", "--what", "probez", "--results-dir", str(tmp_path)]) == 2
    assert "unknown analysis 'probez'" in capsys.readouterr().err
    assert main(["analyze", "--run", "x", "--what", "robustness", "--noise-levels", "0.5,1",
                 "--results-dir", str(tmp_path)]) == 2
    assert "must start at 0" in capsys.readouterr().err
