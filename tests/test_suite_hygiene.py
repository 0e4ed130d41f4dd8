"""The test suite keeps its own rules (tests/README.md): every test function checks something, and no
test turns a missing piece of avbench (or of a core dependency) into a skip. Read from the source with
``ast``; nothing is imported or run."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent
# What a test may skip over: optional externals only, never avbench itself or a core dependency.
OPTIONAL = {"ray"}
CHECKS = {"raises", "warns", "fail", "deprecated_call"}


def _trees() -> dict[Path, ast.Module]:
    return {p: ast.parse(p.read_text()) for p in sorted(TESTS.glob("*.py"))}


def _checks_directly(fn: ast.AST) -> bool:
    for n in ast.walk(fn):
        if isinstance(n, ast.Assert):
            return True
        if isinstance(n, ast.Attribute) and n.attr in CHECKS:
            return True
        if isinstance(n, ast.Call):  # torch.testing.assert_close, np.testing.assert_allclose, ...
            name = n.func.id if isinstance(n.func, ast.Name) else getattr(n.func, "attr", "")
            if name.startswith("assert"):
                return True
    return False


def test_every_test_function_asserts_or_calls_a_helper_that_does():
    trees = _trees()
    functions = [n for t in trees.values() for n in ast.walk(t) if isinstance(n, ast.FunctionDef)]
    asserting: set[str] = set()
    grew = True
    while grew:  # helpers that assert, helpers that call those, ...
        grew = False
        for fn in functions:
            if fn.name in asserting:
                continue
            called = {c.func.id if isinstance(c.func, ast.Name) else getattr(c.func, "attr", None)
                      for c in ast.walk(fn) if isinstance(c, ast.Call)}
            if _checks_directly(fn) or called & asserting:
                asserting.add(fn.name)
                grew = True
    silent = [f"{p.name}:{fn.lineno} {fn.name}" for p, t in trees.items() for fn in ast.walk(t)
              if isinstance(fn, ast.FunctionDef) and fn.name.startswith("test") and fn.name not in asserting]
    assert silent == [], f"test functions that check nothing: {silent}"


def test_importorskip_is_only_for_optional_externals():
    found = []
    for p, t in _trees().items():
        for c in ast.walk(t):
            if isinstance(c, ast.Call) and getattr(c.func, "attr", None) == "importorskip":
                arg = c.args[0].value if c.args and isinstance(c.args[0], ast.Constant) else "?"
                if arg.split(".")[0] not in OPTIONAL:
                    found.append(f"{p.name}:{c.lineno} importorskip({arg!r})")
    assert found == [], f"a missing module of avbench or a core dependency must fail, not skip: {found}"
