"""vq_codes' CMG switches (issue 22) on facts that need no CMG checkout: the two CLUB bound forms on
hand-computed numbers, the two dead-code reset timings on a counted sequence, the frozen encoder's
mode downstream, per-modality decoders, float64, per-module clipping and the ``cmg`` recipe's values.
benchmarks/equivalence/cmg.py checks the same modules against the authors' classes."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from avbench.api import Batch, FeatureSpec, TaskSpec
from avbench.nn.club import CLUBSample
from avbench.nn.vq import MMEMACodebook
from avbench.train.recipe import RECIPES, Recipe, clip_groups, recipe_overrides
from avbench_strategies.vq_codes import VQCodes, VQCodesConfig

SMALL = dict(embed_dim=16, num_codes=8, num_heads=2, club_hidden=16)


def _small(**kw) -> VQCodes:
    cfg = VQCodesConfig(**{**SMALL, **kw})
    return VQCodes(cfg, FeatureSpec(audio_dim=6, video_dim=5, num_steps=8), TaskSpec(num_classes=3))


def _batch(b: int = 4, t: int = 8, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    labels = F.one_hot(torch.arange(b) % 3, 3).float()
    return Batch(audio=torch.randn(b, t, 6, generator=g), video=torch.randn(b, t, 5, generator=g),
                 targets=labels, labels=labels)


# --- CLUB bound forms --------------------------------------------------------------------------
class _FixedHeads(CLUBSample):
    """mu = 0 and a given log-variance [B, T, 1], so the bound can be worked out by hand."""

    def __init__(self, logvar: torch.Tensor):
        super().__init__(1, 1, hidden=2)
        self._logvar = logvar

    def mu_logvar(self, x):
        return torch.zeros_like(self._logvar), self._logvar


LN2 = math.log(2.0)
LOGVAR = torch.tensor([[[0.0], [LN2]], [[LN2], [LN2]]])  # [B=2, T=2, D=1]
Y = torch.tensor([[[1.0], [3.0]], [[2.0], [0.0]]])
PERM = torch.tensor([1, 0])


def test_per_step_bound_is_the_mean_over_steps_of_each_steps_gaussian():
    # positive - negative per (b, t), with (mu - y)^2 * exp(-logvar) / 2:
    # b0t0 -0.5+2 = 1.5; b0t1 -2.25-0 = -2.25; b1t0 -1+0.25 = -0.75; b1t1 0+2.25 = 2.25 -> mean 0.1875
    net = _FixedHeads(LOGVAR)
    assert float(net.mi_estimate(torch.zeros(2, 2, 1), Y, perm=PERM, form="per_step")) == pytest.approx(0.1875)


def test_cmg_bound_averages_over_time_before_dividing_by_exp_of_the_mean_logvar():
    # CLUB.py:57-58: b0: -(1+9)/2 / sqrt2 + (4+0)/2 / sqrt2 = -3/sqrt2; b1: -(4+0)/2 * 0.5 + (1+9)/2 * 0.5 = 1.5
    # mean over B, halved: (1.5 - 3/sqrt2) / 4
    net = _FixedHeads(LOGVAR)
    got = float(net.mi_estimate(torch.zeros(2, 2, 1), Y, perm=PERM, form="cmg"))
    assert got == pytest.approx((1.5 - 3 / math.sqrt(2)) / 4)


def test_the_two_forms_agree_when_the_variance_is_constant_over_time_and_dims_are_summed():
    # With logvar constant over T the cmg form is the per-step form times T's averaging: equal.
    lv = torch.full((2, 2, 1), LN2)
    net = _FixedHeads(lv)
    x = torch.zeros(2, 2, 1)
    assert float(net.mi_estimate(x, Y, perm=PERM, form="cmg")) == pytest.approx(
        float(net.mi_estimate(x, Y, perm=PERM, form="per_step")))


def test_strategy_uses_the_configured_club_form(monkeypatch):
    seen = []
    orig = CLUBSample.mi_estimate

    def spy(self, x, y, perm=None, form="per_step"):
        seen.append(form)
        return orig(self, x, y, perm=perm, form=form)

    monkeypatch.setattr(CLUBSample, "mi_estimate", spy)
    model = _small(club_form="cmg", club_updates=1)
    model.begin_stage("pretrain")
    model.train()
    model.training_step(_batch(), 0)
    assert seen == ["cmg", "cmg"]


# --- dead-code reset timing ----------------------------------------------------------------------
def _reset_sequence(timing: str, batches: int = 10, after: int = 3) -> list[list[int]]:
    """Code 0 used on every batch, code 1 only at batch 0, codes 2 and 3 never: the codes reset per batch."""
    cb = MMEMACodebook(4, 2, reset_timing=timing)
    out = []
    for step in range(batches):
        used = torch.tensor([True, step == 0, False, False])
        before = cb.embedding.clone()
        cb.reset_dead(used, after, active_window=2, noise=0.5, generator=torch.Generator().manual_seed(step))
        out.append((cb.embedding != before).any(-1).nonzero().flatten().tolist())
    return out


def test_cmg_timing_counts_from_minus_one_and_resets_above_n_re():
    # Counters start at -1 (+1 per batch, 0 when used): never-used codes read k at batch k and reset
    # when above 3, at batch 4; code 1 (used at batch 0) reads k too: also batch 4. Reset codes restart
    # at 0 and are reset again 4 batches later (batch 8).
    assert _reset_sequence("cmg") == [[], [], [], [], [1, 2, 3], [], [], [], [1, 2, 3], []]


def test_avbench_timing_counts_from_zero_and_resets_at_n_re():
    # Counters start at 0: never-used codes read k+1 at batch k and reset at 3 (batch 2); code 1 reads k
    # and resets at batch 3; then every 3 batches after their reset.
    assert _reset_sequence("avbench") == [[], [], [2, 3], [1], [], [2, 3], [1], [], [2, 3], [1]]


def test_code_only_reset_leaves_the_ema_sums_as_the_public_code_does():
    for rescale in (True, False):
        cb = MMEMACodebook(2, 2, reset_timing="cmg")
        cb.ema_count.fill_(0.5)
        sums = cb.ema_weight.clone()
        for _ in range(3):
            cb.reset_dead(torch.tensor([True, False]), 1, noise=0.0, rescale_ema=rescale)
        assert torch.equal(cb.embedding[1], cb.embedding[0])  # code 1 moved onto code 0
        assert torch.equal(cb.ema_weight[1], cb.embedding[1] * 0.5) == rescale
        assert torch.equal(cb.ema_weight[1], sums[1]) == (not rescale)


# --- downstream ------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_frozen_encoder_mode_downstream(mode):
    model = _small(downstream_encoder=mode)
    model.begin_stage("downstream")
    model.train()
    assert model.semantic.training == (mode == "train")
    assert model.decoder.training
    torch.manual_seed(0)
    x = torch.randn(2, 8, 6)
    z1 = model.encode(x, "audio")[0]
    z2 = model.encode(x, "audio")[0]
    assert torch.equal(z1, z2) == (mode == "eval")  # dropout on only in train mode
    model.eval()
    assert not model.semantic.training  # evaluation never runs dropout


def test_per_modality_decoders_train_each_modality_alone_and_define_no_fused_column():
    model = _small(downstream_decoders="per_modality")
    assert not model.capabilities.fusion and "per_modality" in model.capabilities.why_not("fusion")
    assert type(model).capabilities.fusion  # the class default is untouched
    model.begin_stage("downstream")
    model.train()
    out = model.training_step(_batch(), 0)
    out["loss"].backward()
    assert model.decoder.classifier.weight.grad is not None and model.video_decoder.classifier.weight.grad is not None
    b = _batch()
    model.eval()
    with torch.no_grad():
        va = model.predict(b.audio, None)
        vv = model.predict(None, b.video)
        assert torch.allclose(vv, model.video_decoder(model.codes(b.video, "video")))
        assert torch.allclose(va, model.decoder(model.codes(b.audio, "audio")))
        with pytest.raises(ValueError, match="no fused"):
            model.predict(b.audio, b.video)
    model.train_modality = "video"  # the cross-modal protocol: one decoder, trained on video, read on audio
    assert model.decoder_for("audio") is model.decoder_for("video") is model.decoder


def test_float64_runs_both_stages_in_float64():
    model = _small(precision="fp64", club_updates=1)
    assert all(p.dtype == torch.float64 for p in model.parameters())
    model.begin_stage("pretrain")
    model.train()
    out = model.training_step(_batch(), 0)
    assert out["loss"].dtype == torch.float64
    out["loss"].backward()
    model.after_optimizer_step(0)
    assert model.codebook.embedding.dtype == torch.float64
    model.begin_stage("downstream")
    assert model.training_step(_batch(), 1)["loss"].dtype == torch.float64


# --- recipe ---------------------------------------------------------------------------------------
def test_cmg_recipe_values():
    r = dataclasses.replace(Recipe(), **recipe_overrides("cmg"))
    assert (r.beta1, r.beta2, r.weight_decay, r.lr_decay) == (0.9, 0.999, 0.0, 1.0)  # Adam defaults, constant
    assert not r.balanced_sampling and not r.drop_last and not r.l2_norm and not r.time_roll
    assert (r.mixup_prob, r.label_smoothing) == (0.0, 0.0)  # plain cross-entropy downstream
    assert (r.grad_clip, r.grad_clip_scope, r.amp) == (0.5, "module", "fp32")
    assert set(RECIPES["cmg"]) <= {f.name for f in dataclasses.fields(Recipe)}


def test_cmg_preset_names_only_config_fields_and_reaches_every_cmg_switch():
    preset = VQCodes.presets["cmg"]
    fields = {f.name for f in dataclasses.fields(VQCodesConfig)}
    assert set(preset) <= fields
    cfg = VQCodesConfig(**{**SMALL, **preset})
    assert (cfg.club_form, cfg.reset_timing, cfg.reset_rescale_ema, cfg.downstream_encoder,
            cfg.downstream_decoders, cfg.pretrain_sampling, cfg.precision) == (
        "cmg", "cmg", False, "train", "per_modality", "uniform", "fp64")


def test_pretraining_recipe_drops_label_weighted_sampling_and_clip_groups_are_cmgs_models():
    model = _small(pretrain_sampling="uniform", downstream_decoders="per_modality")
    base = Recipe()
    assert not model.stage_recipe("pretrain", base).balanced_sampling
    assert model.stage_recipe("downstream", base).balanced_sampling
    assert model.stage_recipe("pretrain", base).time_roll  # pretrain_time_roll=recipe
    rolled = _small(pretrain_time_roll="off")
    assert not rolled.stage_recipe("pretrain", base).time_roll and rolled.stage_recipe("downstream", base).time_roll
    model.begin_stage("pretrain")
    groups = clip_groups(model)
    assert len(groups) == 3  # CMG's Encoder, CPC, Decoder
    ids = [{id(p) for p in g} for g in groups]
    assert id(model.semantic["audio"].proj.weight) in ids[0] and id(model.specific["video"][0].weight) in ids[0]
    assert id(next(model.cpc.parameters())) in ids[1]
    assert id(model.recon["audio"].out.weight) in ids[2]
    club = {id(p) for p in model.club.parameters()}
    assert not any(club & g for g in ids)  # the estimators have their own optimizers
    model.begin_stage("downstream")
    assert [len(g) for g in clip_groups(model)] == [len(list(model.decoder.parameters())) * 2]


def test_cli_run_under_the_cmg_recipe_and_preset(tmp_path):
    """``--recipe cmg --preset cmg`` trains both stages in float64 end to end; the standard protocol
    then reports audio and video columns from their own decoders and says why there is no fused one."""
    import json

    from avbench.cli import main

    out = tmp_path / "result.json"
    rc = main(["run", "--strategy", "vq_codes", "--dataset", "synth", "--epochs", "1", "--seeds", "0",
               "--recipe", "cmg", "--preset", "cmg",
               "--set", "data.train_clips=48", "--set", "data.test_clips=24", "--set", "data.steps=6",
               "--set", "data.audio_dim=8", "--set", "data.video_dim=6", "--set", "data.classes=3",
               "--set", "embed_dim=8", "--set", "num_heads=2", "--set", "num_codes=8", "--set", "club_hidden=8",
               "--set", "pretrain_epochs=1", "--set", "train.batch_size=16",
               "--results-dir", str(tmp_path / "results"), "--output-json", str(out)])
    assert rc == 0
    result = json.loads(out.read_text())
    r, cfg = result["recipe"], result["config"]
    assert (r["beta1"], r["weight_decay"], r["balanced_sampling"], r["l2_norm"], r["grad_clip_scope"]) == (
        0.9, 0.0, False, False, "module")
    assert (cfg["precision"], cfg["club_form"], cfg["downstream_decoders"]) == ("fp64", "cmg", "per_modality")
    metrics = result["seeds"][0]["metrics"]
    assert 0.0 <= metrics["audio/acc"] <= 1.0 and 0.0 <= metrics["video/acc"] <= 1.0
    assert "per_modality" in result["skipped"]["fusion"]


def test_engine_reads_the_sampler_per_stage_and_clips_each_group(tmp_path, monkeypatch):
    """The run's recipe samples label-balanced; vq_codes' pretraining asks for uniform batches
    (``pretrain_sampling=uniform``): pretraining epochs are permutations, downstream draws with
    replacement. ``grad_clip_scope=module`` clips CMG's three models one by one in pretraining and
    the decoder alone downstream."""
    from avbench.cache import FeatureCache
    from avbench.datasets.synth import SynthKnobs, build_synth_cache
    from avbench.train.engine import Engine

    path = build_synth_cache(tmp_path / "cache", SynthKnobs(classes=3, train_clips=60, test_clips=12, steps=6,
                                                            audio_dim=8, video_dim=6, seed=0))
    cache = FeatureCache(path)
    cfg = VQCodesConfig(**SMALL, pretrain_epochs=1, pretrain_sampling="uniform", club_updates=1)
    model = VQCodes(cfg, cache.features, cache.task)
    run = Recipe(epochs=1, lr=1e-3, batch_size=60, drop_last=False, amp="fp32", balanced_sampling=True,
                 grad_clip=0.5, grad_clip_scope="module", validation="off", eval_every_epoch=False)
    engine = Engine(model, cache, run, seed=0, device=torch.device("cpu"), progress=False)
    orders, clips = {}, []
    batches = engine.global_batches
    engine.global_batches = lambda epoch: (orders.setdefault(model.stage, batches(epoch)), batches(epoch))[1]
    real_clip = torch.nn.utils.clip_grad_norm_

    def counting_clip(params, max_norm, *a, **k):
        clips.append((model.stage, len(list(params)) if not isinstance(params, torch.Tensor) else 1))
        return real_clip(params, max_norm, *a, **k)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", counting_clip)
    engine.fit()
    pre, down = (np.concatenate(orders[s]) for s in ("pretrain", "downstream"))
    assert len(np.unique(pre)) == len(pre) == len(engine.train_rows)  # a permutation: no label weighting
    assert len(np.unique(down)) < len(down)  # weighted draws with replacement
    n_decoder = len(list(model.decoder.parameters()))
    model.begin_stage("pretrain")
    sizes = [len(g) for g in clip_groups(model)]
    assert [c for c in clips if c[0] == "pretrain"] == [("pretrain", n) for n in sizes]  # one step, three groups
    assert [c for c in clips if c[0] == "downstream"] == [("downstream", n_decoder)]
