"""One training step of every registered strategy, at paper size and at tiny size.

Paper size: the strategy's default configuration (UAVM: 3 + 3 layers, width 1024, 4 heads) on
VGGSound-shaped features (T 30, 1024-d, 309 classes), batch 144, in the precision ``auto`` picks
for the device (bf16 where native and faster, else fp32; ``extra_info['precision']``): the step
``avbench run`` executes (``Engine.train_step`` on a pre-made batch; the data path is timed in
bench_data.py). Tiny size: widths shrunk to 32, T 8, batch 16: the harness's fixed per-step cost.
``extra_info`` records clips/s, FLOPs per clip and parameters. Strategies that fail to import are
skipped with the reason.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from avbench import registry
from avbench.errors import PluginImportError, UserError

TINY_CONFIG = {"embed_dim": 32, "depth": 2, "fusion_layer": 1, "num_layers": 1, "num_codes": 32, "club_hidden": 16}
SIZES = {"paper": dict(batch=144, rounds=3, warmup=1), "tiny": dict(batch=16, rounds=20, warmup=3)}


def _strategy(name, size, cache):
    try:
        cls = registry.load_strategy(name)
    except (PluginImportError, UserError) as e:
        pytest.skip(f"{name}: {e}")
    cfg = cls.Config()
    if size == "tiny":
        fields = {f.name for f in dataclasses.fields(cfg)}
        cfg = dataclasses.replace(cfg, **{k: v for k, v in TINY_CONFIG.items() if k in fields})
    torch.manual_seed(0)
    return cls(cfg, cache.features, cache.task)


@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("name", registry.strategies.names())
def test_train_step(benchmark, synthetic_caches, device, name, size):
    from avbench.bench.flops import count_flops
    from avbench.bench.timing import synchronize
    from avbench.train.engine import Engine
    from avbench.train.recipe import Recipe

    cache = synthetic_caches[size]
    sz = SIZES[size]
    strategy = _strategy(name, size, cache)
    engine = Engine(strategy, cache, Recipe(batch_size=sz["batch"], amp="auto"), seed=0, device=device,
                    progress=False)
    strategy.begin_stage(strategy.stages[0])
    strategy.train()
    optimizer = engine.make_optimizer()
    plans = [engine.plan_step(i, g) for i, g in enumerate(engine.global_batches(0)[:2])]
    batches = [engine.make_batch(engine.train_split.gather(p.fetch), True, i, p) for i, p in enumerate(plans)]
    engine.wrap_step_module()
    flops, _ = count_flops(lambda: engine.train_step(batches[0], 0, optimizer))
    state = {"step": 1}

    def step():
        b = batches[state["step"] % 2]
        engine.train_step(b, state["step"], optimizer)
        state["step"] += 1
        synchronize(device)

    benchmark.pedantic(step, rounds=sz["rounds"], warmup_rounds=sz["warmup"], iterations=1)
    mean = benchmark.stats.stats.mean
    benchmark.extra_info.update({"strategy": name, "size": size, "batch": sz["batch"], "device": str(device),
                                 "precision": engine.precision, "clips_per_s": sz["batch"] / mean,
                                 "flops_per_clip": flops / sz["batch"],
                                 "achieved_gflops_per_s": flops / mean / 1e9,
                                 "parameters": strategy.num_parameters(), "threads": torch.get_num_threads()})
