"""Cheap evaluation gives today's numbers: the Fusion column derived from the Audio and Video passes
(``Capabilities.fusion_is_mean``) equals a third ``predict`` pass, and the validation curve's light
evaluation (one column, accuracy and mAP) equals what the full evaluation reports for them."""

import dataclasses

import numpy as np
import pytest
import torch

from avbench.cache.reader import FeatureCache
from avbench.train import evaluate as evaluation
from avbench.train.engine import Engine, set_seed
from avbench.train.recipe import Recipe
from avbench_strategies.uavm import UAVM, Independent, UAVMConfig
from helpers import tiny_cache


def _engine(tmp_path, cls, amp):
    cache = FeatureCache(tiny_cache(tmp_path / "c"))
    set_seed(0)
    model = cls(UAVMConfig(embed_dim=16, n_specific=1, n_shared=1), cache.features, cache.task)
    recipe = Recipe(epochs=1, batch_size=16, amp=amp, eval_batch_size=20, retrieval_per_class=0)
    e = Engine(model, cache, recipe, seed=0, progress=False)
    e.fit()
    return e


def _without_derivation(strategy):
    """The same weights, but declaring nothing: every column is its own ``predict`` pass (today's path)."""
    caps = dataclasses.replace(type(strategy).capabilities, fusion_is_mean=False)
    strategy.__class__ = type("Plain" + type(strategy).__name__, (type(strategy),), {"capabilities": caps})
    return strategy


@pytest.mark.parametrize("cls", [UAVM, Independent])
@pytest.mark.parametrize("amp", ["fp32", "bf16"])
def test_derived_fusion_equals_a_third_pass(tmp_path, cls, amp):
    e = _engine(tmp_path, cls, amp)
    assert evaluation.derives_fusion(e.strategy, ["audio", "video", "fusion"])
    derived = e.evaluate(retrieval=False)
    _without_derivation(e.strategy)
    assert not evaluation.derives_fusion(e.strategy, ["audio", "video", "fusion"])
    full = e.evaluate(retrieval=False)
    assert set(derived.metrics) == set(full.metrics) and "fusion/mAP" in full.metrics
    for k, v in full.metrics.items():
        assert derived.metrics[k] == pytest.approx(v, abs=1e-6), k
    for c in ("audio", "video", "fusion"):
        np.testing.assert_allclose(derived.logits[c], full.logits[c], rtol=0, atol=1e-6)


@pytest.mark.parametrize("cls", [UAVM, Independent])
def test_fusion_is_mean_declaration_is_true(tmp_path, cls):
    """What the capability promises: predict(a, v) is the stack-mean of the single-modality passes."""
    cache = FeatureCache(tiny_cache(tmp_path / "c"))
    set_seed(0)
    m = cls(UAVMConfig(embed_dim=16, n_specific=1, n_shared=1), cache.features, cache.task).eval()
    assert cls.capabilities.fusion_is_mean
    g = torch.Generator().manual_seed(0)
    a = torch.randn(5, cache.features.num_steps, cache.features.audio_dim, generator=g)
    v = torch.randn(5, cache.features.num_steps, cache.features.video_dim, generator=g)
    with torch.no_grad():
        torch.testing.assert_close(m.predict(a, v), torch.stack([m.predict(a, None), m.predict(None, v)]).mean(0),
                                   rtol=0, atol=0)


@pytest.mark.parametrize("derive", [True, False])
def test_curve_evaluation_equals_the_full_one(tmp_path, derive):
    e = _engine(tmp_path, UAVM, "fp32")
    if not derive:
        _without_derivation(e.strategy)
    on = (e.test_src, e.test_rows)
    full = e.evaluate(retrieval=False, on=on)
    light = e.evaluate(retrieval=False, on=on, curve=True)
    assert set(light.metrics) == {"fusion/acc", "fusion/mAP"}
    for k, v in light.metrics.items():
        assert v == pytest.approx(full.metrics[k], abs=1e-12), k


def test_default_capability_keeps_three_passes():
    from avbench.api import Capabilities

    assert Capabilities().fusion_is_mean is False


def test_a_new_store_is_a_copy_of_the_kept_empty_one(tmp_path, monkeypatch):
    """The first new store is created by MLflow's migrations and kept; the next is a copy, current and
    empty; a kept store of another schema revision is not used."""
    import sqlite3

    from avbench import tracking

    monkeypatch.setenv("AVBENCH_CACHE_DIR", str(tmp_path / "cache"))
    first = tmp_path / "a" / "mlflow.db"
    first.parent.mkdir()
    tracking.prepare_sqlite_store(first)
    template = tracking.store_template()
    assert template.exists() and tracking._store_state(template) == ("ok", 0)

    import mlflow.store.db.utils as dbu

    def no_migrations(engine):
        raise AssertionError("migrations ran although a current template exists")

    monkeypatch.setattr(dbu, "_initialize_tables", no_migrations)
    second = tmp_path / "b" / "mlflow.db"
    second.parent.mkdir()
    tracking.prepare_sqlite_store(second)
    assert tracking._store_state(second) == ("ok", 0)
    monkeypatch.undo()
    monkeypatch.setenv("AVBENCH_CACHE_DIR", str(tmp_path / "cache"))
    with sqlite3.connect(template) as c:  # a template of another schema head: created the usual way
        c.execute("update alembic_version set version_num = 'not-the-head'")
    third = tmp_path / "c" / "mlflow.db"
    third.parent.mkdir()
    tracking.prepare_sqlite_store(third)
    assert tracking._store_state(third) == ("ok", 0)
