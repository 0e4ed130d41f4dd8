"""Build step: stamp the git commit into the built package (``avbench/_build_info.json``).

Why: an installed copy (``pip install .``, ``pip install git+URL``, a wheel) has no ``.git``, so
``avbench.provenance`` could not say which commit produced a result. setuptools runs this ``build_py``
(``[tool.setuptools] cmdclass`` in pyproject.toml) and it writes the commit and dirty flag of the
checkout being built into the build directory, never into the source tree. Editable installs are
left alone: they run from the checkout, where provenance reads git directly.

Loaded by setuptools from its file (not imported as part of the avbench package), so it may use the
standard library and setuptools only.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from setuptools.command.build_py import build_py

BUILD_INFO = "_build_info.json"  # avbench.provenance.BUILD_INFO


def _git(args: list[str], where: Path) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=where, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def stamp(source_root: Path) -> dict | None:
    """``{"commit", "dirty"}`` of the git checkout at ``source_root``; None when it is not one."""
    top = _git(["rev-parse", "--show-toplevel"], source_root)
    if not top or Path(top).resolve() != source_root.resolve():
        return None  # an unpacked sdist inside some other repository is not this checkout
    commit = _git(["rev-parse", "HEAD"], source_root)
    if not commit:
        return None
    status = _git(["status", "--porcelain", "--untracked-files=no"], source_root)
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


class BuildPy(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        info = stamp(Path.cwd())
        if info is None:
            return
        target = Path(self.build_lib) / "avbench" / BUILD_INFO
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(info, sort_keys=True) + "\n")
        self._stamped = str(target)

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        out = list(super().get_outputs(include_bytecode))
        stamped = getattr(self, "_stamped", None)
        return out + [stamped] if stamped and stamped not in out else out
