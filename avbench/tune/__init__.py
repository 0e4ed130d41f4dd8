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

The names below are the package's public interface.
"""

from avbench.api import default_space
from avbench.tune.driver import check_request, tune
from avbench.tune.select import SELECT, choose, strategy_seed
from avbench.tune.space import FIXED, STEPS_KEY, TYPES, distributions, load_space_file, step_cap, suggest
from avbench.tune.store import apply_tuned, replicate_file, tuned_dir, tuned_file, write_tuned
from avbench.tune.study import (
                                TuneRequest,
                                conclude,
                                confirm_seeds,
                                new_study,
                                run_request,
                                storage,
                                trial_job,
                                trial_record,
                                tune_one,
                                tuning_parent,
)

__all__ = ["FIXED", "SELECT", "STEPS_KEY", "TYPES", "TuneRequest", "apply_tuned", "check_request", "choose",
           "conclude", "confirm_seeds", "default_space", "distributions", "load_space_file", "new_study",
           "replicate_file", "run_request", "step_cap", "storage", "strategy_seed", "suggest", "trial_job",
           "trial_record", "tune", "tune_one", "tuned_dir", "tuned_file", "tuning_parent", "write_tuned"]
