"""mbt's Scenic switches (issue 22): shared encoder_norm, token classifier, the single-modality path,
stochastic depth, eps/GELU/init, the scenic preset and recipe, and the key map of the equivalence
script (benchmarks/equivalence/mbt_scenic.py) -- the facts that need no Scenic checkout."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from avbench.api import Batch, FeatureSpec, TaskSpec
from avbench.config import apply_overrides
from avbench.errors import UserError
from avbench_strategies.mbt import MBT, MBTConfig, drop_rates, run_block

FEAT = FeatureSpec(audio_dim=6, video_dim=5, num_steps=7)
TASK = TaskSpec(num_classes=4)
SMALL = dict(embed_dim=16, depth=3, fusion_layer=1, num_heads=2)


def build(**over) -> MBT:
    torch.manual_seed(0)
    m = MBT(MBTConfig(**{**SMALL, **over}), FEAT, TASK)
    with torch.no_grad():  # the zero-initialised head (and CLS tokens) would hide every difference
        m.head.weight.normal_(0, 0.5)
        if m.cls is not None:
            for p in m.cls.values():
                p.normal_(0, 0.5)
    return m.eval()


def batch(b: int = 5, seed: int = 1) -> Batch:
    g = torch.Generator().manual_seed(seed)
    y = F.one_hot(torch.arange(b) % 4, 4).float()
    return Batch(audio=torch.randn(b, 7, 6, generator=g), video=torch.randn(b, 7, 5, generator=g), targets=y, labels=y)


def test_shared_encoder_norm_is_one_layernorm_over_the_concatenated_tokens():
    m = build(encoder_norm="shared")
    assert isinstance(m.norm, torch.nn.LayerNorm) and m.norm.eps == 1e-6
    with torch.no_grad():
        m.norm.weight.uniform_(0.5, 1.5)
        m.norm.bias.normal_(0, 0.1)
        bt = batch()
        tokens = m.encode(bt.audio, bt.video)
        # The raw tower outputs: encode with the norm replaced by the identity.
        norm, m.norm = m.norm, torch.nn.Identity()
        raw = m.encode(bt.audio, bt.video)
        m.norm = norm
        joint = norm(torch.cat([raw["audio"], raw["video"]], dim=1))  # Scenic: encoder_norm(concat)
        torch.testing.assert_close(torch.cat([tokens["audio"], tokens["video"]], dim=1), joint)
    per = build()
    assert set(per.norm) == {"audio", "video"}  # the default: one LayerNorm per modality


def test_token_classifier_prepends_a_cls_token_and_averages_the_modalities_logits():
    m = build(classifier="token")
    assert m.pos["audio"].shape == (1, 8, 16)  # T + 1: the positional embedding covers the CLS token
    assert m.bottleneck.shape == (1, 5, 16)  # Scenic adds one bottleneck token with the token classifier
    assert torch.all(MBT(MBTConfig(**SMALL, classifier="token"), FEAT, TASK).cls["audio"] == 0)  # zero init
    bt = batch()
    with torch.no_grad():
        tokens = m.encode(bt.audio, bt.video)
        assert tokens["audio"].shape == (5, 8, 16)
        per = {k: m.head(v[:, 0]) for k, v in tokens.items()}  # the CLS outputs through the shared head
        torch.testing.assert_close(m.predict(bt.audio, bt.video), (per["audio"] + per["video"]) / 2)
        # Training: Scenic's loss is the mean of the per-modality losses, not the loss of the mean.
        loss = m.training_step(bt, 0)["loss"]
        want = (m.loss_fn(per["audio"], bt.targets) + m.loss_fn(per["video"], bt.targets)) / 2
        torch.testing.assert_close(loss, want)
        assert abs(loss.item() - m.loss_fn(m.predict(bt.audio, bt.video), bt.targets).item()) > 1e-4


def test_gap_logits_are_the_head_on_the_mean_over_the_concatenated_tokens():
    m = build(encoder_norm="shared")
    bt = batch()
    with torch.no_grad():
        tokens = m.encode(bt.audio, bt.video)
        pooled = torch.cat([tokens["audio"], tokens["video"]], dim=1).mean(1)  # Scenic's gap (equal T)
        torch.testing.assert_close(m.predict(bt.audio, bt.video), m.head(pooled))


def test_single_modality_evaluation_has_no_bottlenecks_by_default():
    # Scenic's single-modality path (model.py:339): the tower alone at every layer. With the same
    # weights that is the model with fusion_layer = depth evaluated on that modality.
    m = build()
    no_fusion = build(fusion_layer=3)
    no_fusion.load_state_dict(m.state_dict())
    with_bott = build(unimodal_bottlenecks=True)
    with_bott.load_state_dict(m.state_dict())
    bt = batch()
    with torch.no_grad():
        for a, v in ((bt.audio, None), (None, bt.video)):
            torch.testing.assert_close(m.predict(a, v), no_fusion.predict(a, v))
            assert (m.predict(a, v) - with_bott.predict(a, v)).abs().max() > 1e-4  # the earlier path differs
        torch.testing.assert_close(m.predict(bt.audio, bt.video), with_bott.predict(bt.audio, bt.video))


def test_stochastic_depth_is_scenics_unscaled_per_example_layer_drop():
    assert drop_rates(4, 0.3) == pytest.approx([0.0, 0.1, 0.2, 0.3])  # linear to the rate at the last layer
    assert drop_rates(1, 0.3) == [0.0]
    m = build(stochastic_depth=0.3)
    blk = m.blocks["audio"][0]
    x = torch.randn(400, 7, 16)
    with torch.no_grad():
        a = blk.attn(blk.norm1(x))
        full = blk(x)
        torch.manual_seed(3)
        y = run_block(blk, x, 0.5, training=True)
        # Each example: the attention branch kept or not, then the MLP branch kept or not, on the
        # running value; a kept branch is added unscaled (Scenic: x * (1 - drop) + inputs).
        cands = []
        for keep_a in (0.0, 1.0):
            h = x + keep_a * a
            m_out = blk.mlp(blk.norm2(h))
            cands += [h, h + m_out]
        err = torch.stack([(y - c).abs().amax(dim=(1, 2)) for c in cands])  # [4, B]
        assert bool((err.min(0).values < 1e-5).all())
        chosen = err.argmin(0)
        counts = torch.bincount(chosen, minlength=4)
        assert bool((counts > 50).all()), counts  # every pattern occurs (p = 0.5, independent draws)
        torch.testing.assert_close(run_block(blk, x, 0.5, training=False), full)  # evaluation: no drop
        m.eval()
        bt = batch()
        off = build()
        off.load_state_dict(m.state_dict())
        torch.testing.assert_close(m.predict(bt.audio, bt.video), off.predict(bt.audio, bt.video))
    with pytest.raises(UserError, match="stochastic_depth"):
        MBT(MBTConfig(**SMALL, stochastic_depth=1.0), FEAT, TASK)


def test_eps_gelu_and_scenic_init():
    m = build(block_ln_eps=1e-6, gelu="tanh", init="xavier", embed_dim=64, num_heads=4)
    blk = m.blocks["video"][2]
    assert blk.norm1.eps == blk.norm2.eps == 1e-6
    assert isinstance(blk.mlp.act, torch.nn.GELU) and blk.mlp.act.approximate == "tanh"
    d = 64
    bound = math.sqrt(6 / (2 * d))  # xavier-uniform of each D x D kernel (q, k, v and the output)
    for i in range(3):
        w = blk.attn.qkv.weight[i * d:(i + 1) * d]
        assert 0.97 * bound < w.abs().max().item() <= bound
    assert blk.attn.proj.weight.abs().max().item() <= bound
    fc1_bound = math.sqrt(6 / (d + 4 * d))
    assert 0.97 * fc1_bound < blk.mlp.fc1.weight.abs().max().item() <= fc1_bound
    assert 0 < blk.mlp.fc1.bias.abs().max().item() < 1e-5  # normal(1e-6)
    assert blk.attn.qkv.bias.abs().max().item() == 0.0
    std = math.sqrt(1 / 5) / 0.87962566103423978  # lecun normal, truncated at 2 std (flax)
    w = m.patch_embed["video"].weight
    assert w.abs().max().item() <= 2 * std + 1e-6
    default = build(embed_dim=64, num_heads=4)
    assert default.blocks["video"][0].norm1.eps == 1e-5 and default.blocks["video"][0].mlp.act.approximate == "none"
    assert 0.018 < default.blocks["video"][0].attn.qkv.weight.std().item() < 0.022  # timm's trunc-normal(0.02)


def test_scenic_preset_and_recipe():
    from avbench.registry import Registry
    from avbench.train.recipe import Recipe, recipe_overrides

    cls = Registry("avbench.strategies", "strategy").load("mbt")
    cfg = apply_overrides(MBTConfig(), {k: str(v) for k, v in cls.presets["scenic"].items()})
    assert (cfg.encoder_norm, cfg.classifier, cfg.unimodal_bottlenecks, cfg.stochastic_depth, cfg.block_ln_eps,
            cfg.gelu, cfg.init) == ("shared", "gap", False, 0.3, 1e-6, "tanh", "xavier")
    r = apply_overrides(Recipe(), {k: str(v) for k, v in recipe_overrides("scenic").items()})
    assert (r.optimizer, r.momentum, r.lr, r.schedule, r.mixup_prob, r.mixup_alpha, r.label_smoothing,
            r.weight_decay, r.grad_clip) == ("sgd", 0.9, 0.5, "cosine", 1.0, 0.5, 0.3, 0.0, 1.0)
    assert Recipe().optimizer == "adam"


# --- the equivalence script's key map (no Scenic checkout needed) ------------------------------------
def _script():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "equivalence" / "mbt_scenic.py"
    spec = importlib.util.spec_from_file_location("mbt_scenic", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("classifier", ["gap", "token"])
def test_scenic_key_map_names_shapes_and_round_trip(classifier):
    mod = _script()
    m = build(encoder_norm="shared", classifier=classifier, input_norm=False)
    state = {k: v.detach().numpy() for k, v in m.state_dict().items()}
    flat = mod._flat(mod.to_scenic(state, m.cfg))
    d, h, t, c = 16, 2, 7 + (classifier == "token"), 4
    assert flat["embedding_spectrogram/kernel"].shape == (1, 1, 6, d)  # 2-D conv over a T x 1 "image"
    assert flat["embedding/kernel"].shape == (1, 1, 1, 5, d)  # rgb: 3-D conv over 1x1x1 patches
    assert flat["Transformer/posembed_input_spectrogram/pos_embedding"].shape == (1, t, d)
    blk = "Transformer/encoderblock_2_spectrogram/"
    assert flat[blk + "MultiHeadDotProductAttention_0/query/kernel"].shape == (d, h, d // h)
    assert flat[blk + "MultiHeadDotProductAttention_0/out/kernel"].shape == (h, d // h, d)
    assert flat[blk + "MlpBlock_0/Dense_0/kernel"].shape == (d, 4 * d)
    assert flat["Transformer/encoder_norm/scale"].shape == (d,)
    assert flat["output_projection/kernel"].shape == (d, c)
    assert flat["bottleneck"].shape == (1, 4 + (classifier == "token"), d)
    assert ("clsspectrogram" in flat and "cls" in flat) == (classifier == "token")
    # The query kernel's head h, dim j, input i is the qkv row h * hd + j, column i.
    q = flat[blk + "MultiHeadDotProductAttention_0/query/kernel"]
    w = state["blocks.audio.2.attn.qkv.weight"]
    assert q[3, 1, 5] == w[1 * (d // h) + 5, 3]
    n_params = sum(v.size for v in flat.values())
    assert n_params == sum(p.numel() for p in m.parameters())  # every parameter mapped, once
    # Back: the same state dict, exactly.
    tree: dict = {}
    for k, v in flat.items():
        node = tree
        *parents, leaf = k.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = v
    back = mod.from_scenic(tree, m.cfg, state)
    assert set(back) == set(state)
    for k in state:
        np.testing.assert_array_equal(back[k], state[k], err_msg=k)
    with pytest.raises(ValueError, match="encoder_norm"):
        mod.to_scenic({k: v.detach().numpy() for k, v in build().state_dict().items()}, build().cfg)


def test_engine_builds_sgd_with_momentum_for_the_scenic_recipe(tmp_path):
    from avbench.cache import FeatureCache
    from avbench.datasets.synth import SynthKnobs, build_synth_cache
    from avbench.train.engine import Engine
    from avbench.train.recipe import Recipe

    knobs = SynthKnobs(classes=4, train_clips=24, test_clips=12, steps=7, audio_dim=6, video_dim=5, seed=0)
    cache = FeatureCache(build_synth_cache(tmp_path / "c", knobs))
    m = MBT(MBTConfig(**SMALL), cache.features, cache.task)
    opt = Engine(m, cache, Recipe(optimizer="sgd", momentum=0.9, lr=0.5, weight_decay=0.0), seed=0,
                 device=torch.device("cpu"), progress=False).make_optimizer()
    assert isinstance(opt, torch.optim.SGD)
    g = opt.param_groups[0]
    assert (g["lr"], g["momentum"], g["weight_decay"], g["nesterov"], g["dampening"]) == (0.5, 0.9, 0.0, False, 0)
    adam = Engine(m, cache, Recipe(), seed=0, device=torch.device("cpu"), progress=False).make_optimizer()
    assert isinstance(adam, torch.optim.Adam)
