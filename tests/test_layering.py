"""The import graph of avbench and the built-in strategies: no cycle, and every import points down.

The layers are DESIGN.md's ("Layers (what may import what)"), encoded below; an import written
inside a function counts like one at the top of a module, since it ties the two modules just the
same. A module may import modules of its own layer or lower ones. A new module must be placed in
the table, so its layer is a decision, not an accident. The graph is read from the source with
``ast`` (nothing is imported), so the test takes well under a second.
"""

from __future__ import annotations

import ast
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = {"avbench": REPO / "avbench", "avbench_strategies": REPO / "strategies"}

# DESIGN.md's layer table; each entry names a module or a package (and so everything in it). The most
# specific entry wins. Beyond DESIGN.md's names: fsguard, locks and provenance are L0 utilities (they
# import only errors); extract is L1 (raw media -> cache, beside the cache it writes); publish is L3
# (sends records to tracking); seed and artifacts are runner's parts (L4); testing is the plugin kit (L4).
LAYERS: dict[int, tuple[str, ...]] = {
    0: ("avbench", "avbench.api", "avbench.errors", "avbench.config", "avbench.paths", "avbench.log",
        "avbench.fsguard", "avbench.locks", "avbench.provenance", "avbench._build_stamp", "avbench.profile"),
    1: ("avbench.cache", "avbench.datasets", "avbench.metrics", "avbench.nn", "avbench.hardware", "avbench.extract"),
    2: ("avbench.train",),
    3: ("avbench.registry", "avbench_strategies", "avbench.tracking", "avbench.record", "avbench.results",
        "avbench.config_file", "avbench.authors_checkpoint", "avbench.publish"),
    4: ("avbench.runner", "avbench.resolve", "avbench.seed", "avbench.artifacts", "avbench.evaluation",
        "avbench.tune", "avbench.sweep", "avbench.sweep_grid", "avbench.bench", "avbench.analysis", "avbench.report",
        "avbench.executor", "avbench.testing"),
    5: ("avbench.cli", "avbench.commands", "avbench.__main__"),
}


def modules() -> dict[str, Path]:
    out = {}
    for name, root in PACKAGES.items():
        for path in root.rglob("*.py"):
            rel = path.relative_to(root).with_suffix("").parts
            parts = [name, *rel] if rel[-1] != "__init__" else [name, *rel[:-1]]
            out[".".join(parts)] = path
    return out


def import_graph(mods: dict[str, Path]) -> dict[str, dict[str, int]]:
    """``{module: {imported module: line}}`` for imports of modules in ``mods``, wherever written."""

    def owner(target: str) -> str | None:
        while target and target not in mods:
            target = target.rpartition(".")[0]
        return target or None

    graph: dict[str, dict[str, int]] = {}
    for mod, path in mods.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        edges: dict[str, int] = {}
        with warnings.catch_warnings():  # a module's own string-escape warnings are not this test's business
            warnings.simplefilter("ignore")
            tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                targets = [f"{base}.{a.name}" for a in node.names] + [base]
            else:
                continue
            for t in targets:
                o = owner(t)
                # A module's own package (its __init__) is where it lives, not something it depends on.
                if o and o != mod and o != package and not (mod.startswith(o + ".") and mods[o].name == "__init__.py"):
                    edges.setdefault(o, node.lineno)
        graph[mod] = edges
    return graph


def layer(mod: str) -> int | None:
    best: tuple[int, int] | None = None
    for level, names in LAYERS.items():
        for n in names:
            if (mod == n or mod.startswith(n + ".")) and (best is None or len(n) > best[1]):
                best = (level, len(n))
    return None if best is None else best[0]


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(graph[root]))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(graph[w])))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    x = stack.pop()
                    on.discard(x)
                    comp.append(x)
                    if x == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def test_every_module_has_a_layer():
    unplaced = sorted(m for m in modules() if layer(m) is None)
    assert not unplaced, f"place these modules in LAYERS (tests/test_layering.py) and DESIGN.md: {unplaced}"


def test_no_import_cycle():
    found = cycles(import_graph(modules()))
    assert not found, "import cycles: " + "; ".join(" -> ".join(c) for c in found)


def test_imports_point_down_the_layers():
    mods = modules()
    up = [f"{mods[m].relative_to(REPO)}:{line}: {m} (L{layer(m)}) imports {t} (L{layer(t)})"
          for m, edges in import_graph(mods).items() for t, line in edges.items()
          if layer(m) is not None and layer(t) is not None and layer(t) > layer(m)]
    assert not up, "imports pointing up the layers:\n" + "\n".join(sorted(up))


def test_the_checker_sees_a_cycle_and_an_upward_import():
    graph = {"avbench.api": {"avbench.tune": 3}, "avbench.tune": {"avbench.api": 1}, "avbench.cli": {}}
    assert cycles(graph) == [["avbench.api", "avbench.tune"]]
    assert layer("avbench.api") == 0 and layer("avbench.tune.study") == 4 and layer("avbench_strategies.uavm") == 3
    assert cycles({"a": {"b": 1}, "b": {}}) == []
