"""The fast training path keeps accuracy and feeds the same data as the plain path.

* bf16 autocast + fused attention + fused Adam against fp32 on synth, same seeds: accuracy must not
  drop. Run this whenever the fast path changes (precision, kernels, optimizer, data path). It asks
  for bf16 explicitly, so it means the same on any CPU: where bf16 is emulated (AVX2 only) the numbers
  are the same roundings, just slower; at this test's width (32, T 10) a bf16 step measured 1.6x an
  fp32 one under torch's AVX2 kernels (ATEN_CPU_CAPABILITY=avx2, ONEDNN_MAX_CPU_ISA=AVX2), not 100x.
* Device-resident splits give exactly the batches the memmap + prefetch path gives.
"""

import numpy as np
import pytest
import torch

from avbench.cache.reader import FeatureCache
from avbench.train.data import BatchSource
from avbench.train.engine import Engine, set_seed
from avbench.train.recipe import Recipe
from avbench_strategies.uavm import UAVM, UAVMConfig
from helpers import tiny_cache

SEEDS = (0, 1, 2)


def _fit(cache, amp, seed):
    set_seed(seed)
    model = UAVM(UAVMConfig(embed_dim=32, n_specific=1, n_shared=1), cache.features, cache.task)
    recipe = Recipe(epochs=8, lr=1e-3, lr_decay=0.8, batch_size=32, amp=amp, eval_every_epoch=False,
                    retrieval_per_class=0)
    return Engine(model, cache, recipe, seed=seed, progress=False).fit().final.metrics


@pytest.mark.slow
def test_bf16_fast_path_keeps_fp32_accuracy(tmp_path):
    """Tolerance: 2 points of accuracy and 0.01 mAP on the mean over 3 seeds, 3 points per seed.

    The fp32 runs' spread over these seeds is about 2 points, and one test clip is 0.42 points, so a
    real loss of accuracy from bf16 (a pathologically rounded loss or optimizer state) shows up as far
    more than this, while rounding noise in otherwise identical runs stays well inside it (observed:
    at most one clip).
    """
    cache = FeatureCache(tiny_cache(tmp_path / "c", classes=6, train_clips=288, test_clips=240, steps=10,
                                    audio_dim=24, video_dim=16, snr=2.0))
    runs = {amp: [_fit(cache, amp, s) for s in SEEDS] for amp in ("fp32", "bf16")}
    for col in ("audio", "video", "fusion"):
        fp32 = np.array([m[f"{col}/acc"] for m in runs["fp32"]])
        bf16 = np.array([m[f"{col}/acc"] for m in runs["bf16"]])
        assert fp32.mean() > 0.45, col  # the model learned (chance is 1/6): the comparison means something
        assert bf16.mean() >= fp32.mean() - 0.02, (col, fp32, bf16)
        assert np.abs(bf16 - fp32).max() <= 0.03, (col, fp32, bf16)
        map32 = np.mean([m[f"{col}/mAP"] for m in runs["fp32"]])
        map16 = np.mean([m[f"{col}/mAP"] for m in runs["bf16"]])
        assert map16 >= map32 - 0.01, (col, map32, map16)


def test_device_resident_split_gives_the_memmap_batches(tmp_path):
    cache = FeatureCache(tiny_cache(tmp_path / "c"))
    split = cache.train_split()
    mem = BatchSource(split, torch.device("cpu"), "off")
    dev = BatchSource(split, torch.device("cpu"), "on")
    assert not mem.is_resident and dev.is_resident
    rng = np.random.default_rng(0)
    index_batches = [rng.integers(0, len(split), 16) for _ in range(5)] + [np.array([3]), np.arange(len(split))]
    n = 0
    for a, b in zip(mem.iterate(index_batches), dev.iterate(index_batches)):
        assert set(a) == set(b) == {"audio", "video", "labels", "present", "index", "onsets"}
        for k in a:
            assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k
        n += 1
    assert n == len(index_batches)


def test_engine_batches_are_identical_on_both_paths(tmp_path):
    """Through the whole recipe (L2 norm, mixup, smoothing, roll) for one epoch of the engine's plans."""
    cache = FeatureCache(tiny_cache(tmp_path / "c"))
    batches = {}
    for resident in ("on", "off"):
        torch.manual_seed(0)
        model = UAVM(UAVMConfig(embed_dim=16), cache.features, cache.task)
        e = Engine(model, cache, Recipe(batch_size=16, device_resident=resident), seed=1, progress=False)
        assert e.train_src.is_resident == (resident == "on")
        plans = e.epoch_plans(epoch=2, step=40)
        batches[resident] = [e.make_batch(raw, True, 40 + i, p)
                             for i, (p, raw) in enumerate(zip(plans, e.train_src.iterate([p.fetch for p in plans])))]
    assert len(batches["on"]) == len(batches["off"]) == len(e.train_rows) // 16 >= 5
    for a, b in zip(batches["on"], batches["off"]):
        for field in ("audio", "video", "targets", "labels", "onsets", "present", "index"):
            assert torch.equal(getattr(a, field), getattr(b, field)), field


def test_engine_uses_the_fused_optimizer_and_attention(tmp_path):
    cache = FeatureCache(tiny_cache(tmp_path / "c"))
    model = UAVM(UAVMConfig(embed_dim=16), cache.features, cache.task)
    e = Engine(model, cache, Recipe(batch_size=16), seed=0, progress=False)
    assert e.make_optimizer().defaults["fused"] is True
    assert all(blk.attn.fused for blk in model.a_stem.blocks)


def test_attention_kernels_agree(monkeypatch):
    """The CPU batched-matmul path, scaled_dot_product_attention and the reference give the same
    outputs and gradients (fp32)."""
    import avbench.nn.transformer as tr
    from avbench.nn import Block

    torch.manual_seed(0)
    blk = Block(32, 4)
    x = torch.randn(3, 12, 32)
    results = {}
    for kind, threshold, fused in (("bmm", 128, True), ("sdpa", 0, True), ("reference", 128, False)):
        monkeypatch.setattr(tr, "CPU_BMM_MAX_TOKENS", threshold)
        blk.attn.fused = fused
        assert blk.attn.kernel(12, "cpu") == kind
        xi = x.clone().requires_grad_()
        y = blk(xi)
        y.square().sum().backward()
        results[kind] = (y.detach(), xi.grad, blk.attn.qkv.weight.grad.clone())
        blk.zero_grad()
    for kind in ("sdpa", "reference"):
        for a, b in zip(results["bmm"], results[kind]):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
