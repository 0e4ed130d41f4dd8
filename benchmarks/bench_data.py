"""Gathering training batches from a cache (paper-shaped: 144 clips x 30 steps x 2 x 1024 fp16, 17 MB):
a memmap gather, the prefetching BatchSource, and a device-resident split, plus the recipe's
per-batch augmentation (L2 norm, mixup, time roll)."""

from __future__ import annotations

import numpy as np
import pytest

BATCH = 144


def _index_batches(n, count, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, n, BATCH) for _ in range(count)]


def test_gather_memmap(benchmark, synthetic_caches):
    split = synthetic_caches["paper"].train_split()
    batches = _index_batches(len(split), 64)
    state = {"i": 0}

    def gather():
        state["i"] += 1
        return split.gather(batches[state["i"] % len(batches)])

    benchmark(gather)
    benchmark.extra_info.update({"batch": BATCH, "clips_per_s": BATCH / benchmark.stats.stats.mean,
                                 "mb_per_batch": (split.audio[0].nbytes + split.video[0].nbytes) * BATCH / 1e6})


@pytest.mark.parametrize("resident", ["off", "on"])
def test_batch_source_epoch(benchmark, synthetic_caches, device, resident):
    """A stream of 16 batches as the engine consumes them (prefetch thread, or device indexing)."""
    from avbench.bench.timing import synchronize
    from avbench.train.data import BatchSource

    split = synthetic_caches["paper"].train_split()
    src = BatchSource(split, device, resident)
    batches = _index_batches(len(split), 16, seed=1)

    def epoch():
        for raw in src.iterate(batches):
            pass
        synchronize(device)

    benchmark.pedantic(epoch, rounds=5, warmup_rounds=1)
    benchmark.extra_info.update({"resident": resident, "batches": len(batches),
                                 "clips_per_s": BATCH * len(batches) / benchmark.stats.stats.mean})


def test_recipe_augmentation(benchmark, synthetic_caches, device):
    """make_batch on a gathered paper-size batch: what every training step adds to the data path."""
    from avbench.api import FeatureSpec
    from avbench.bench.timing import synchronize
    from avbench.train.engine import Engine
    from avbench.train.recipe import Recipe
    from avbench_strategies.uavm import UAVM, UAVMConfig

    cache = synthetic_caches["paper"]
    f = cache.features
    tiny_model = UAVM(UAVMConfig(embed_dim=8, num_heads=1, n_specific=0, n_shared=1),
                      FeatureSpec(f.audio_dim, f.video_dim, f.num_steps), cache.task)
    engine = Engine(tiny_model, cache, Recipe(batch_size=BATCH, device_resident="on"), seed=0, device=device,
                    progress=False)
    plan = engine.plan_step(0, engine.global_batches(0)[0])
    raw = engine.train_src.gather_resident(plan.fetch)

    def augment():
        engine.make_batch(raw, True, 0, plan)
        synchronize(device)

    benchmark(augment)
    benchmark.extra_info.update({"batch": BATCH, "clips_per_s": BATCH / benchmark.stats.stats.mean})
