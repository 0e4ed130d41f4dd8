"""Ratios of one training step's time between configurations, measured side by side in one process.

On a shared machine absolute step times say little; configurations timed in interleaved rounds see the
same load, so their ratio holds. Each configuration is the engine's own ``train_step`` on pre-made
batches of the synth card's default sizes (``avbench run --dataset synth``: width 128, T 30, batch 48).

    python benchmarks/step_ratios.py                         # fp32 vs bf16 (+ the bf16 micro-benchmark)
    python benchmarks/step_ratios.py --compile               # also torch.compile on, per precision
    python benchmarks/step_ratios.py --strategy mbt --threads 2 --rounds 40

Prints the median and minimum step time per configuration, the ratios, the FLOPs of a step and the
time the first steps took (compilation included). Not a test: nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def build(strategy: str, cache, amp: str, compile_: bool, batches: int = 8):
    from avbench import config as cfgmod
    from avbench import registry
    from avbench.train.engine import Engine, set_seed
    from avbench.train.recipe import Recipe

    cls = registry.load_strategy(strategy)
    card = registry.load_dataset("synth")
    cfg = cls.Config()
    overrides = card.strategy_overrides(cls.name, {f.name for f in dataclasses.fields(cls.Config)})
    cfg = cfgmod.apply_overrides(cfg, overrides, where="the card")
    recipe = cfgmod.apply_overrides(Recipe(), card.recipe_defaults, where="the recipe")
    recipe = dataclasses.replace(recipe, amp=amp, compile=compile_)
    set_seed(0)
    model = cls(cfg, cache.features, cache.task)
    engine = Engine(model, cache, recipe, seed=0, progress=False)
    model.begin_stage(model.stages[0])
    model.train()
    engine.wrap_step_module()
    optimizer = engine.make_optimizer()
    plans = engine.epoch_plans(0, 0)[:batches]
    made = [engine.make_batch(raw, True, i, p)
            for i, (p, raw) in enumerate(zip(plans, engine.train_src.iterate([p.fetch for p in plans])))]
    return engine, optimizer, made


def main() -> None:
    from avbench import hardware
    from avbench.bench.flops import count_flops
    from avbench.cache.reader import FeatureCache
    from avbench.datasets.synth import SynthKnobs, build_synth_cache

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--strategy", default="uavm")
    ap.add_argument("--threads", type=int, help="torch threads (default: avbench.hardware.usable_cpus())")
    ap.add_argument("--precisions", default="fp32,bf16")
    ap.add_argument("--compile", action="store_true", help="also time each precision with torch.compile")
    ap.add_argument("--rounds", type=int, default=30)
    args = ap.parse_args()
    threads = hardware.configure_threads(args.threads)
    info = hardware.cpu_info()
    print(f"CPU: {info.model}; native bf16 flags: {', '.join(info.native_bf16) or 'none'}; torch {torch.__version__}, "
          f"{threads} threads")
    m = hardware.measure_bf16_speedup()
    print(f"bf16 micro-benchmark: {m['bf16_flops_per_s'] / 1e9:.0f} vs {m['fp32_flops_per_s'] / 1e9:.0f} GFLOP/s "
          f"({m['speedup']:.2f}x); auto picks {hardware.resolve_precision('auto', 'cpu')[0]}")
    with tempfile.TemporaryDirectory() as tmp:
        cache = FeatureCache(build_synth_cache(Path(tmp) / "synth", SynthKnobs(train_clips=480, test_clips=96)))
        configs = {}
        for amp in args.precisions.split(","):
            for comp in ((False, True) if args.compile else (False,)):
                key = f"{amp}{' compile' if comp else ''}"
                engine, opt, batches = build(args.strategy, cache, amp, comp)
                t0 = time.perf_counter()
                for i in range(4):
                    engine.train_step(batches[i], i, opt)
                print(f"{key}: first 4 steps {time.perf_counter() - t0:.1f} s", flush=True)
                configs[key] = (engine, opt, batches)
        first = next(iter(configs.values()))
        flops, _ = count_flops(lambda: first[0].train_step(first[2][0], 0, first[1]))
        lat: dict[str, list[float]] = {k: [] for k in configs}
        for r in range(args.rounds):
            for k, (engine, opt, batches) in configs.items():
                t = time.perf_counter()
                engine.train_step(batches[r % len(batches)], 10 + r, opt)
                lat[k].append(time.perf_counter() - t)
    print(f"one step: {flops / 1e9:.2f} GFLOP (batch {len(first[2][0].labels)})")
    for k, v in lat.items():
        print(f"{k}: median {1e3 * np.median(v):.1f} ms, min {1e3 * min(v):.1f} ms, "
              f"{flops / np.median(v) / 1e9:.0f} GFLOP/s at the median")
    keys = list(lat)
    for k in keys[1:]:
        print(f"{keys[0]} / {k}: {np.median(lat[keys[0]]) / np.median(lat[k]):.2f}x (median), "
              f"{min(lat[keys[0]]) / min(lat[k]):.2f}x (min)")


if __name__ == "__main__":
    main()
