"""Gathering training batches from a cache (paper-shaped: 144 clips x 30 steps x 2 x 1024 fp16, 17 MB):
a memmap gather, the prefetching BatchSource, and a device-resident split, plus the recipe's
per-batch augmentation (L2 norm, mixup, time roll)."""

from __future__ import annotations

import os

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


# --- VGGSound size: does the data path keep up with a GPU? (opt-in: writes a 22 GB cache) ------------------
H200_BF16_DENSE = 989e12  # FLOP/s, NVIDIA's H200 SXM datasheet (dense bf16 tensor cores)
TARGET_MFU = 0.40


@pytest.mark.skipif(not os.environ.get("AVBENCH_BENCH_VGGSOUND"),
                    reason="set AVBENCH_BENCH_VGGSOUND=1 (writes a 184k-clip, 22 GB cache; "
                           "AVBENCH_BENCH_VGGSOUND_CACHE=DIR keeps and reuses it)")
def test_gather_augment_vggsound_size_vs_gpu_demand(benchmark, tmp_path_factory, device):
    """Clips/s the memmap gather + recipe augmentations sustain over random batches of a 184k-clip cache
    (bigger than this machine's page cache, as VGGSound is on most), against what a GPU at 40 % MFU on
    paper-size UAVM consumes: 0.4 x peak FLOP/s / (training FLOPs per clip, counted by FlopCounterMode)."""
    from pathlib import Path

    from avbench.api import FeatureSpec
    from avbench.bench.flops import count_flops
    from avbench.bench.harness import SyntheticSpec, write_synthetic_cache
    from avbench.bench.timing import synchronize
    from avbench.cache.reader import FeatureCache
    from avbench.train.engine import Engine
    from avbench.train.recipe import Recipe
    from avbench_strategies.uavm import UAVM, UAVMConfig

    keep = os.environ.get("AVBENCH_BENCH_VGGSOUND_CACHE")
    path = Path(keep) if keep else tmp_path_factory.mktemp("vggsound-size") / "cache"
    if not (path / "manifest.json").exists():
        write_synthetic_cache(path, SyntheticSpec(), train=184_000, test=BATCH)
    cache = FeatureCache(path)
    f = cache.features
    model = UAVM(UAVMConfig(), FeatureSpec(f.audio_dim, f.video_dim, f.num_steps), cache.task)  # paper size
    engine = Engine(model, cache, Recipe(batch_size=BATCH, device_resident="off"), seed=0, device=device,
                    progress=False)
    plans = [engine.plan_step(i, rows) for i, rows in enumerate(engine.global_batches(0)[:400])]
    state = {"i": 0}

    def gather_augment():
        i = state["i"] % len(plans)
        state["i"] += 1
        raw = {k: v.to(device, non_blocking=True) for k, v in engine.train_src.split.gather(plans[i].fetch).items()}
        engine.make_batch(raw, True, i, plans[i])
        synchronize(device)

    benchmark.pedantic(gather_augment, rounds=200, warmup_rounds=2)
    clips_per_s = BATCH / benchmark.stats.stats.mean
    # Training FLOPs of one paper-size step (one modality per step, lambda_mt), per clip.
    opt = engine.make_optimizer()
    batch = engine.make_batch({k: v.to(device) for k, v in engine.train_src.split.gather(plans[0].fetch).items()},
                              True, 0, plans[0])
    flops, _ = count_flops(lambda: engine.train_step(batch, 0, opt))
    per_clip = flops / BATCH
    demand = TARGET_MFU * H200_BF16_DENSE / per_clip
    benchmark.extra_info.update({"clips": len(cache.train_split()), "batch": BATCH, "clips_per_s": clips_per_s,
                                 "train_flops_per_clip": per_clip, "gpu_demand_clips_per_s_at_40pct_h200": demand,
                                 "supply_over_demand": clips_per_s / demand})
    print(f"\ngather+augment {clips_per_s:.0f} clips/s; paper UAVM {per_clip / 1e9:.2f} GFLOP/clip (train); "
          f"H200 at 40% MFU consumes {demand:.0f} clips/s; supply/demand {clips_per_s / demand:.2f}")
