"""Parameter sweeps: every grid point of every strategy through ``runner.run``, resumable, failure-tolerant.

A sweep is a list of axes. Each axis is one key with its values (``s_dim=16,64,256``) or several keys
zipped together (``n_specific,n_shared=6,0;3,3;0,6``: tuples separated by ``;``, the values of one
tuple by ``,``). The points are the Cartesian product of the axes. A *tie* derives a key from the
point's other values with integer/float arithmetic (``n_specific=6-n_shared``), which is how UAVM
Fig. 2's ``N + N_s = 6`` axis is written. Keys are any ``--set`` key (bare, ``model.``, ``train.``
or ``data.``).

Every point runs with ``skip_finished``: a seed with a finished child run is not trained again, so a
rerun of the same command resumes an interrupted sweep. A point that fails (a bad value, a crash) is
recorded and the sweep goes on; failures are listed at the end.

Parents are tagged ``avbench.sweep.<name>`` with the point (JSON), so ``avbench report`` can plot a
metric against the swept parameter; parents the sweep creates also get ``avbench.created_by``.
"""

from __future__ import annotations

import ast
import itertools
import json
import operator
import re
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

from avbench.errors import UserError

TAG_SWEEP_PREFIX = "avbench.sweep."
TAG_CREATED_BY = "avbench.created_by"
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
    def swept_keys(self) -> list[str]:
        return [k for a in self.axes for k in a.keys]

    @property
    def x_key(self) -> str:
        """The key a report puts on the x axis: the last key of the first axis (``n_shared`` for a
        zipped ``n_specific,n_shared`` axis, where the other key is derived)."""
        return self.axes[0].keys[-1]

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
        values = tuple((v.strip(),) for v in rhs.split(",") if v.strip() != "")
    else:
        values = []
        for part in [p for p in rhs.split(";") if p.strip() != ""]:
            tup = tuple(v.strip() for v in part.split(","))
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
            try:
                return _OPS[type(node.op)](ev(node.left), ev(node.right))
            except ZeroDivisionError:
                raise UserError(f"--tie {target}: division by zero in '{expr}'") from None
        if isinstance(node, ast.UnaryOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](ev(node.operand))
        raise UserError(f"--tie {target}: only numbers, swept keys and + - * / // % ** are allowed in '{expr}'")

    return ev(ast.parse(expr, mode="eval"))


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    raise UserError("--tie: unsupported expression")


def _format_number(v: int | float) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return repr(v) if isinstance(v, float) else str(v)


def default_name(grid: Grid) -> str:
    return "-".join(k.split(".")[-1] for k in grid.swept_keys)


def check_name(name: str) -> str:
    if not _NAME_OK.match(name):
        raise UserError(f"--name '{name}': use letters, digits and _ . - only")
    return name


@dataclass
class PointResult:
    strategy: str
    point: dict[str, str]
    status: str  # "ran", "skipped" (every seed already finished), "partial", "failed"
    summary: dict[str, Any] | None = None
    error: str = ""


@dataclass
class SweepRequest:
    strategies: list[str]
    grid: Grid
    seeds: list[int]
    dataset: str | None = None
    cache: str | None = None
    epochs: int | None = None
    overrides: dict[str, str] = field(default_factory=dict)
    results_dir: str = "results"
    device: str = "cpu"
    name: str | None = None
    cache_root: str | None = None
    progress: bool = True
    save_model: bool = True


def run_sweep(req: SweepRequest, on_point: Callable[[int, int, PointResult], None] | None = None,
              run_fn: Callable[..., dict[str, Any]] | None = None) -> list[PointResult]:
    """Run every (strategy, point); never stops on a failed point (KeyboardInterrupt does stop it)."""
    from avbench import runner

    run_fn = run_fn or runner.run
    name = check_name(req.name or default_name(req.grid))
    points = req.grid.points()
    clash = sorted(set(req.overrides) & set(points[0])) if points else []
    if clash:
        raise UserError(f"{', '.join(clash)} is both swept and set with --set")
    total = len(req.strategies) * len(points)
    results: list[PointResult] = []
    i = 0
    for strategy in req.strategies:
        for point in points:
            i += 1
            tag_value = json.dumps({"point": point, "x": req.grid.x_key, "axes": req.grid.swept_keys}, sort_keys=True)
            rr = runner.RunRequest(
                strategy=strategy, dataset=req.dataset, cache=req.cache, seeds=list(req.seeds), epochs=req.epochs,
                overrides={**req.overrides, **point}, results_dir=req.results_dir, device=req.device,
                cache_root=req.cache_root, progress=req.progress, skip_finished=True, save_model=req.save_model,
                extra_tags={TAG_CREATED_BY: f"sweep:{name}", TAG_SWEEP_PREFIX + name: tag_value})
            try:
                summary = run_fn(rr)
            except KeyboardInterrupt:
                raise
            except UserError as e:
                res = PointResult(strategy, point, "failed", error=str(e))
            except Exception as e:  # one bad point must not stop the sweep
                tb = traceback.extract_tb(e.__traceback__)
                where = f" ({tb[-1].filename.rsplit('/', 1)[-1]}:{tb[-1].lineno})" if tb else ""
                res = PointResult(strategy, point, "failed", error=f"{type(e).__name__}: {e}{where}")
            else:
                _tag_parent(req.results_dir, summary.get("parent_run_id"), TAG_SWEEP_PREFIX + name, tag_value)
                skipped = [s for s in summary["seeds"] if s.get("skipped")]
                status = "skipped" if len(skipped) == len(summary["seeds"]) else ("partial" if skipped else "ran")
                res = PointResult(strategy, point, status, summary=summary)
            results.append(res)
            if on_point is not None:
                on_point(i, total, res)
    return results


def _tag_parent(results_dir: str, parent: str | None, key: str, value: str) -> None:
    """A parent that existed before the sweep (a plain ``avbench run``) joins the sweep by tag."""
    if not parent:
        return
    from avbench.tracking import Tracker

    Tracker(results_dir).client.set_tag(parent, key, value)


def format_point(point: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in point.items())
