"""The sweep grammar: ``--grid`` axes, ``--tie`` expressions and sweep names, parsed and checked
without touching a cache, a model or MLflow (``avbench.sweep`` runs the points).

An axis is one key with its values (``s_dim=16,64,256``) or several keys zipped together
(``n_specific,n_shared=6,0;3,3;0,6``: tuples separated by ``;``, the values of one tuple by ``,``); a
value that contains a separator is quoted (``"continuous:2,audio_only:1"``) or has it escaped with a
backslash. The points are the Cartesian product of the axes. A *tie* derives a key from the point's
other values with bounded integer/float arithmetic (``n_specific=6-n_shared``; no power towers, values
within ``TIE_MAX``), evaluated on the expression's syntax tree, never with ``eval``.
"""

from __future__ import annotations

import ast
import itertools
import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from avbench.errors import UserError

_NAME_OK = re.compile(r"^[A-Za-z0-9_.\-]+$")  # MLflow tag-key characters


@dataclass(frozen=True)
class Axis:
    keys: tuple[str, ...]
    values: tuple[tuple[str, ...], ...]  # one tuple per position, len == len(keys)


@dataclass(frozen=True)
class Tie:
    key: str
    expr: str


@dataclass
class Grid:
    axes: list[Axis]
    ties: list[Tie] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        """No axes: one point (each strategy's configuration as given), recorded as plain runs."""
        return not self.axes

    @property
    def swept_keys(self) -> list[str]:
        return [k for a in self.axes for k in a.keys]

    @property
    def x_key(self) -> str:
        """The key a report puts on the x axis: the last key of the first axis (``n_shared`` for a
        zipped ``n_specific,n_shared`` axis, where the other key is derived)."""
        return self.axes[0].keys[-1] if self.axes else ""

    def points(self) -> list[dict[str, str]]:
        out = []
        for combo in itertools.product(*[a.values for a in self.axes]):
            point: dict[str, str] = {}
            for axis, vals in zip(self.axes, combo):
                point.update(zip(axis.keys, vals))
            for tie in self.ties:
                point[tie.key] = _format_number(evaluate(tie.expr, point, tie.key))
            out.append(point)
        return out


def parse_axis(text: str) -> Axis:
    """``key=v1,v2,...`` or ``k1,k2=a1,a2;b1,b2;...``."""
    if "=" not in text:
        raise UserError(f"--grid expects key=v1,v2,... or k1,k2=a1,a2;b1,b2, got '{text}'")
    lhs, rhs = text.split("=", 1)
    keys = tuple(k.strip() for k in lhs.split(","))
    if not all(keys):
        raise UserError(f"--grid '{text}': empty key")
    if len(set(keys)) != len(keys):
        raise UserError(f"--grid '{text}': a key appears twice")
    if len(keys) == 1:
        values = tuple((v,) for v in split_values(rhs, ",", text) if v != "")
    else:
        values = []
        for part in [p for p in split_values(rhs, ";", text, keep_quotes=True) if p.strip() != ""]:
            tup = tuple(split_values(part, ",", text))
            if len(tup) != len(keys) or not all(tup):
                raise UserError(f"--grid '{text}': '{part}' has {len(tup)} value(s) for {len(keys)} keys "
                                f"({', '.join(keys)}); separate tuples with ';'")
            values.append(tup)
        values = tuple(values)
    if not values:
        raise UserError(f"--grid '{text}': no values")
    if len(set(values)) != len(values):
        raise UserError(f"--grid '{text}': repeated value")
    return Axis(keys, values)


def split_values(text: str, sep: str, arg: str = "", keep_quotes: bool = False) -> list[str]:
    """``text`` split at ``sep`` outside quotes; each piece stripped. A piece in double or single quotes
    is taken as is (separators inside it included); a backslash makes the next character literal.
    ``keep_quotes`` leaves quotes and backslashes in place (a first pass that splits tuples only)."""
    pieces: list[str] = []
    buf: list[str] = []
    quote = ""
    quoted = False  # the current piece had quotes: keep its inner spaces and an empty value
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            buf.append(text[i:i + 2] if keep_quotes else text[i + 1])
            i += 2
            continue
        if quote:
            if ch == quote:
                quote = ""
                if keep_quotes:
                    buf.append(ch)
            else:
                buf.append(ch)
        elif ch in "\"'":
            quote, quoted = ch, True
            if keep_quotes:
                buf.append(ch)
        elif ch == sep:
            pieces.append("".join(buf) if quoted and not keep_quotes else "".join(buf).strip())
            buf, quoted = [], False
        else:
            buf.append(ch)
        i += 1
    if quote:
        raise UserError(f"--grid '{arg or text}': unclosed {quote} quote")
    pieces.append("".join(buf) if quoted and not keep_quotes else "".join(buf).strip())
    return pieces


def parse_tie(text: str) -> Tie:
    if "=" not in text:
        raise UserError(f"--tie expects key=EXPRESSION (e.g. n_specific=6-n_shared), got '{text}'")
    key, expr = (s.strip() for s in text.split("=", 1))
    if not key or not expr:
        raise UserError(f"--tie expects key=EXPRESSION, got '{text}'")
    try:
        ast.parse(expr, mode="eval")
    except SyntaxError:
        raise UserError(f"--tie {key}: cannot parse '{expr}'") from None
    return Tie(key, expr)


def parse_grid(grids: list[str], ties: list[str] | None = None) -> Grid:
    if not grids:
        raise UserError("give at least one --grid key=v1,v2,...")
    axes = [parse_axis(g) for g in grids]
    tie_list = [parse_tie(t) for t in (ties or [])]
    seen: set[str] = set()
    for k in [k for a in axes for k in a.keys] + [t.key for t in tie_list]:
        if k in seen:
            raise UserError(f"'{k}' is swept or tied more than once")
        seen.add(k)
    grid = Grid(axes, tie_list)
    grid.points()  # evaluate ties now: a bad expression fails before anything runs
    return grid


TIE_MAX = 1e12  # a tied setting is a count, a width or a rate: far below this
TIE_MAX_CHARS = 200
_OPS: dict[type, Callable[..., Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow,
    ast.USub: operator.neg, ast.UAdd: operator.pos,
}


def _number(text: str, key: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            raise UserError(f"--tie uses '{key}' = '{text}', which is not a number") from None


def evaluate(expr: str, point: dict[str, str], target: str = "?") -> int | float:
    """Arithmetic over numbers and the point's keys; nothing else is evaluated."""

    def ev(node: ast.AST) -> int | float:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
            return node.value
        if isinstance(node, ast.Name):
            if node.id not in point:
                raise UserError(f"--tie {target}: '{node.id}' is not a swept key (swept: {', '.join(point) or 'none'})")
            return _number(point[node.id], node.id)
        if isinstance(node, ast.Attribute):  # model.n_shared, data.snr
            name = _dotted(node)
            if name not in point:
                raise UserError(f"--tie {target}: '{name}' is not a swept key (swept: {', '.join(point) or 'none'})")
            return _number(point[name], name)
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            left, right = ev(node.left), ev(node.right)
            if isinstance(node.op, ast.Pow):
                _check_power(left, right, target, expr)
            try:
                return bounded(_OPS[type(node.op)](left, right))
            except ZeroDivisionError:
                raise UserError(f"--tie {target}: division by zero in '{expr}'") from None
            except OverflowError:
                raise UserError(f"--tie {target}: '{expr}' overflows") from None
        if isinstance(node, ast.UnaryOp) and type(node.op) in _OPS:
            return bounded(_OPS[type(node.op)](ev(node.operand)))
        raise UserError(f"--tie {target}: only numbers, swept keys and + - * / // % ** are allowed in '{expr}'")

    def bounded(v: int | float) -> int | float:
        if isinstance(v, complex) or not math.isfinite(v) or abs(v) > TIE_MAX:
            raise UserError(f"--tie {target}: '{expr}' reaches {v if not isinstance(v, int) else f'{v:.3g}'}, "
                            f"beyond +-{TIE_MAX:g} (a setting, not a computation)")
        return v

    if len(expr) > TIE_MAX_CHARS:
        raise UserError(f"--tie {target}: the expression is {len(expr)} characters; at most {TIE_MAX_CHARS}")
    return ev(ast.parse(expr, mode="eval"))


def _check_power(base: int | float, exponent: int | float, target: str, expr: str) -> None:
    """Refuse a power whose result would pass TIE_MAX before computing it (``9**9**9`` would take the
    CPU for minutes): checked on magnitudes, so each ``**`` costs nothing when it is refused."""
    b = abs(base)
    if b in (0, 1) or exponent <= 0:
        return
    if exponent > 64 or (b > 1 and exponent * math.log10(b) > math.log10(TIE_MAX)):
        raise UserError(f"--tie {target}: '{expr}' computes {base:g}**{exponent:g}, beyond +-{TIE_MAX:g}")


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    raise UserError("--tie: unsupported expression")


def _format_number(v: float) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return repr(v) if isinstance(v, float) else str(v)


def default_name(grid: Grid) -> str:
    if grid.empty:
        return "runs"
    return "-".join(k.split(".")[-1] for k in grid.swept_keys)


def check_name(name: str) -> str:
    if not _NAME_OK.match(name):
        raise UserError(f"--name '{name}': use letters, digits and _ . - only")
    return name


def format_point(point: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in point.items())
