import pytest
import torch

from avbench.api import Batch, FeatureSpec, TaskSpec
from avbench.errors import UserError
from avbench_strategies.uavm import UAVM, CrossAttention, Independent, UAVMConfig

F = FeatureSpec(audio_dim=12, video_dim=10, num_steps=6)
T = TaskSpec(num_classes=5)


def tiny(**over):
    return UAVMConfig(**{**dict(embed_dim=16, num_heads=2, n_specific=1, n_shared=2, s_dim=8), **over})


def batch(b=4, audio=True, video=True):
    g = torch.Generator().manual_seed(0)
    a = torch.randn(b, 6, 12, generator=g) if audio else None
    v = torch.randn(b, 6, 10, generator=g) if video else None
    t = torch.softmax(torch.randn(b, 5, generator=g), -1)
    return Batch(audio=a, video=v, targets=t, labels=(t == t.max(1, keepdim=True).values).to(torch.uint8))


@pytest.mark.parametrize("cls", [UAVM, Independent, CrossAttention])
def test_forward_backward_at_tiny_dims(cls):
    torch.manual_seed(0)
    m = cls(tiny(), F, T)
    b = batch()
    out = m.training_step(b, 0)
    assert out["loss"].ndim == 0 and torch.isfinite(out["loss"])
    out["loss"].backward()
    grads = [p.grad for p in m.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert m.predict(b.audio, b.video).shape == (4, 5)


def test_fused_prediction_is_the_mean_of_the_modalities():
    torch.manual_seed(0)
    m = UAVM(tiny(), F, T).eval()
    b = batch()
    with torch.no_grad():
        la, lv, lf = m.predict(b.audio, None), m.predict(None, b.video), m.predict(b.audio, b.video)
    assert torch.allclose(lf, (la + lv) / 2, atol=1e-6)
    assert not torch.allclose(la, lv)


def _params_touched(model, audio, video):
    model.zero_grad()
    model.predict(audio, video).sum().backward()
    return {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}


def test_zero_shared_layers_share_no_parameters_and_shared_layers_do():
    b = batch()
    torch.manual_seed(0)
    m0 = UAVM(tiny(n_shared=0), F, T)
    a0, v0 = _params_touched(m0, b.audio, None), _params_touched(m0, None, b.video)
    assert a0 and v0 and not (a0 & v0)
    torch.manual_seed(0)
    m2 = UAVM(tiny(n_shared=2), F, T)
    shared = _params_touched(m2, b.audio, None) & _params_touched(m2, None, b.video)
    assert any(n.startswith("shared.") for n in shared) and any(n.startswith("head.") for n in shared)
    # The modal-independent baseline with the same layers shares nothing and has more parameters.
    torch.manual_seed(0)
    ind = Independent(tiny(n_shared=2), F, T)
    assert not (_params_touched(ind, b.audio, None) & _params_touched(ind, None, b.video))
    assert ind.num_parameters() > m2.num_parameters()


def test_one_modality_per_training_batch_follows_lambda_mt():
    torch.manual_seed(0)
    m = UAVM(tiny(lambda_mt=0.8), F, T)
    b = batch()
    draws = [float(m.training_step(b, i)["audio_batch"]) for i in range(300)]
    assert 0.72 < sum(draws) / 300 < 0.88
    assert float(m.training_step(batch(video=False), 0)["audio_batch"]) == 1.0
    assert float(m.training_step(batch(audio=False), 0)["audio_batch"]) == 0.0


def test_layers_and_attention_maps_for_analyses():
    torch.manual_seed(0)
    m = UAVM(tiny(), F, T).eval()
    b = batch()
    layers = m.embed(b.audio, None)
    assert list(layers) == ["layer0", "layer1", "layer2", "layer3"]
    assert layers["layer0"].shape == (4, 6, 16) and layers["layer3"].shape == (4, 6, 8)
    maps = m.attention_maps(None, b.video)
    assert list(maps) == ["layer1", "layer2", "layer3"]
    assert maps["layer1"].shape == (4, 2, 6, 6)
    assert torch.allclose(maps["layer2"].sum(-1), torch.ones(4, 2, 6), atol=1e-5)


def test_fused_attention_matches_the_reference_path():
    torch.manual_seed(0)
    m = UAVM(tiny(), F, T).eval()
    b = batch()
    with torch.no_grad():
        fast = m.predict(b.audio, b.video)
        from avbench.nn import set_fused_attention

        set_fused_attention(m, False)
        ref = m.predict(b.audio, b.video)
    assert torch.allclose(fast, ref, atol=1e-5)


def test_config_checks():
    with pytest.raises(UserError, match="not divisible by num_heads"):
        UAVM.check_compatible(tiny(embed_dim=15), F, T)
    with pytest.raises(UserError, match="lambda_mt"):
        UAVM.check_compatible(tiny(lambda_mt=1.5), F, T)
    with pytest.raises(UserError, match="audio features are 12-d but audio_dim=1024"):
        UAVM.check_compatible(tiny(audio_dim=1024), F, T)
    with pytest.raises(UserError, match="n_shared >= 1"):
        CrossAttention.check_compatible(tiny(n_shared=0), F, T)


def test_the_second_stack_has_its_own_input_norm_and_positions_as_the_authors_built_it():
    torch.manual_seed(0)
    m = UAVM(tiny(), F, T)  # embed 16 -> shared width 8: the shared stack projects
    assert m.shared.norm.normalized_shape == (16,) and m.shared.norm.eps == 1e-6
    assert m.shared.proj.weight.shape == (8, 16) and m.shared.pos.shape == (1, 6, 8)
    same = UAVM(tiny(s_dim=0), F, T)
    assert same.shared.proj is None and same.shared.pos.shape == (1, 6, 16)  # no Linear between equal widths
    cross = CrossAttention(tiny(), F, T)
    assert cross.shared.pos.shape == (1, 12, 8)  # 2T joint positions tell the modalities apart
    ind = Independent(tiny(), F, T)
    assert ind.a_top.pos.shape == ind.v_top.pos.shape == (1, 6, 8) and ind.a_top.pos is not ind.v_top.pos


def test_no_specific_layers_project_to_embed_dim_then_the_shared_stem():
    torch.manual_seed(0)
    m = UAVM(tiny(n_specific=0), F, T)
    assert m.a_in.proj.weight.shape == (16, 12) and m.v_in.proj.weight.shape == (16, 10)
    assert m.shared.proj.weight.shape == (8, 16)  # then to S_dim inside the shared stack
    b = batch()
    layers = m.embed(b.audio, None)
    assert list(layers) == ["layer0", "layer1", "layer2"] and layers["layer0"].shape == (4, 6, 8)
    # with equal widths the authors still put LayerNorm + Linear in front (no Identity)
    m0 = UAVM(tiny(n_specific=0, embed_dim=12, s_dim=0), F, T)
    assert m0.a_in.proj.weight.shape == (12, 12)
    none = UAVM(tiny(n_specific=0, n_shared=0), F, T)
    assert list(none.embed(b.audio, None)) == ["layer0"] and none.a_head.fc.weight.shape == (5, 16)


def test_initialisation_switch():
    torch.manual_seed(0)
    authors = UAVM(tiny(embed_dim=64, s_dim=0), F, T)
    torch.manual_seed(0)
    timm = UAVM(tiny(embed_dim=64, s_dim=0, init="timm"), F, T)
    w_a, w_t = authors.shared.blocks[0].mlp.fc1.weight.detach(), timm.shared.blocks[0].mlp.fc1.weight.detach()
    bound = 1 / 64**0.5  # PyTorch's default Linear init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), biases too
    assert float(w_a.abs().max()) <= bound and float(w_a.std()) == pytest.approx(bound / 3**0.5, rel=0.05)
    assert authors.shared.blocks[0].mlp.fc1.bias.abs().max() > 0
    assert float(w_t.std()) == pytest.approx(0.02, rel=0.05) and timm.shared.blocks[0].mlp.fc1.bias.abs().max() == 0
    for m in (authors, timm):  # trunc-normal(0.02) positions under both
        assert float(m.shared.pos.detach().std()) == pytest.approx(0.02, rel=0.15)


def test_presets_name_the_paper_and_the_cpu_sizes():
    assert UAVM.presets["paper"]["embed_dim"] == 1024 and UAVM.presets["cpu"]["embed_dim"] == 128
    assert Independent.presets is UAVM.presets and CrossAttention.presets is UAVM.presets
