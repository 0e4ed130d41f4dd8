"""The results contract (schema, provenance, MLflow metric names, metric meaning), run config files
(``--config`` merging and the round trip), logging/progress switches, presets and ``avbench show``."""

import json
import logging
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import yaml

from avbench import config_file, log, results
from avbench.cli import build_parser, main
from avbench.errors import UserError
from helpers import TINY_SETS


def _tiny_run(results_dir, out, *extra, seeds="0"):
    args = ["run", "--strategy", "late_fusion", "--dataset", "synth", "--seeds", seeds, "--epochs", "1",
            "--results-dir", str(results_dir), "--no-save-model", "--output-json", str(out)]
    for s in TINY_SETS:
        args += ["--set", s]
    assert main(args + list(extra)) == 0
    return json.loads(out.read_text())


# --- metric names and meaning -------------------------------------------------------------------------
def test_metric_names_are_mlflows_and_carry_direction_and_range():
    assert results.metric_name("retrieval/a2v_R@10") == "retrieval/a2v_R_at10"
    assert results.metric_info("retrieval/a2v_R@1") == {"higher_is_better": True, "range": [0.0, 1.0]}
    assert results.metric_info("fusion/acc_mean") == {"higher_is_better": True, "range": [0.0, 1.0]}
    assert results.metric_info("retrieval/v2a_medr")["higher_is_better"] is False
    assert results.metric_info("audio/dprime") == {"higher_is_better": True, "range": [None, None]}
    assert results.metric_info("parameters")["higher_is_better"] is None
    assert results.metric_info("train/loss") == {"higher_is_better": False, "range": [0.0, None]}


def test_chance_level_from_test_labels_and_intervals_clipped():
    # 480 clips of 12 classes: one class holds 60 clips, the rest share 420.
    labels = np.eye(12, dtype=np.uint8)[np.r_[np.zeros(60, int), np.arange(420) % 11 + 1]]
    assert results.chance_level("fusion/acc", labels) == pytest.approx(60 / 480)  # always the biggest class
    assert results.chance_level("fusion/acc", num_classes=12) == pytest.approx(1 / 12)
    assert results.chance_level("top5", num_classes=12) == pytest.approx(5 / 12)
    assert results.chance_level("mAP", labels) == pytest.approx(1 / 12)  # mean prevalence
    assert results.chance_level("mAUC", labels) == 0.5
    # A degenerate row exactly at chance (std 0 over seeds) is flagged; one clearly above is not.
    at = {"mean": 0.125, "std": 0.0, "ci_low": 0.125, "ci_high": 0.125, "n": 3}
    above = {"mean": 0.40, "std": 0.02, "ci_low": 0.35, "ci_high": 0.45, "n": 3}
    assert results.not_above_chance(at, 0.125) and not results.not_above_chance(above, 0.125)
    assert results.not_above_chance({"mean": 0.12, "std": 0.0, "ci_low": None, "ci_high": None, "n": 1}, 0.125)
    # The published report's mbt interval -14.32-51.26 becomes 0.00-51.26.
    assert results.clip_interval({"ci_low": -0.1432, "ci_high": 0.5126}, "fusion/acc") == (0.0, 0.5126)


def test_schema_rejects_documents_that_break_the_contract():
    doc = results.finalize("seed_result", {"strategy": "x", "dataset": "d", "seed": 0,
                                           "metrics": {"fusion/acc": 0.5, "retrieval/a2v_R@1": float("nan")},
                                           "config": {}, "recipe": {}, "cache": {"key": "k"}})
    assert doc["metrics"] == {"fusion/acc": 0.5, "retrieval/a2v_R_at1": None}  # renamed, NaN -> null
    assert doc["schema_version"] == results.SCHEMA_VERSION and doc["provenance"]["cache_key"] == "k"
    for broken in ({k: v for k, v in doc.items() if k != "provenance"},
                   {**doc, "metrics": {"retrieval/a2v_R@1": 0.1}},
                   {**doc, "kind": "run_summary"},
                   {**doc, "provenance": {**doc["provenance"], "command": "avbench run"}}):
        with pytest.raises(jsonschema.ValidationError):
            results.validate(broken)


# --- every JSON the CLI writes validates ----------------------------------------------------------------
@pytest.mark.slow
def test_run_json_result_json_config_yaml_and_the_config_round_trip(tmp_path):
    out = tmp_path / "a.json"
    a = _tiny_run(tmp_path / "ra", out, "--set", "train.lr=0.003")
    results.validate(a)
    prov = a["provenance"]
    assert a["kind"] == "run_summary" and prov["command"][:2] == ["avbench", "run"]
    assert "--output-json" in prov["command"] and prov["recipe"]["lr"] == 0.003 and prov["cache_key"]
    assert prov["environment"]["torch"] and prov["created"].endswith("+00:00")
    assert a["metric_info"]["fusion/acc"] == {"higher_is_better": True, "range": [0.0, 1.0]}
    assert not any("@" in k for k in a["summary"])
    # result.json and config.yaml of the seed's MLflow run.
    from avbench.tracking import Tracker

    tr = Tracker(tmp_path / "ra")
    child = a["seeds"][0]["run_id"]
    seed_doc = json.loads(Path(tr.client.download_artifacts(child, "result.json", str(tmp_path))).read_text())
    results.validate(seed_doc)
    assert seed_doc["kind"] == "seed_result"
    assert seed_doc["metrics"]["fusion/acc"] == a["seeds"][0]["metrics"]["fusion/acc"]
    (tmp_path / "c").mkdir()
    logged = yaml.safe_load(Path(tr.client.download_artifacts(child, "config.yaml", str(tmp_path / "c"))).read_text())
    written = yaml.safe_load(config_file.beside(out).read_text())
    assert logged == written == a["run_config"]
    assert written["train"]["lr"] == 0.003 and written["data"]["classes"] == 4 and written["seeds"] == [0]
    # The round trip: the written config, elsewhere, reproduces the metrics exactly.
    b_out = tmp_path / "b.json"
    assert main(["run", "--config", str(config_file.beside(out)), "--results-dir", str(tmp_path / "rb"),
                 "--no-save-model", "--output-json", str(b_out)]) == 0
    b = json.loads(b_out.read_text())
    assert b["run_config"] == a["run_config"] and b["group"] == a["group"]
    assert b["seeds"][0]["metrics"]["fusion/acc"] == a["seeds"][0]["metrics"]["fusion/acc"]
    assert b["summary"]["audio/mAP"]["mean"] == a["summary"]["audio/mAP"]["mean"]


@pytest.mark.slow
def test_bench_json_follows_the_contract(tmp_path):
    out = tmp_path / "bench.json"
    assert main(["bench", "--strategy", "late_fusion", "--synthetic", "--batch-size", "4", "--mode", "train",
                 "--warmup", "0", "--steps", "1", "--peak-sizes", "64", "--peak-seconds", "0.01",
                 "--set", "data.steps=4", "--set", "data.audio_dim=8", "--set", "data.video_dim=8",
                 "--set", "data.classes=3", "--output-json", str(out)]) == 0
    doc = json.loads(out.read_text())
    results.validate(doc)
    assert doc["kind"] == "bench" and doc["provenance"]["command"][:2] == ["avbench", "bench"]
    assert doc["metric_info"]["train/clips_per_s"]["higher_is_better"] is True


# --- config files: what wins ----------------------------------------------------------------------------
def _parse(argv):
    return config_file.parse_args(build_parser(), argv)


def test_config_file_values_are_defaults_that_flags_and_set_override(tmp_path):
    f = tmp_path / "run.yaml"
    f.write_text(yaml.safe_dump({"strategy": "uavm", "dataset": "synth", "seeds": [0, 1, 2], "epochs": 3,
                                 "device": "cpu", "no-save-model": True, "model": {"embed_dim": 32, "s_dim": None},
                                 "train": {"lr": 0.001, "schedule": "epoch"}, "data": {"classes": 4}}))
    args = _parse(["run", "--config", str(f)])
    assert (args.strategy, args.dataset, args.seeds, args.epochs, args.no_save_model) == ("uavm", "synth", "0,1,2", 3,
                                                                                           True)
    assert args.overrides == ["model.embed_dim=32", "model.s_dim=none", "train.lr=0.001", "train.schedule=epoch",
                              "data.classes=4"]
    args = _parse(["run", "--config", str(f), "--epochs", "1", "--set", "embed_dim=16", "--cache", "/x"])
    assert args.epochs == 1 and args.overrides[-1] == "embed_dim=16"  # the command line wins
    assert args.cache == "/x" and args.dataset is None  # the command line's --cache replaces the file's dataset
    from avbench.config import parse_pairs

    assert parse_pairs(args.overrides)["model.embed_dim"] == "32" and parse_pairs(args.overrides)["embed_dim"] == "16"


def test_config_file_mistakes_are_one_line_errors(tmp_path, capsys):
    f = tmp_path / "bad.yaml"
    f.write_text("strategy: uavm\ndataset: synth\nepoch: 3\n")
    assert main(["run", "--config", str(f)]) == 2
    assert "unknown field 'epoch' for avbench run; did you mean 'epochs'?" in capsys.readouterr().err
    f.write_text("strategy: uavm\nprotocol: sideways\n")
    assert main(["run", "--config", str(f)]) == 2
    assert "'protocol' must be one of standard, cross-modal" in capsys.readouterr().err
    f.write_text("- just\n- a list\n")
    with pytest.raises(UserError, match="a mapping of fields"):
        config_file.load(f)
    assert main(["run", "--config", str(tmp_path / "none.yaml")]) == 2


# --- logging and progress ---------------------------------------------------------------------------
class _Stream:
    def __init__(self, tty):
        self.tty = tty

    def isatty(self):
        return self.tty

    def write(self, s):
        pass

    def flush(self):
        pass


def test_verbosity_and_progress_only_on_a_terminal():
    args = build_parser().parse_args(["run", "-q", "--strategy", "x", "--dataset", "y"])
    assert (args.quiet, args.verbose, args.progress) == (1, 0, "auto")
    assert build_parser().parse_args(["-vv", "list"]).verbose == 2
    assert [log.level(0, 0), log.level(1, 0), log.level(0, 1), log.level(0, 2)] == [
        logging.INFO, logging.DEBUG, logging.WARNING, logging.ERROR]
    log.setup(0, 1, "auto")
    assert logging.getLogger("avbench.run").getEffectiveLevel() == logging.WARNING
    assert not log.progress_enabled(True, _Stream(False)) and log.progress_enabled(True, _Stream(True))
    log.setup(0, 0, "always")
    assert log.progress_enabled(True, _Stream(False)) and not log.progress_enabled(False, _Stream(True))
    log.setup(0, 0, "never")
    assert not log.progress_enabled(True, _Stream(True))
    log.setup()


# --- presets and show ------------------------------------------------------------------------------
def test_presets_apply_before_set_and_show_tells_fields_card_and_capabilities(capsys):
    from avbench import registry
    from avbench.commands.show import describe
    from report_plugins import Constant

    class WithPresets(Constant):
        presets = {"big": {"width": 64}, "broken": {"depth": 2}}

    assert registry.preset(WithPresets, "big") == {"width": 64} and registry.preset(WithPresets, None) == {}
    with pytest.raises(UserError, match=r"no such preset \(presets: big, broken\)"):
        registry.preset(WithPresets, "bgi")
    with pytest.raises(UserError, match="sets unknown field"):
        registry.preset(WithPresets, "broken")
    info = describe("uavm", "synth")
    fields = {f["name"]: f for f in info["fields"]}
    assert fields["embed_dim"]["default"] == 1024 and fields["embed_dim"]["card"] == 128
    assert fields["embed_dim"]["value"] == 128 and fields["embed_dim"]["type"] == "int"
    assert "0 means embed_dim" in fields["s_dim"]["help"]
    caps = {c["name"]: c for c in describe("cross_attention")["capabilities"]}
    assert caps["audio_only"]["supported"] is False and caps["audio_only"]["reason"]
    assert main(["show", "vq_codes", "--dataset", "synth"]) == 0
    text = capsys.readouterr().out
    assert "stages: pretrain, downstream" in text and "card synth" in text and "capabilities:" in text
    presets = describe("uavm")["presets"]  # declared by the strategy, listed by `avbench list`
    assert main(["list", "strategies", "--presets"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("uavm "))
    assert presets and all(name in line for name in presets)


def test_every_interval_written_is_clipped_to_its_metric_range():
    """A t-interval over 2-3 seeds runs past 0 or 100%: every document clips it where it is written."""
    from avbench.metrics.stats import mean_std_ci

    acc = mean_std_ci([0.10, 0.40])  # t(0.975, 1) = 12.7: the raw interval is about [-1.66, 2.16]
    rate = mean_std_ci([100.0, 3000.0])
    assert acc["ci_low"] < 0 < 1 < acc["ci_high"] and rate["ci_low"] < 0
    summary = results._clean({"summary": {"fusion/acc": acc, "eval_clips_per_s": rate}})["summary"]
    doc = {"summary": summary}
    results._clip_intervals("run_summary", doc)
    assert (doc["summary"]["fusion/acc"]["ci_low"], doc["summary"]["fusion/acc"]["ci_high"]) == (0.0, 1.0)
    assert doc["summary"]["eval_clips_per_s"]["ci_low"] == 0.0
    assert doc["summary"]["eval_clips_per_s"]["ci_high"] == pytest.approx(rate["ci_high"])  # no upper bound
    assert doc["summary"]["fusion/acc"]["mean"] == pytest.approx(0.25)  # only the interval changes
    rep = {"rows": [{"primary": "acc", "cells": {"fusion": acc, "audio": mean_std_ci([0.5])}}]}
    results._clip_intervals("report", rep)
    assert (rep["rows"][0]["cells"]["fusion"]["ci_low"], rep["rows"][0]["cells"]["fusion"]["ci_high"]) == (0.0, 1.0)
