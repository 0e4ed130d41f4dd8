"""``avbench eval``: a model trained by ``run`` evaluates to ``run``'s own test metrics, exactly."""

import json

import numpy as np
import pytest
import torch

from avbench.cli import main
from helpers import TINY_SETS

pytestmark = pytest.mark.slow  # end to end: trains a tiny model once, then evaluates it

SETS = [*TINY_SETS, "embed_dim=16", "n_specific=1", "n_shared=1", "train.amp=fp32"]


def _sets(extra=()):
    out = []
    for s in [*SETS, *extra]:
        out += ["--set", s]
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("eval")
    res = tmp / "results"
    summary = tmp / "run.json"
    args = ["run", "--strategy", "uavm", "--dataset", "synth", "--epochs", "1", "--results-dir", str(res),
            "--no-progress", "--output-json", str(summary), *_sets()]
    assert main(args) == 0
    model = next(res.rglob("model.pt"))
    return tmp, res, json.loads(summary.read_text()), model


def test_eval_reproduces_run_test_metrics_exactly(trained, capsys):
    from avbench.results import metric_name

    tmp, res, run_summary, model = trained
    out = tmp / "eval.json"
    preds = tmp / "preds.npz"
    assert main(["eval", "--strategy", "uavm", "--checkpoint", str(model), "--dataset", "synth",
                 "--results-dir", str(res), "--no-progress", "--output-json", str(out),
                 "--save-predictions", str(preds), *_sets()]) == 0
    printed = capsys.readouterr().out
    assert "Audio" in printed and "Fusion" in printed and "acc (%)" in printed
    ev = json.loads(out.read_text())
    from avbench import results

    results.validate(ev)  # the results contract, kind "eval"
    assert ev["kind"] == "eval" and ev["provenance"]["avbench_version"]
    ran = run_summary["seeds"][0]["metrics"]
    keys = [k for k in ev["metrics"] if k.split("/")[0] in ("audio", "video", "fusion", "retrieval")]
    assert {"audio/acc", "video/acc", "fusion/acc", "fusion/mAP", "retrieval/a2v_R_at1"} <= set(keys)
    for k in keys:
        assert ev["metrics"][k] == ran[metric_name(k)], k  # exactly, not approximately
    with np.load(preds) as z:
        assert set(z.files) >= {"ids", "labels", "logits_audio", "logits_video", "logits_fusion"}
        assert len(z["ids"]) == ev["clips"] == 48 and z["logits_fusion"].shape == (48, 4)
        # fused = mean of the two single-modality passes, row by row in split order
        np.testing.assert_allclose(z["logits_fusion"], (z["logits_audio"] + z["logits_video"]) / 2, atol=1e-5)
        ids = list(z["ids"])
    from avbench.cache.reader import FeatureCache

    assert ids == list(FeatureCache(ev["cache"]["path"]).test_split().ids)

    from avbench.tracking import TAG_KIND, Tracker

    run = Tracker(res).client.get_run(ev["run_id"])
    assert run.data.tags[TAG_KIND] == "eval" and run.info.status == "FINISHED"
    assert run.data.params["checkpoint_kind"] == "avbench"
    assert run.data.metrics[metric_name("fusion/acc")] == ev["metrics"]["fusion/acc"]


def test_eval_refuses_weights_of_another_configuration_in_one_line(trained, capsys):
    _, res, _, model = trained
    rc = main(["eval", "--strategy", "uavm", "--checkpoint", str(model), "--dataset", "synth", "--no-track",
               "--results-dir", str(res), "--no-progress", *_sets(["n_shared=2"])])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert "shared.blocks.1" in err and "model" in err
    rc = main(["eval", "--strategy", "independent", "--checkpoint", str(model), "--dataset", "synth", "--no-track",
               "--results-dir", str(res), "--no-progress", *_sets()])
    assert rc == 2 and "use --strategy uavm" in capsys.readouterr().err


def test_run_init_from_starts_at_the_given_weights(trained, tmp_path):
    """--init-from loads the file before training: with lr ~ 0 the model evaluates as the file does
    (here under --recipe reference, whose switches do not touch evaluation)."""
    _, _, run_summary, model = trained
    out = tmp_path / "ft.json"
    assert main(["run", "--strategy", "uavm", "--dataset", "synth", "--epochs", "1", "--results-dir",
                 str(tmp_path / "r"), "--no-progress", "--no-save-model", "--init-from", str(model),
                 "--recipe", "reference", "--output-json", str(out),
                 *_sets(["train.lr=1e-30", "train.weight_decay=0"])]) == 0
    summary = json.loads(out.read_text())
    assert summary["recipe"]["idle_grads"] == "zero" and summary["recipe"]["mixup_partner"] == "split"
    ran = run_summary["seeds"][0]["metrics"]
    ft = summary["seeds"][0]["metrics"]
    from avbench.results import metric_name

    for k in ("audio/acc", "video/acc", "fusion/acc"):
        assert ft[metric_name(k)] == pytest.approx(ran[metric_name(k)], abs=1e-9)


def test_analyses_in_the_authors_convention(trained):
    """Retrieval on raw (un-normalised) inputs and the probe on the 5-per-class subset, as options."""
    from avbench.analysis.loading import download_artifact
    from avbench.tracking import Tracker

    _, res, run_summary, _ = trained
    child = run_summary["seeds"][0]["run_id"]
    base = ["analyze", "--run", child, "--what", "probe,retrieval", "--results-dir", str(res), "--no-plots"]
    tracker = Tracker(res)

    def read(what):
        return json.loads(download_artifact(tracker, child, f"analysis/{what}.json").read_text())

    assert main(base) == 0
    normed, probe_all = read("retrieval"), read("probe")
    assert normed["inputs"] == "normalised" and probe_all["clips"] == 48
    assert main([*base, "--retrieval-inputs", "raw", "--probe-per-class", "2"]) == 0
    raw, probe_sub = read("retrieval"), read("probe")
    assert raw["inputs"] == "raw" and raw["clips"] == normed["clips"] == 20  # 5 per class x 4 classes
    assert probe_sub["clips"] == 8  # 2 per class x 4 classes
    # The model's first op is a per-step LayerNorm, which undoes any per-step scaling: raw and
    # L2-normalised inputs give the same representations up to LayerNorm's eps, hence the same ranks.
    assert raw["per_layer"] == normed["per_layer"]
    from avbench.analysis.loading import open_run
    from avbench.analysis.retrieval import with_inputs

    run = open_run(tracker, child)
    view = with_inputs(run, "raw")
    assert view.recipe.l2_norm is False and run.recipe.l2_norm is True and view.strategy is run.strategy
    _, rows = next(run.batches(np.arange(8)))
    a_n, a_r = run.prepare(rows).audio, view.prepare(rows).audio
    assert torch.allclose(a_n.norm(dim=-1), torch.ones(8, a_n.shape[1]), atol=1e-5)
    assert not torch.allclose(a_r.norm(dim=-1), torch.ones(8, a_r.shape[1]), atol=1e-2)
    with torch.no_grad():
        l_n, l_r = run.strategy.embed(a_n, None), run.strategy.embed(a_r, None)
    assert max(float((l_n[k] - l_r[k]).abs().max()) for k in l_n) < 1e-3
