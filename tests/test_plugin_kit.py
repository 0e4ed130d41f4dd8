"""The plugin kit: every registered strategy passes the contract (``avbench.testing.check_strategy``,
parametrised like timm's test_models), and a broken plugin is refused in one line before anything
runs: a class missing ``predict``, a name two packages register, a capability claimed dishonestly."""

from __future__ import annotations

import pytest

from avbench import registry
from avbench.cli import main
from avbench.errors import UserError
from avbench.testing import ContractError, check_strategy, strategy_names
from helpers import run_args
from test_plugins import PLUGIN_SOURCE, install_fake_dist


@pytest.mark.parametrize("name", strategy_names())
def test_every_registered_strategy_follows_the_contract(name):
    report = check_strategy(name)
    assert report.ok and report.passed == ["class", "config", "train", "predict", "capabilities", "determinism",
                                           "state_dict"]


def test_a_class_missing_predict_is_refused_at_load_in_one_line_before_any_run(tmp_path, capsys):
    with pytest.raises(UserError, match=r"kit_plugins\.NoPredict does not implement predict"):
        registry.load_strategy("kit_plugins:NoPredict")
    res = tmp_path / "res"
    assert main(run_args("kit_plugins:NoPredict", res)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "does not implement predict" in err and "Traceback" not in err
    assert not (res / "mlflow.db").exists() and not (res / "runs").exists()  # refused before any run exists
    with pytest.raises(ContractError, match="does not implement predict"):
        check_strategy("kit_plugins:NoPredict")


def test_a_capability_claimed_dishonestly_fails_the_capabilities_check():
    report = check_strategy("kit_plugins:Dishonest", raise_on_failure=False)
    assert not report.ok and set(report.failed) == {"capabilities"}
    assert "audio_only" in report.failed["capabilities"]


def test_a_name_two_packages_register_is_refused_naming_both(tmp_path, monkeypatch, capsys):
    site = tmp_path / "site"
    install_fake_dist(site, "other-sum", "2.0", "[avbench.strategies]\nsum = meanpool_plugin:MeanPool\n",
                      {"meanpool_plugin/__init__.py": PLUGIN_SOURCE})
    monkeypatch.syspath_prepend(str(site))
    entry = registry.strategies.entries()["sum"]
    assert entry.others  # both registrations are kept, not the first found
    with pytest.raises(UserError) as e:
        registry.load_strategy("sum")
    msg = str(e.value)
    assert "\n" not in msg and "avbench_strategies.baselines:SumFusion" in msg and "other-sum 2.0" in msg
    assert main(["list", "strategies"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("sum "))
    assert "CONFLICT: also" in line and "other-sum 2.0" in line and "avbench" in line
    assert registry.load_strategy("meanpool_plugin:MeanPool").name == "meanpool"  # the way to pick one


def test_check_strategy_command_reports_each_check(capsys):
    assert main(["check-strategy", "sum"]) == 0
    out = capsys.readouterr().out
    assert "ok    state_dict" in out and "sum: follows the contract" in out
    assert main(["check-strategy", "kit_plugins:Dishonest"]) == 1
    assert "FAIL  capabilities" in capsys.readouterr().out
