"""Search spaces for ``avbench tune``: what a strategy declares, turned into Optuna distributions.

A strategy declares its space as data (``Strategy.search_space``, default ``avbench.api.default_space``);
``--space FILE`` replaces it. The run length ``train.max_steps`` is searched as a share of the per-trial
step budget, which is the same for every strategy, so no strategy can buy itself more training.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

import yaml

from avbench.api import STEPS_KEY, default_space
from avbench.errors import UserError

__all__ = ["FIXED", "STEPS_KEY", "TYPES", "default_space", "distributions", "load_space_file", "step_cap",
           "suggest", "text"]

FIXED = {"train.schedule": "cosine"}  # trials use a step-defined schedule unless --set says otherwise
TYPES = ("float", "int", "categorical", "steps")


def load_space_file(path: str | Path, strategies: list[str]) -> dict[str, dict[str, Any]]:
    """``{strategy: space}`` from a YAML/JSON file holding one space, or one per strategy name.

    The file is per strategy when every top-level key names a strategy (registered, or one being
    tuned), so one file can serve tunings of different subsets; a tuned strategy it does not name keeps
    its declared space, and a file that names none of the tuned strategies is refused."""
    from avbench.registry import strategies as registered

    p = Path(path).expanduser()
    if not p.is_file():
        raise UserError(f"--space {path}: no such file")
    try:
        data = yaml.safe_load(p.read_text())  # JSON is YAML
    except yaml.YAMLError as e:
        raise UserError(f"--space {path}: not valid YAML/JSON ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict) or not data:
        raise UserError(f"--space {path}: expected a mapping of --set keys to search ranges")
    if set(data) <= set(strategies) | set(registered.names()):
        if not set(data) & set(strategies):
            raise UserError(f"--space {path}: has spaces for {', '.join(sorted(data))}, none of the strategies "
                            f"tuned ({', '.join(strategies)})")
        return {s: data[s] for s in strategies if s in data}
    return {s: data for s in strategies}


def distributions(space: Mapping[str, Any], cap: int, where: str) -> dict[str, Any]:
    """Optuna distributions for a space; the step budget ``cap`` bounds ``train.max_steps``."""
    import optuna.distributions as od

    out = {}
    for key, spec in space.items():
        if not isinstance(spec, Mapping) or spec.get("type") not in TYPES:
            raise UserError(f"{where}: '{key}' needs a mapping with type one of {', '.join(TYPES)}")
        kind = spec["type"]
        try:
            if kind == "categorical":
                out[key] = od.CategoricalDistribution(list(spec["choices"]))
                continue
            low, high, logscale = spec["low"], spec["high"], bool(spec.get("log", False))
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in (low, high)):
                raise UserError(f"{where}: '{key}' bounds must be finite numbers (got low={low!r}, high={high!r})")
            if kind == "steps":
                if not 0 < low <= high <= 1:
                    raise UserError(f"{where}: '{key}' type steps takes shares of the budget in (0, 1]")
                low, high, kind, logscale = max(1, round(low * cap)), max(1, round(high * cap)), "int", True
            if key == STEPS_KEY and high > cap:
                raise UserError(f"{where}: {key} up to {high} exceeds the step budget of {cap} per trial "
                                f"(the same for every strategy; raise --max-steps for all of them)")
            out[key] = (od.IntDistribution(int(low), int(high), log=logscale) if kind == "int"
                        else od.FloatDistribution(float(low), float(high), log=logscale))
        except KeyError as e:
            raise UserError(f"{where}: '{key}' is missing {e}") from None
        except ValueError as e:
            raise UserError(f"{where}: '{key}': {e}") from None
    if STEPS_KEY not in out:  # every trial still trains the same fixed number of steps
        out[STEPS_KEY] = od.IntDistribution(cap, cap)
    return out


def suggest(trial: Any, dists: Mapping[str, Any]) -> dict[str, Any]:
    import optuna.distributions as od

    out = {}
    for key, d in dists.items():
        if isinstance(d, od.CategoricalDistribution):
            out[key] = trial.suggest_categorical(key, d.choices)
        elif isinstance(d, od.IntDistribution):
            out[key] = trial.suggest_int(key, d.low, d.high, log=d.log)
        else:
            out[key] = trial.suggest_float(key, d.low, d.high, log=d.log)
    return out


def step_cap(recipe: Any, cache: Any) -> int:
    """The default per-trial step budget: the recipe's epochs over the rows tuning trains on."""
    if recipe.max_steps > 0:
        return int(recipe.max_steps)
    per_epoch = len(cache.fit_rows()) // recipe.batch_size if recipe.drop_last else \
        math.ceil(len(cache.fit_rows()) / recipe.batch_size)
    return max(1, recipe.epochs * max(1, per_epoch))


def text(v: Any) -> str:
    """A suggested value as a ``--set`` string (floats by ``repr``, so they read back exactly)."""
    return repr(v) if isinstance(v, float) else str(v)
