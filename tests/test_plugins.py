"""Third-party strategies: an installed package registering through the entry-point group, a
``module:Class`` path, and a broken plugin that fails only when requested."""

import json
import textwrap

import pytest

from avbench import registry
from avbench.cli import main
from helpers import run_args

PLUGIN_SOURCE = textwrap.dedent('''
    """A minimal third-party strategy: mean-pooled features, one linear head per modality."""
    from dataclasses import dataclass

    import torch
    from torch import nn

    from avbench.api import Capabilities, Strategy


    @dataclass
    class PoolConfig:
        hidden: int = 8


    class MeanPool(Strategy):
        name = "meanpool"
        Config = PoolConfig
        capabilities = Capabilities()

        def __init__(self, cfg, features, task):
            super().__init__(cfg, features, task)
            self.a = nn.Sequential(nn.Linear(features.audio_dim, cfg.hidden), nn.ReLU(), nn.Linear(cfg.hidden, task.num_classes))
            self.v = nn.Sequential(nn.Linear(features.video_dim, cfg.hidden), nn.ReLU(), nn.Linear(cfg.hidden, task.num_classes))

        def training_step(self, batch, step):
            loss = self.loss_fn(self.a(batch.audio.mean(1)), batch.targets) + self.loss_fn(self.v(batch.video.mean(1)), batch.targets)
            return {"loss": loss}

        def predict(self, audio, video):
            outs = ([self.a(audio.mean(1))] if audio is not None else []) + ([self.v(video.mean(1))] if video is not None else [])
            return torch.stack(outs).mean(0)
''')


def install_fake_dist(site, name, version, entry_points, files):
    """Lay out a package exactly as pip installs it: the modules plus NAME-VERSION.dist-info/."""
    for rel, text in files.items():
        p = site / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"  # pip normalises the folder name
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(entry_points)


@pytest.fixture
def site(tmp_path, monkeypatch):
    site = tmp_path / "site"
    install_fake_dist(site, "avbench-meanpool", "0.3", "[avbench.strategies]\nmeanpool = meanpool_plugin:MeanPool\n",
                      {"meanpool_plugin/__init__.py": PLUGIN_SOURCE})
    install_fake_dist(site, "broken-plugin", "1.2",
                      "[avbench.strategies]\nbroken = broken_plugin.model:Broken\n",
                      {"broken_plugin/__init__.py": "", "broken_plugin/model.py": "import not_a_real_dependency_xyz\n"})
    monkeypatch.syspath_prepend(str(site))
    return site


@pytest.mark.slow
def test_entry_point_plugin_runs_end_to_end(site, tmp_path, capsys):
    assert "meanpool" in registry.strategies.names()
    assert main(["list", "strategies"]) == 0
    out = capsys.readouterr().out
    assert "avbench-meanpool 0.3" in out and "broken-plugin 1.2" in out  # listing imports nothing
    out_json = tmp_path / "s.json"
    assert main(run_args("meanpool", tmp_path / "res", "--set", "hidden=4", "--output-json", str(out_json),
                         model_sets=())) == 0
    summary = json.loads(out_json.read_text())
    assert summary["strategy"] == "meanpool" and summary["config"] == {"hidden": 4}
    assert 0 <= summary["summary"]["fusion/acc"]["mean"] <= 1


@pytest.mark.slow
def test_module_class_path_runs_end_to_end(site, tmp_path):
    out_json = tmp_path / "s.json"
    assert main(run_args("meanpool_plugin:MeanPool", tmp_path / "res", "--output-json", str(out_json), model_sets=())) == 0
    assert json.loads(out_json.read_text())["strategy"] == "meanpool"


def test_broken_plugin_fails_only_when_requested_and_names_its_package(site, tmp_path, capsys):
    assert registry.load_strategy("uavm").name == "uavm"  # other plugins are unaffected
    assert main(run_args("broken", tmp_path / "res")) == 2
    err = capsys.readouterr().err
    assert "broken-plugin 1.2" in err and "not_a_real_dependency_xyz" in err and "Traceback" not in err


def test_module_path_errors(tmp_path, capsys):
    assert main(run_args("no_such_module_abc:Thing", tmp_path / "res")) == 2
    assert "cannot import no_such_module_abc" in capsys.readouterr().err
    assert main(run_args("avbench.api:Batch", tmp_path / "res")) == 2
    assert "not an avbench.api.Strategy subclass" in capsys.readouterr().err
