"""Which validation metric should ``avbench tune`` choose on? A measurement, not a test.

For each strategy: draw ``--configs`` configurations from its declared search space (Optuna's seeded
random sampler, so the configurations are the tuning's own start-up trials), train each as a tuning
trial does (fit rows, scored on the validation hold-out: accuracy, mAP, and the validation loss, i.e.
the cross-entropy of the strategy's fused logits), then retrain each on the whole training split with
``--seeds`` seeds and test it. Among the contenders (the configurations whose validation accuracy is
within ``--margin`` of the best: the ones a selection actually has to tell apart) it prints Spearman's
rho of each validation metric with the mean test accuracy, and the regret of picking by each metric.
Over all trials every metric separates working configurations from broken ones; the question is
which one orders the good ones.

    OMP_NUM_THREADS=1 python benchmarks/tune_selection.py --strategies late_fusion,sum --configs 12
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import numpy as np
import torch
from scipy.stats import spearmanr

from avbench.api import classification_loss
from avbench.resolve import RunRequest, resolve
from avbench.train.engine import Engine, set_seed
from avbench.tune.space import FIXED, distributions, step_cap, suggest, text


def _train(strategy: str, overrides: dict[str, str], seed: int, on: str) -> dict[str, float]:
    """One training; scores on the validation hold-out (``on="val"``) or the test split."""
    extra = {"train.validation": "holdout"} if on == "val" else {"train.validation": "train-on-all"}
    r = resolve(RunRequest(strategy=strategy, dataset="synth", overrides={**overrides, **extra}, progress=False,
                           seeds=[seed]))
    recipe = dataclasses.replace(r.recipe, eval_every_epoch=False)
    set_seed(seed)
    model = r.strategy_cls(r.strategy_cfg, r.cache.features, r.cache.task)
    fit = Engine(model, r.cache, recipe, seed=seed, progress=False, evaluate_on="val" if on == "val" else "test").fit()
    col = "fusion" if "fusion" in fit.final.logits else next(iter(fit.final.logits))
    loss = float(classification_loss(torch.from_numpy(fit.final.logits[col]),
                                     torch.from_numpy(fit.final.labels).float(), r.cache.task.multilabel))
    return {"acc": fit.final.metrics[f"{col}/acc"], "mAP": fit.final.metrics[f"{col}/mAP"], "loss": loss}


def measure(strategy: str, data: dict[str, str], n_configs: int, seeds: list[int], cap: int,
            sampler_seed: int) -> dict:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    base = {**FIXED, **data}
    r = resolve(RunRequest(strategy=strategy, dataset="synth", overrides=base, progress=False))
    cap = cap or step_cap(r.recipe, r.cache)
    dists = distributions(r.strategy_cls.search_space(r.recipe), cap, strategy)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=sampler_seed))
    rows = []
    for _ in range(n_configs):
        trial = study.ask()
        params = suggest(trial, dists)
        over = {**base, **{k: text(v) for k, v in params.items()}}
        val = _train(strategy, over, 0, "val")
        test = [_train(strategy, over, 100 + s, "test")["acc"] for s in seeds]
        study.tell(trial, val["acc"])
        rows.append({"params": params, "val": val, "test": test, "test_mean": float(np.mean(test))})
        print(f"  {strategy} {len(rows)}/{n_configs}: val acc {val['acc']:.3f} mAP {val['mAP']:.3f} "
              f"loss {val['loss']:.3f}  test {np.mean(test):.3f}", flush=True)
    return {"cap": cap, "rows": rows}


def summarise(rows: list[dict], margin: float) -> dict:
    best_acc = max(r["val"]["acc"] for r in rows)
    out = {}
    for name, pool in (("all", rows), ("contenders", [r for r in rows if r["val"]["acc"] >= best_acc - margin])):
        test = [r["test_mean"] for r in pool]
        res = {"n": len(pool)}
        for metric, sign in (("acc", 1), ("mAP", 1), ("loss", -1)):
            score = [sign * r["val"][metric] for r in pool]
            res[f"spearman_{metric}"] = float(spearmanr(score, test)[0]) if len(pool) > 2 else float("nan")
            pick = max(range(len(pool)), key=lambda i: (score[i], -i))
            res[f"regret_{metric}"] = float(max(test) - test[pick])
        out[name] = res
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--strategies", default="late_fusion,sum")
    p.add_argument("--configs", type=int, default=12)
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--max-steps", type=int, default=0, help="per-trial step cap (default: the recipe's)")
    p.add_argument("--train-clips", type=int, default=960)
    p.add_argument("--test-clips", type=int, default=480)
    p.add_argument("--margin", type=float, default=0.10, help="contenders: validation acc within this of the best")
    p.add_argument("--sampler-seed", type=int, default=0)
    p.add_argument("--set", dest="sets", action="append", default=[], help="extra KEY=VALUE for every training")
    p.add_argument("--output-json")
    a = p.parse_args()
    data = {"data.train_clips": str(a.train_clips), "data.test_clips": str(a.test_clips),
            **dict(s.split("=", 1) for s in a.sets)}
    t0 = time.time()
    report = {"settings": vars(a), "strategies": {}}
    for s in a.strategies.split(","):
        m = measure(s, data, a.configs, list(range(a.seeds)), a.max_steps, a.sampler_seed)
        m["summary"] = summarise(m["rows"], a.margin)
        report["strategies"][s] = m
        print(s, json.dumps(m["summary"], indent=1), flush=True)
    report["seconds"] = time.time() - t0
    if a.output_json:
        with open(a.output_json, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
