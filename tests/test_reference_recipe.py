"""The reference recipe's switches do what the UAVM authors' code does, with numbers.

* ``idle_grads="zero"``: their ``optimizer.zero_grad()`` (torch 1.11) leaves zero gradients, so Adam
  keeps moving the idle modality's parameters with its momentum. After one audio batch, an
  audio-only weight moves by 68.9%, 54.8% and 46.3% of that first step over the next three video
  batches (betas 0.95 / 0.999: m_hat / sqrt(v_hat) with both moments decaying and bias-corrected).
* ``mixup_partner="split"``: the partner is drawn uniformly from the whole training split.
* ``label_arithmetic="reference"``: unmixed positives are 1 - ls (not 1 - ls + ls / C).
"""

import dataclasses
import itertools

import numpy as np
import pytest
import torch

from avbench.cache.reader import FeatureCache
from avbench.train import augment
from avbench.train.engine import Engine
from avbench.train.recipe import RECIPES, Recipe
from avbench_strategies.uavm import UAVM, UAVMConfig
from helpers import tiny_cache


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return FeatureCache(tiny_cache(tmp_path_factory.mktemp("ref") / "c"))


def _engine(cache, **recipe):
    torch.manual_seed(0)
    cfg = UAVMConfig(embed_dim=16, num_heads=2, n_specific=1, n_shared=1)
    strategy = UAVM(cfg, cache.features, cache.task)
    r = dataclasses.replace(Recipe(), **{"amp": "fp32", "batch_size": 16, "lr": 1e-3, "weight_decay": 0.0,
                                         "mixup_prob": 0.0, "time_roll": False, "validation": "off", **recipe})
    return Engine(strategy, cache, r, seed=0, device="cpu", progress=False)


def _adam_ratios(b1=0.95, b2=0.999, k=3):
    """|update| of a parameter whose gradient was g at step 1 and 0 at steps 2..k+1, over step 1's."""
    out = []
    for j in range(1, k + 1):
        m_hat = b1**j * (1 - b1) / (1 - b1 ** (j + 1))
        v_hat = b2**j * (1 - b2) / (1 - b2 ** (j + 1))
        out.append(m_hat / np.sqrt(v_hat))
    return np.array(out)


@pytest.mark.parametrize("idle", ["zero", "none"])
def test_idle_modality_parameters_move_with_adam_momentum_only_under_zero_grads(cache, idle):
    e = _engine(cache, idle_grads=idle)
    opt = e.make_optimizer()
    w = e.strategy.a_stem.blocks[0].mlp.fc1.weight  # used by audio batches only
    rows = e.train_rows[:16]
    raw = e.train_split.gather(rows)
    seen = [w.detach().clone()]
    for step, audio_batch in enumerate([True, False, False, False]):
        e.strategy.cfg.lambda_mt = 1.0 if audio_batch else 0.0  # force the batch's modality
        out = e.train_step(e.make_batch(raw, train=True, step=step), step, opt)
        assert float(out["audio_batch"]) == float(audio_batch)
        seen.append(w.detach().clone())
    deltas = [(b - a).abs() for a, b in itertools.pairwise(seen)]
    first = deltas[0]
    sure = first > 0.99 * 1e-3  # elements whose first step was a full lr step (|g| >> eps)
    assert sure.float().mean() > 0.5
    moved = np.array([float((d[sure] / first[sure]).median()) for d in deltas[1:]])
    if idle == "zero":
        expected = _adam_ratios()
        np.testing.assert_allclose(expected, [0.6891, 0.5483, 0.4626], atol=1e-4)
        np.testing.assert_allclose(moved, expected, atol=2e-3)
    else:
        assert moved.tolist() == [0.0, 0.0, 0.0]  # no gradient, no step: the weight stands still


def test_mixup_partner_from_the_whole_split_with_numbers(cache):
    e = _engine(cache, mixup_prob=1.0, mixup_partner="split")
    n_rows = len(e.train_rows)
    outside, total, counts = 0, 0, np.zeros(len(e.train_split), int)
    for step, glob in enumerate(e.global_batches(0) * 10):
        plan = e.plan_step(step, glob)
        rng = np.random.default_rng([e.seed, step, 0])  # the engine's draws for this step
        want = e.train_rows[rng.integers(0, n_rows, len(glob))]
        got = plan.fetch[plan.partner]
        mixed = plan.lam < 1
        assert mixed.all()
        np.testing.assert_array_equal(got[mixed], want[mixed])
        outside += int((~np.isin(got, plan.rows)).sum())
        total += len(got)
        np.add.at(counts, got, 1)
    # 16-clip batches out of 96 rows: a partner is outside its batch with probability ~ 1 - 16/96
    assert 0.78 < outside / total < 0.88
    assert (counts[e.train_rows] > 0).all()  # every training row is some clip's partner
    # the batch really is mixed with those rows: lam * x_i + (1 - lam) * x_partner (after L2 norm)
    plan = e.plan_step(0, e.global_batches(0)[0])
    batch = e.make_batch(e.train_split.gather(plan.fetch), train=True, step=0, plan=plan)
    a = augment.l2_normalize_steps(e.train_split.gather(plan.fetch)["audio"].float())
    lam = torch.from_numpy(plan.lam).float()[:, None, None]
    want = lam * a[: len(plan.rows)] + (1 - lam) * a[torch.from_numpy(plan.partner)]
    torch.testing.assert_close(batch.audio, want)
    # the default keeps partners inside the batch
    e2 = _engine(cache, mixup_prob=1.0)
    plan2 = e2.plan_step(0, e2.global_batches(0)[0])
    assert np.isin(plan2.rows[plan2.partner], plan2.rows).all() and len(plan2.fetch) == len(plan2.rows)


def test_label_arithmetic_with_numbers():
    labels = torch.tensor([[1, 0, 0, 0], [0, 1, 0, 0]], dtype=torch.uint8)
    partner = torch.tensor([[0, 0, 1, 0], [0, 0, 0, 1]], dtype=torch.uint8)
    lam = torch.tensor([0.7, 1.0])
    uni = augment.mixed_targets(labels, partner, lam, 0.1, "uniform")
    ref = augment.mixed_targets(labels, partner, lam, 0.1, "reference")
    # mixed clip (lambda 0.7): 0.025 + 0.9 * 0.7 = 0.655 on its label, 0.025 + 0.9 * 0.3 = 0.295 on the partner's
    torch.testing.assert_close(uni[0], torch.tensor([0.655, 0.025, 0.295, 0.025]))
    torch.testing.assert_close(ref[0], uni[0])
    # unmixed clip: 1 - ls + ls/C = 0.925 (uniform) vs 1 - ls = 0.9 (the authors' loader)
    torch.testing.assert_close(uni[1], torch.tensor([0.025, 0.925, 0.025, 0.025]))
    torch.testing.assert_close(ref[1], torch.tensor([0.025, 0.9, 0.025, 0.025]))
    torch.testing.assert_close(augment.smooth_targets(labels, 0.1, "reference")[1], ref[1])


def test_reference_recipe_is_named_overrides_and_set_wins(tmp_path):
    from avbench import runner
    from avbench.errors import UserError

    base = {"strategy": "uavm", "dataset": "synth", "progress": False,
            "overrides": {"data.train_clips": "96", "data.test_clips": "48", "data.classes": "4", "embed_dim": "16"}}
    r = runner.resolve(runner.RunRequest(recipe_name="reference", **base))
    for k, v in RECIPES["reference"].items():
        assert getattr(r.recipe, k) == v
    assert r.strategy_cfg.init == "authors"
    r2 = runner.resolve(runner.RunRequest(recipe_name="reference", **{**base, "overrides": {
        **base["overrides"], "train.amp": "bf16"}}))
    assert r2.recipe.amp == "bf16" and r2.recipe.idle_grads == "zero"
    d = runner.resolve(runner.RunRequest(**base)).recipe
    assert (d.idle_grads, d.mixup_partner, d.label_arithmetic) == ("none", "batch", "uniform")
    with pytest.raises(UserError, match="--recipe paper: unknown recipe"):
        runner.resolve(runner.RunRequest(recipe_name="paper", **base))
