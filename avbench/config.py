"""``--set key=value`` overrides for dataclass configs, with type checking and clear errors.

Every config in avbench (a strategy's ``Config``, the training recipe, dataset knobs) is a plain
dataclass; this module is the only place that turns command-line strings into typed field values.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any

from avbench.errors import UserError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def parse_pairs(items: Iterable[str]) -> dict[str, str]:
    """``["a=1", "b=x"]`` -> ``{"a": "1", "b": "x"}``."""
    out: dict[str, str] = {}
    for item in items:
        if "=" not in item:
            raise UserError(f"--set expects key=value, got '{item}'")
        key, value = item.split("=", 1)
        key = key.strip()
        if not key:
            raise UserError(f"--set expects key=value, got '{item}'")
        out[key] = value.strip()
    return out


SEED_MAX = 2**32 - 1  # numpy's legacy generator (np.random.seed) takes seeds in [0, 2**32 - 1]


def parse_seeds(text: str, flag: str = "--seeds") -> list[int]:
    """``"0,1,2"`` -> ``[0, 1, 2]``: integers in [0, SEED_MAX], no empty item, no duplicate."""
    items = [s.strip() for s in str(text).split(",")]
    if items == [""]:
        raise UserError(f"{flag} is empty")
    if "" in items:
        raise UserError(f"{flag} '{text}': an empty item (two commas, or one at an end)")
    seeds = []
    for item in items:
        try:
            seeds.append(int(item, 10))
        except ValueError:
            raise UserError(f"{flag} expects comma-separated integers, got '{text}'") from None
    for s in seeds:
        if s < 0:
            raise UserError(f"{flag} must be non-negative, got {text}")
        if s > SEED_MAX:
            raise UserError(f"{flag}: {s} is out of the generators' range [0, {SEED_MAX}]")
    if len(set(seeds)) != len(seeds):
        raise UserError(f"{flag} has duplicates: '{text}'")
    return seeds


def field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints.get(f.name, str) for f in dataclasses.fields(cls)}


def coerce(value: Any, typ: Any, key: str) -> Any:
    """Convert ``value`` (usually a string) to ``typ``; raise UserError naming the key on failure."""
    origin = typing.get_origin(typ)
    args = typing.get_args(typ)
    if origin in (typing.Union, types.UnionType):
        if isinstance(value, str) and value.lower() in {"none", "null"} and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg, key)
            except UserError as e:
                errors.append(str(e))
        raise UserError(errors[0] if errors else f"--set {key}: cannot parse '{value}'")
    if origin is typing.Literal:
        for choice in args:
            if str(choice) == str(value):
                return choice
        raise UserError(f"--set {key}: '{value}' is not one of {', '.join(map(str, args))}")
    if origin in (tuple, list):
        items = value if isinstance(value, (list, tuple)) else [v for v in str(value).split(",") if v != ""]
        inner = args[0] if args else str
        converted = [coerce(v, inner, key) for v in items]
        return tuple(converted) if origin is tuple else converted
    if typ is bool:
        if isinstance(value, bool):
            return value
        if str(value).lower() in _TRUE:
            return True
        if str(value).lower() in _FALSE:
            return False
        raise UserError(f"--set {key}: expected a boolean (true/false), got '{value}'")
    if typ in (int, float):
        if isinstance(value, bool):
            raise UserError(f"--set {key}: expected {typ.__name__}, got '{value}'")
        try:
            if typ is int:
                if isinstance(value, float) and not value.is_integer():
                    raise ValueError
                return int(value) if not isinstance(value, str) else int(value, 10)
            return float(value)
        except (TypeError, ValueError):
            raise UserError(f"--set {key}: expected {typ.__name__}, got '{value}'") from None
    if typ is str:
        return str(value)
    if typ is Any:
        return value
    raise UserError(f"--set {key}: unsupported field type {typ}")


def apply_overrides(cfg: Any, overrides: Mapping[str, Any], *, where: str = "config") -> Any:
    """Return a copy of the dataclass ``cfg`` with ``overrides`` applied and type-checked."""
    types_ = field_types(type(cfg))
    changes = {}
    for key, value in overrides.items():
        if key not in types_:
            raise UserError(unknown_key_message(key, types_, where))
        changes[key] = coerce(value, types_[key], key)
    out = dataclasses.replace(cfg, **changes)
    check_ranges(out, where=where, given=overrides)
    return out


# --- value ranges ------------------------------------------------------------------------------------
# A field declares its range once, on the dataclass: ``lr: float = in_range(5e-5, "(0, inf)")`` (or
# ``field(..., metadata={"range": "(0, inf)"})``). ``apply_overrides`` checks every field of the result,
# so plugin configs get the same checking. Fields without a declared range get the conservative rules
# of ``inferred_range`` (floats finite; probabilities, head counts, batch sizes and epochs by name).

RANGE = "range"


@dataclasses.dataclass(frozen=True)
class Range:
    low: float
    high: float
    low_open: bool
    high_open: bool

    @classmethod
    def parse(cls, text: str) -> Range:
        """Interval notation: ``"[0, 1]"``, ``"(0, inf)"``, ``"[1, inf)"``."""
        t = text.replace(" ", "")
        if len(t) < 5 or t[0] not in "[(" or t[-1] not in "])" or "," not in t:
            raise ValueError(f"bad range '{text}' (write e.g. '[0, 1]' or '(0, inf)')")
        lo, hi = t[1:-1].split(",")
        return cls(float(lo), float(hi), t[0] == "(", t[-1] == ")")

    def contains(self, v: float) -> bool:
        if math.isnan(v):  # NaN is in no range
            return False
        above = v > self.low if self.low_open else v >= self.low
        below = v < self.high if self.high_open else v <= self.high
        return above and below

    def __str__(self) -> str:
        def num(x: float) -> str:
            return "inf" if x == float("inf") else "-inf" if x == float("-inf") else f"{x:g}"

        return f"{'(' if self.low_open else '['}{num(self.low)}, {num(self.high)}{')' if self.high_open else ']'}"


def in_range(default: Any, interval: str, **kwargs: Any) -> Any:
    """A dataclass field with a declared range (checked on every ``apply_overrides``)."""
    Range.parse(interval)  # fail at import time on a typo
    return dataclasses.field(default=default, metadata={RANGE: interval}, **kwargs)


_PROBABILITY = ("prob", "dropout")
_POSITIVE_INT = ("heads", "batch_size", "epochs", "codebook_size", "num_codes", "num_classes")


def inferred_range(name: str, typ: Any) -> Range | None:
    """The range a field gets by its name and type when it declares none."""
    if typ not in (int, float):
        return None
    if any(p in name for p in _PROBABILITY):
        return Range(0.0, 1.0, False, False)
    if typ is int and name.endswith(_POSITIVE_INT):
        return Range(1.0, float("inf"), False, True)
    if typ is float:
        return Range(float("-inf"), float("inf"), True, True)  # finite
    return None


def field_range(f: dataclasses.Field, typ: Any) -> Range | None:
    declared = f.metadata.get(RANGE) if f.metadata else None
    if declared is not None:
        return declared if isinstance(declared, Range) else Range.parse(declared)
    return inferred_range(f.name, typ)


def check_ranges(cfg: Any, *, where: str = "config", given: Mapping[str, Any] | None = None) -> None:
    """Raise UserError on the first field of ``cfg`` outside its range (NaN and inf included)."""
    types_ = field_types(type(cfg))
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        typ = types_[f.name]
        if typing.get_origin(typ) in (typing.Union, types.UnionType):
            inner = [a for a in typing.get_args(typ) if a is not type(None)]
            typ = inner[0] if len(inner) == 1 else typ
        rng = field_range(f, typ)
        if rng is not None and not rng.contains(float(value)):
            what = "a finite number" if (rng.low, rng.high) == (float("-inf"), float("inf")) else f"in {rng}"
            src = f"--set {f.name}={given[f.name]}" if given and f.name in given else f"{f.name}={value} ({where})"
            raise UserError(f"{src}: must be {what}")
    _check_widths(cfg, given)


_WIDTHS = ("embed_dim", "s_dim", "dim", "width", "hidden_dim")


def _check_widths(cfg: Any, given: Mapping[str, Any] | None) -> None:
    """A ratio that scales a width (``mlp_ratio``) must leave at least one unit in every layer it sizes:
    ``int(128 * 1e-9)`` is a zero-width MLP that trains nothing and reports a number anyway."""
    names = {f.name for f in dataclasses.fields(cfg)}
    for ratio_name in (n for n in names if n.endswith("mlp_ratio")):
        ratio = getattr(cfg, ratio_name)
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not math.isfinite(ratio):
            continue
        for w in (n for n in _WIDTHS if n in names):
            width = getattr(cfg, w)
            if isinstance(width, int) and not isinstance(width, bool) and width >= 1 and int(width * ratio) < 1:
                src = f"--set {ratio_name}={given[ratio_name]}" if given and ratio_name in given else f"{ratio_name}={ratio}"
                raise UserError(f"{src}: gives {w}={width} an MLP of int({width} x {ratio:g}) = 0 units; "
                                f"must be at least {1 / width:.3g}")


def unknown_key_message(key: str, known: Iterable[str], where: str) -> str:
    known = sorted(known)
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else f"; known keys: {', '.join(known)}"
    return f"--set {key}: unknown key for {where}{hint}"


def config_hash(*parts: Mapping[str, Any]) -> str:
    """A short stable hash of JSON-able mappings, used for run grouping and cache keys."""
    blob = json.dumps(list(parts), sort_keys=True, default=str).encode()
    return hashlib.sha1(blob).hexdigest()[:12]
