"""Start-up and exit: ``avbench --help``, ``--version`` and ``avbench list`` start without torch or
sklearn, a run's path imports neither sklearn nor scipy.stats, and the entry point exits without the
interpreter's final collections.

Building the parser imports every command module (avbench/cli.py), so a command that imports a heavy
library at module level, or calls into one to compute a default, slows every invocation (it once
cost ~3.8 s of CPU for ``--help``). Each import case runs in a fresh interpreter and reads ``sys.modules``
afterwards: what was imported, not how long it took (tests never time anything).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "sklearn", "scipy", "pandas", "mlflow", "optuna", "ray")

PROBE = """
import contextlib, io, json, sys
from avbench.cli import build_parser, main
argv = json.loads(sys.argv[1])
out = io.StringIO()
with contextlib.redirect_stdout(out):
    try:
        rc = main(argv) if argv is not None else (build_parser(), 0)[1]
    except SystemExit as e:  # --help and --version exit from argparse
        rc = e.code
print(json.dumps({"rc": rc, "out": out.getvalue(), "heavy": [m for m in json.loads(sys.argv[2]) if m in sys.modules]}))
"""


def _fresh(code: str, *args: str) -> dict:
    """Run ``code`` in a fresh interpreter; its last stdout line, as JSON."""
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _probe(argv: list[str] | None) -> dict:
    return _fresh(PROBE, json.dumps(argv), json.dumps(HEAVY))


@pytest.mark.parametrize("argv", [None, ["--help"], ["--version"], ["list"], ["list", "strategies"],
                                  ["run", "--help"], ["analyze", "--help"], ["extract", "--help"]],
                         ids=lambda a: "build_parser" if a is None else " ".join(a))
def test_the_parser_help_version_and_list_import_no_heavy_library(argv):
    res = _probe(argv)
    assert res["rc"] == 0
    assert res["heavy"] == [], f"avbench {' '.join(argv or [])} imported {res['heavy']}"
    if argv == ["--version"]:
        assert res["out"].startswith("avbench ")
    if argv == ["list"]:
        assert "uavm" in res["out"] and "synth" in res["out"]


def test_the_analyses_named_in_help_are_the_driver_s():
    """analyze's help names the analyses without importing the driver; the two lists stay equal."""
    from avbench.analysis.driver import WHATS
    from avbench.commands.analyze import WHAT_HELP

    assert tuple(WHAT_HELP.split(", ")) == WHATS


def test_a_command_whose_module_is_missing_is_an_error(monkeypatch):
    from avbench import cli

    monkeypatch.setattr(cli, "COMMANDS", (*cli.COMMANDS, "no_such_command"))
    with pytest.raises(ImportError, match="no_such_command"):
        cli.build_parser()


RUN_PATH = """
import json, sys
import avbench.runner, avbench.seed, avbench.train.engine, avbench.train.evaluate, avbench.tracking
from avbench.metrics.stats import mean_std_ci
one = mean_std_ci([0.5])  # one seed (the main job's summary): no interval, so no scipy
print(json.dumps({"one": one["n"], "heavy": [m for m in ("sklearn", "scipy.stats") if m in sys.modules]}))
"""


def test_the_run_path_imports_neither_sklearn_nor_scipy_stats():
    """A run with one seed needs neither: scikit-learn (the heads' F1) and scipy.stats (the t-interval
    over seeds) are imported where they are used, which took a second off every run's start-up."""
    assert _fresh(RUN_PATH) == {"one": 1, "heavy": []}


def test_the_entry_point_exits_with_the_collector_frozen(monkeypatch, capsys):
    """``avbench`` and ``python -m avbench`` return through ``entry``, which freezes the collector's
    objects before the interpreter's teardown (about 2 s of final collections after a run otherwise)."""
    import gc

    from avbench import cli

    monkeypatch.setattr(sys, "argv", ["avbench", "list", "strategies"])
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    try:
        with pytest.raises(SystemExit) as exit_:
            cli.entry()
        assert exit_.value.code == 0
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
    assert "uavm" in capsys.readouterr().out


def test_python_m_avbench_still_flushes_its_output_and_exit_code():
    proc = subprocess.run([sys.executable, "-m", "avbench", "list", "strategies"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "uavm" in proc.stdout and "mbt" in proc.stdout
    unknown = ["run", "--strategy", "no_such_strategy", "--dataset", "synth"]
    bad = subprocess.run([sys.executable, "-m", "avbench", *unknown], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "no_such_strategy" in bad.stderr
