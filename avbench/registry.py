"""Strategy and dataset registries built on entry points, resolved lazily.

Built-ins and third-party plugins register the same way (the ``avbench.strategies`` and
``avbench.datasets`` entry-point groups), so the harness never imports a strategy by name. Listing
reads only entry-point metadata (``avbench list`` imports neither torch nor any plugin); a plugin is
imported when it is requested, and a plugin that fails to import fails then, with its package named.
A loaded strategy class is checked against the interface (``api.contract_problem``: both abstract
methods implemented, a name, a dataclass Config) before anything runs. Two packages registering one
name is refused when that name is requested, naming both: there is no silent "first found wins".
``package.module:Class`` works without registering, and is how to pick one of two conflicting plugins.

``avbench.api`` and the dataset base are imported inside the loaders on purpose: they import torch,
and ``avbench list`` (which reads only this module's metadata) must start without it.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import importlib.metadata as md
from typing import Any

from avbench.errors import PluginImportError, UserError

STRATEGY_GROUP = "avbench.strategies"
DATASET_GROUP = "avbench.datasets"


@dataclasses.dataclass(frozen=True)
class Entry:
    name: str
    target: str  # "module:attr"
    origin: str  # the distribution that registered it, e.g. "avbench 0.1.0"
    others: tuple[str, ...] = ()  # "<origin> (<target>)" of other packages registering the same name


class Registry:
    def __init__(self, group: str, kind: str):
        self.group = group
        self.kind = kind

    def entries(self) -> dict[str, Entry]:
        """Every registered name; a name two packages register carries the other(s) in ``others``."""
        found: dict[str, list[Entry]] = {}
        for ep in md.entry_points(group=self.group):
            dist = getattr(ep, "dist", None)
            origin = f"{dist.metadata['Name']} {dist.version}" if dist is not None else "unknown"
            same = found.setdefault(ep.name, [])
            if not any(e.target == ep.value and e.origin == origin for e in same):  # one package seen twice
                same.append(Entry(ep.name, ep.value, origin))
        out = {name: (es[0] if len(es) == 1 else
                      Entry(name, es[0].target, es[0].origin, tuple(f"{e.origin} ({e.target})" for e in es[1:])))
               for name, es in found.items()}
        return dict(sorted(out.items()))

    def names(self) -> list[str]:
        return list(self.entries())

    def load(self, name: str) -> Any:
        """The class for ``name`` (a registered name or ``package.module:Class``)."""
        if ":" in name:
            return _import_target(name, origin=f"module path {name}")
        entries = self.entries()
        if name not in entries:
            close = difflib.get_close_matches(name, list(entries), n=3, cutoff=0.5)
            hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            known = f" (known: {', '.join(entries) or 'none'})" if not close else ""
            raise UserError(f"unknown {self.kind} '{name}'{hint}{known}")
        e = entries[name]
        if e.others:
            both = " and ".join([f"{e.origin} ({e.target})", *e.others])
            raise UserError(f"{self.kind} '{name}' is registered by more than one package: {both}; uninstall "
                            f"one, or name the class itself (e.g. --strategy {e.target})")
        return _import_target(e.target, origin=f"package {e.origin}")

    def origin(self, name: str) -> str:
        if ":" in name:
            return name
        e = self.entries().get(name)
        return f"{e.origin} ({e.target})" if e else "unknown"


def _import_target(target: str, origin: str) -> Any:
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise UserError(f"'{target}' is not of the form package.module:Class")
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # a broken plugin must only break itself
        raise PluginImportError(f"cannot import {module_name} from {origin}: {type(e).__name__}: {e}") from e
    try:
        obj = module
        for part in attr.split("."):
            obj = getattr(obj, part)
    except AttributeError:
        raise PluginImportError(f"{module_name} has no attribute '{attr}' ({origin})") from None
    return obj


strategies = Registry(STRATEGY_GROUP, "strategy")
datasets = Registry(DATASET_GROUP, "dataset")


def load_strategy(name: str) -> type:
    """The strategy class registered as ``name`` (or ``package.module:Class``), checked against the
    interface: a class missing ``training_step`` or ``predict`` is refused here in one line."""
    from avbench.api import Strategy, contract_problem  # torch: see the module docstring

    cls = strategies.load(name)
    if not (isinstance(cls, type) and issubclass(cls, Strategy)):
        raise UserError(f"'{name}' is not an avbench.api.Strategy subclass")
    problem = contract_problem(cls)
    if problem:
        raise UserError(problem)
    return cls


def load_dataset(name: str) -> Any:
    from avbench.datasets.base import DatasetCard  # numpy and the cache: see the module docstring

    cls = datasets.load(name)
    if not (isinstance(cls, type) and issubclass(cls, DatasetCard)):
        raise UserError(f"'{name}' is not an avbench.datasets.base.DatasetCard subclass")
    return cls()


def preset(strategy_cls: type, name: str | None) -> dict[str, Any]:
    """The ``{Config field: value}`` of the strategy's preset ``name`` ({} for None); a clear error
    naming the presets there are when it has no such preset or the preset sets an unknown field."""
    if name is None:
        return {}
    presets = dict(getattr(strategy_cls, "presets", {}) or {})
    if name not in presets:
        known = ", ".join(sorted(presets)) or "none"
        close = difflib.get_close_matches(name, list(presets), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise UserError(f"--preset {name}: {strategy_cls.name} has no such preset (presets: {known}){hint}")
    fields = {f.name for f in dataclasses.fields(strategy_cls.Config)}
    bad = sorted(set(presets[name]) - fields)
    if bad:
        raise UserError(f"preset '{name}' of {strategy_cls.name} sets unknown field(s): {', '.join(bad)}")
    return dict(presets[name])
