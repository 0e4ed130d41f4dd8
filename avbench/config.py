"""``--set key=value`` overrides for dataclass configs, with type checking and clear errors.

Every config in avbench (a strategy's ``Config``, the training recipe, dataset knobs) is a plain
dataclass; this module is the only place that turns command-line strings into typed field values.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import types
import typing
from typing import Any, Iterable, Mapping

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
    return dataclasses.replace(cfg, **changes)


def unknown_key_message(key: str, known: Iterable[str], where: str) -> str:
    known = sorted(known)
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else f"; known keys: {', '.join(known)}"
    return f"--set {key}: unknown key for {where}{hint}"


def config_hash(*parts: Mapping[str, Any]) -> str:
    """A short stable hash of JSON-able mappings, used for run grouping and cache keys."""
    blob = json.dumps(list(parts), sort_keys=True, default=str).encode()
    return hashlib.sha1(blob).hexdigest()[:12]
