"""The dataset card: the harness's description of one dataset.

A card names the task, carries recipe defaults that suit the dataset (UAVM uses lr 5e-5 on VGGSound
and 1e-5 on AudioSet), may recommend strategy settings (CPU-sized widths on ``synth``), and knows
where its cache lives. Embedded datasets generate their cache; real ones are extracted or imported
into it (``avbench extract``, ``avbench cache import-uavm``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from avbench.errors import UserError


@dataclass
class NoKnobs:
    """Cards without generation knobs."""


class DatasetCard:
    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    task: ClassVar[str] = "multiclass"
    Knobs: ClassVar[type] = NoKnobs  # dataclass; fields settable with --set data.<field>=value
    # Recipe defaults for this dataset (applied before the user's --set).
    recipe_defaults: ClassVar[dict[str, Any]] = {}
    # Recommended strategy settings: {"*": {...}, "<strategy name>": {...}}; only fields a strategy has apply.
    strategy_defaults: ClassVar[dict[str, dict[str, Any]]] = {}

    def cache_dir(self, cache_root: Path, knobs: Any) -> Path:
        """Where this dataset's cache is expected under the cache root."""
        return cache_root / self.name

    def prepare(self, cache_root: Path, knobs: Any, progress: bool = True) -> Path:
        """Return the path of a finished cache for this dataset, building it if the card can."""
        path = self.cache_dir(cache_root, knobs)
        if (path / "manifest.json").exists():
            return path
        raise UserError(
            f"no cache for dataset '{self.name}' at {path}: create it with "
            f"'avbench extract --dataset {self.name} --media-root DIR --out {path}' or "
            f"'avbench cache import-uavm ... --out {path}', or pass --cache PATH")

    def strategy_overrides(self, strategy_name: str, config_fields: set[str]) -> dict[str, Any]:
        merged = {**self.strategy_defaults.get("*", {}), **self.strategy_defaults.get(strategy_name, {})}
        return {k: v for k, v in merged.items() if k in config_fields}
