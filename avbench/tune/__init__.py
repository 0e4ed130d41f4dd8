"""``avbench tune``: the same hyperparameter search, on the validation split, for every strategy.

The package, by concern (each module imports only those before it):

* ``space``: search spaces as Optuna distributions (a strategy declares its space in
  ``Strategy.search_space``; the default is ``avbench.api.default_space``);
* ``select``: trial scores (``--select``), the choice and its ties, seed streams, capped values;
* ``store``: the tuned configurations written for ``avbench run --tuned`` (``tuned_file``), one per
  replicate;
* ``study``: one strategy's request, study, MLflow tuning parent and trials;
* ``executor``: trials as jobs on the executor, each strategy's study sequential;
* ``driver``: ``tune``, which checks everything, then tunes every strategy.

The names below are the package's public interface. They load on first use (PEP 562), so importing
one light module (``avbench.tune.select``, which ``avbench tune --help`` reads) does not import the
engine and torch through this ``__init__``.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "default_space": "avbench.api",
    "check_request": "avbench.tune.driver", "tune": "avbench.tune.driver",
    "SELECT": "avbench.tune.select", "choose": "avbench.tune.select", "strategy_seed": "avbench.tune.select",
    **dict.fromkeys(("FIXED", "STEPS_KEY", "TYPES", "distributions", "load_space_file", "step_cap", "suggest"),
                    "avbench.tune.space"),
    **dict.fromkeys(("apply_tuned", "replicate_file", "tuned_dir", "tuned_file", "write_tuned"), "avbench.tune.store"),
    **dict.fromkeys(("TuneRequest", "conclude", "confirm_seeds", "new_study", "run_request", "storage", "trial_job",
                     "trial_record", "tune_one", "tuning_parent"), "avbench.tune.study"),
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'avbench.tune' has no attribute '{name}'")
    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value  # found once
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])
