"""Provenance survives installation: an installed (non-editable) copy of a git checkout still knows its
commit (stamped by the build step), a checkout reads git live, and a ``pip install git+URL`` install is
known by PEP 610's ``direct_url.json``."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from avbench import provenance

ROOT = Path(__file__).resolve().parents[1]
GIT = ["git", "-c", "user.email=test@example.com", "-c", "user.name=test"]


def _clone(tmp_path: Path) -> tuple[Path, str]:
    """A clone of this repository's HEAD with the provenance files as they are in this tree."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs git and a git checkout of avbench")
    src = tmp_path / "src"
    subprocess.run(["git", "clone", "-q", "--no-hardlinks", str(ROOT), str(src)], check=True)
    # The files under test, as in this working tree (committed or not); the rest is HEAD's.
    for rel in ("avbench/provenance.py", "avbench/_build_stamp.py"):
        shutil.copy(ROOT / rel, src / rel)
    py = (src / "pyproject.toml").read_text()
    assert "_build_stamp" in py, "pyproject.toml at HEAD lost the build stamp hook (cmdclass build_py)"
    subprocess.run([*GIT, "add", "-A"], cwd=src, check=True)
    subprocess.run([*GIT, "commit", "-q", "--allow-empty", "-m", "test"], cwd=src, check=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=src, capture_output=True, text=True, check=True)
    return src, head.stdout.strip()


def _source_of(site: Path, cwd: Path) -> dict:
    """``provenance.source()`` as seen by a fresh interpreter importing avbench from ``site`` only."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import json, avbench.provenance as p; "
            "assert p.__file__.startswith(sys.argv[1]), p.__file__; print(json.dumps(p.source()))")
    out = subprocess.run([sys.executable, "-c", code, str(site)], cwd=cwd, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def _has_bdist_wheel() -> bool:
    import setuptools

    major, minor = (int(x) for x in setuptools.__version__.split(".")[:2])
    return (major, minor) >= (70, 1) or importlib.util.find_spec("wheel") is not None


@pytest.mark.slow
def test_installed_copy_knows_its_commit(tmp_path):
    src, head = _clone(tmp_path)
    site = tmp_path / "site"
    if _has_bdist_wheel():  # a real non-editable install, as a user runs it
        cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
               "--target", str(site), str(src)]
    else:  # the same build step (setuptools' build_py from pyproject.toml) into a folder: what a wheel holds
        cmd = [sys.executable, "-c", "from setuptools import setup; setup()", "build_py", "--build-lib", str(site)]
    out = subprocess.run(cmd, cwd=src, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads((site / "avbench" / provenance.BUILD_INFO).read_text()) == {"commit": head, "dirty": False}
    shutil.rmtree(src)  # no checkout left anywhere to read git from
    got = _source_of(site, tmp_path)
    assert got == {"commit": head, "dirty": False, "source": "build"}


@pytest.mark.slow
def test_checkout_reads_git_live_over_a_stale_stamp(tmp_path):
    src, head = _clone(tmp_path)
    (src / "avbench" / provenance.BUILD_INFO).write_text(json.dumps({"commit": "0" * 40, "dirty": False}))
    assert _source_of(src, tmp_path) == {"commit": head, "dirty": False, "source": "checkout"}
    with open(src / "avbench" / "__init__.py", "a") as f:
        f.write("# local edit\n")
    assert _source_of(src, tmp_path) == {"commit": head, "dirty": True, "source": "checkout"}


def test_site_packages_inside_another_repository_is_not_a_checkout(tmp_path):
    """A virtualenv inside some git repository: that repository's HEAD is not avbench's commit."""
    if shutil.which("git") is None:
        pytest.skip("needs git")
    repo = tmp_path / "other"
    pkg = repo / "venv" / "lib" / "site-packages" / "avbench"
    pkg.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / "x.txt").write_text("x")
    subprocess.run([*GIT, "add", "x.txt"], cwd=repo, check=True)
    subprocess.run([*GIT, "commit", "-q", "-m", "x"], cwd=repo, check=True)
    assert provenance._from_checkout(pkg.resolve()) is None
    (pkg / provenance.BUILD_INFO).write_text(json.dumps({"commit": "a" * 40, "dirty": True}))
    assert provenance.source(pkg.resolve()) == {"commit": "a" * 40, "dirty": True, "source": "build"}


def test_a_reports_own_output_directory_does_not_make_the_checkout_dirty(tmp_path):
    """Regenerating a committed report rewrites its figures before the report asks whether the code is
    committed; that alone must not print "made from uncommitted code"."""
    if shutil.which("git") is None:
        pytest.skip("needs git")
    repo = tmp_path / "repo"
    (repo / "reports" / "synth").mkdir(parents=True)
    (repo / "code.py").write_text("x = 1\n")
    (repo / "reports" / "synth" / "fig.svg").write_text("<svg/>")
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run([*GIT, "add", "."], cwd=repo, check=True)
    subprocess.run([*GIT, "commit", "-q", "-m", "x"], cwd=repo, check=True)
    (repo / "reports" / "synth" / "fig.svg").unlink()
    out = str(repo / "reports" / "synth")
    assert provenance.git_state_at(repo)[1] is True
    assert provenance.git_state_at(repo, (out,))[1] is False
    assert provenance.git_state_at(repo, (str(tmp_path / "elsewhere"),))[1] is True  # outside: ignored
    (repo / "code.py").write_text("x = 2\n")
    assert provenance.git_state_at(repo, (out,))[1] is True  # code changes still count


def test_results_provenance_passes_the_ignored_paths_to_the_dirty_check(monkeypatch):
    """report.json's git_dirty asks the same question as the report's warning (its output left out)."""
    from avbench import results

    asked = []

    def fake(pkg=None, ignore=()):
        asked.append(ignore)
        return {"commit": "c" * 40, "dirty": bool(not ignore), "source": "checkout"}

    monkeypatch.setattr(results._prov, "source", fake)
    assert results.provenance(dirty_ignore=("/repo/reports/synth",))["git_dirty"] is False
    assert results.provenance()["git_dirty"] is True
    assert asked == [("/repo/reports/synth",), ()]


def test_direct_url_vcs_info(tmp_path, monkeypatch):
    """``pip install git+URL`` records the commit in PEP 610's direct_url.json."""

    class Dist:
        def read_text(self, name):
            assert name == "direct_url.json"
            return json.dumps({"url": "https://example.com/avbench.git",
                               "vcs_info": {"vcs": "git", "commit_id": "b" * 40}})

    monkeypatch.setattr(provenance.md, "distribution", lambda name: Dist())
    assert provenance._from_direct_url() == {"commit": "b" * 40, "dirty": False, "source": "direct_url"}


def test_environment_names_the_machine():
    env = provenance.environment()
    assert env["hostname"] and env["cpu"]["model"] and env["cpu"]["cores"] >= 1
    assert set(env["cpu"].get("flags", [])) <= set(provenance.CPU_FLAGS)
    assert isinstance(env["gpus"], list)
    assert {"torch", "numpy", "mlflow", "optuna", "scikit-learn"} <= set(env)
    tags = provenance.mlflow_tags()
    assert tags["avbench.host.name"] == env["hostname"]


def test_provenance_imports_nothing_heavy():
    code = ("import sys, avbench.provenance as p; p.environment(); p.source(); "
            "print(','.join(m for m in ('torch', 'numpy', 'mlflow', 'sklearn') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == ""
