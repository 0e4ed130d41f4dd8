"""Which rows may be compared, which differences are called, chance levels, and rows that are one
configuration under two names.

Why a ``Families`` object: the Holm correction is over every pair of one table column, and each
family's bootstrap is costly, so a report computes it once and every table and matrix reads the same
verdicts. The cache lives in the object a report makes (keyed by row numbers, unique in one report),
never in a module-level dict, so two reports never share or clear each other's verdicts.
"""

from __future__ import annotations

import json
import math
from typing import Any

from avbench import results
from avbench.report import significance as sig
from avbench.report.gather import RowInfo
from avbench.report.table import COLUMNS


def comparable_groups(infos: list[RowInfo]) -> list[list[RowInfo]]:
    """Rows that may be compared: same protocol, same cache, same primary metric."""
    groups: dict[tuple[str, str, str], list[RowInfo]] = {}
    for r in infos:
        groups.setdefault((r.row.protocol, r.cache_key, r.row.primary), []).append(r)
    return [groups[k] for k in sorted(groups)]


class Families:
    """Holm-corrected verdicts per (rows of one table column, column), computed once per report."""

    def __init__(self, n_boot: int | None = None):
        self.n_boot = n_boot
        self._cache: dict[tuple[tuple[int, ...], str], dict[tuple[int, int], sig.Verdict]] = {}

    def family(self, rows: list[RowInfo], col: str) -> dict[tuple[int, int], sig.Verdict]:
        """Holm-corrected verdicts of every pair of ``rows`` (one table's rows that have ``col``)."""
        key = (tuple(r.index for r in rows), col)
        if key not in self._cache:
            items = {r.index: (r.row.cells[col], r.scores.get(col), r.ids) for r in rows}
            labels = next((r.labels for r in rows if r.labels is not None), None)
            self._cache[key] = sig.compare_family(items, labels, rows[0].row.primary, self.n_boot)
        return self._cache[key]

    def verdict(self, a: RowInfo, b: RowInfo, col: str, rows: list[RowInfo]) -> sig.Verdict:
        """Row ``a`` against row ``b`` within the family ``rows`` (which holds both)."""
        return self.family(rows, col)[(a.index, b.index)]


def best_marks(group: list[RowInfo], n_boot: int | None, families: Families | None = None) -> dict[tuple[int, str], str]:
    """Per (row index, column): ★ best; † below the best, called and intervals apart; ‡ called though
    the intervals overlap. Calls are Holm-corrected over every pair of ``group`` in that column."""
    fam = families or Families(n_boot)
    marks: dict[tuple[int, str], str] = {}
    for col in COLUMNS:
        have = [r for r in group if col in r.row.cells and finite(r.row.cells[col]["mean"])]
        if len(have) < 2:
            continue
        best = max(have, key=lambda r: (r.row.cells[col]["mean"], -r.index))
        marks[(best.index, col)] = "★"
        for r in have:
            if r is best:
                continue
            v = fam.verdict(r, best, col, have)
            if v.sign < 0:
                marks[(r.index, col)] = "†" if v.apart else "‡"
    return marks


def finite(x: Any) -> bool:
    return x is not None and math.isfinite(x)


def is_number(x: Any) -> bool:
    try:
        float(x)
        return True
    except (TypeError, ValueError):
        return False


def chance_levels(group: list[RowInfo]) -> dict[str, float | None]:
    """Per column, the chance level of the group's primary metric on its test split."""
    primary = group[0].row.primary
    labels = next((r.labels for r in group if r.labels is not None), None)
    classes = next((int(float(r.params[k])) for r in group for k in ("num_classes", "data.classes")
                    if is_number(r.params.get(k))), None)
    level = results.chance_level(primary, labels=labels, num_classes=classes)
    return {c: level for c in COLUMNS}


def _param_value(v: str) -> Any:
    """An MLflow param string back to what ``--set`` accepts (lists were logged as JSON)."""
    if v.startswith(("[", "{")):
        try:
            return json.loads(v)
        except json.JSONDecodeError:
            return v
    return v


def canonical_key(r: RowInfo) -> str | None:
    """A key equal for rows that build the same model and train and test it the same way: the
    strategy's ``canonical_config`` of the row's config, with the recipe, data, cache and protocol.
    None when the strategy cannot be loaded (its config cannot be read back then)."""
    import dataclasses

    from avbench import config as cfgmod
    from avbench import registry

    target = r.params.get("strategy_target") or r.row.strategy
    try:
        cls = registry.load_strategy(target)
        raw = {k[len("model."):]: _param_value(v) for k, v in r.params.items() if k.startswith("model.")}
        cfg = cls.canonical_config(cfgmod.apply_overrides(cls.Config(), raw, where=f"row {r.short}"))
    except Exception:  # a plugin that is gone, or params from an older config: never merge those
        return None
    rest = {k: v for k, v in r.params.items() if k.startswith(("train.", "data."))}
    return json.dumps([cls.name, dataclasses.asdict(cfg), rest, r.cache_key, r.row.protocol,
                       r.params.get("train_modality", ""), r.row.primary], sort_keys=True, default=str)


def merge_identical(infos: list[RowInfo]) -> dict[int, RowInfo]:
    """Rows with equal ``canonical_key``: the one with most seeds (then the lowest number) is shown,
    the others map to it."""
    groups: dict[str, list[RowInfo]] = {}
    for r in infos:
        key = canonical_key(r)
        if key is not None:
            groups.setdefault(key, []).append(r)
    merged: dict[int, RowInfo] = {}
    for rows in groups.values():
        keep = min(rows, key=lambda r: (-len(r.seeds), r.index))
        merged.update({r.index: keep for r in rows if r is not keep})
    return merged



def set_fields(r: RowInfo) -> dict[str, str] | None:
    """The row's model fields that differ from its strategy's defaults (set by ``--set``, a preset, a
    config file, the dataset card or tuning), as logged; None when the strategy cannot be loaded."""
    from avbench import config as cfgmod
    from avbench import registry

    target = r.params.get("strategy_target") or r.row.strategy
    try:
        cls = registry.load_strategy(target)
        default = cls.Config()
        out = {}
        for k, v in sorted(r.params.items()):
            if not k.startswith("model."):
                continue
            name = k[len("model."):]
            got = cfgmod.apply_overrides(cls.Config(), {name: _param_value(v)}, where=f"row {r.short}")
            if getattr(got, name) != getattr(default, name):
                out[name] = v
        return out
    except Exception:  # a plugin that is gone, or params from an older config
        return None
