"""The UAVM authors' released state dicts load into uavm / independent / cross_attention.

The fixture below is written from facts about the authors' state dicts (YuanGongND/uavm,
``src/models/mm_trans.py``): the key names and the tensor shapes each class creates for a given
configuration. No code of theirs is used. Every key must be mapped or known-unused, nothing may be
left over on either side, and a mismatch is refused in one line naming the key and both shapes.
"""

import pytest
import torch

from avbench.api import FeatureSpec, TaskSpec
from avbench.authors_checkpoint import (
    load_into,
    map_reference,
    read_weights,
    strip_data_parallel,
)
from avbench.errors import UserError
from avbench_strategies.uavm import UAVM, CrossAttention, Independent, UAVMConfig

T, DA, DV, C = 5, 12, 10, 7


def single_trans(prefix, dim, depth, seq, in_dim):
    """Keys and shapes of one of their ``SingleTrans`` stacks (head and in_proj always created)."""
    keys = {f"{prefix}.pos_embed": (1, seq, dim)}
    for i in range(depth):
        b = f"{prefix}.blocks.{i}"
        keys.update({f"{b}.norm1.weight": (dim,), f"{b}.norm1.bias": (dim,), f"{b}.attn.qkv.weight": (3 * dim, dim),
                     f"{b}.attn.proj.weight": (dim, dim), f"{b}.attn.proj.bias": (dim,), f"{b}.norm2.weight": (dim,),
                     f"{b}.norm2.bias": (dim,), f"{b}.mlp.fc1.weight": (4 * dim, dim), f"{b}.mlp.fc1.bias": (4 * dim,),
                     f"{b}.mlp.fc2.weight": (dim, 4 * dim), f"{b}.mlp.fc2.bias": (dim,)})
    keys.update({f"{prefix}.in_layernorm.weight": (in_dim,), f"{prefix}.in_layernorm.bias": (in_dim,),
                 f"{prefix}.in_proj.weight": (dim, in_dim), f"{prefix}.in_proj.bias": (dim,),
                 f"{prefix}.mlp_head.0.weight": (dim,), f"{prefix}.mlp_head.0.bias": (dim,),
                 f"{prefix}.mlp_head.1.weight": (C, dim), f"{prefix}.mlp_head.1.bias": (C,)})
    return keys


def authors_state(cls, embed, n, ns, s_dim=0, dp=False):
    """A state dict shaped as their ``cls(embed, heads, n, ns, C, T, T, DA, DV, s_dim)`` saves it."""
    s = s_dim or embed
    keys = {}
    if n == 0:
        for m, d in (("a", DA), ("v", DV)):
            keys.update({f"{m}_in_proj.0.weight": (d,), f"{m}_in_proj.0.bias": (d,),
                         f"{m}_in_proj.1.weight": (embed, d), f"{m}_in_proj.1.bias": (embed,)})
    else:
        keys.update(single_trans("a_trans", embed, n, T, DA))
        keys.update(single_trans("v_trans", embed, n, T, DV))
    if ns == 0:
        for m in ("a", "v"):
            keys.update({f"{m}_mlp.0.weight": (embed,), f"{m}_mlp.0.bias": (embed,),
                         f"{m}_mlp.1.weight": (C, embed), f"{m}_mlp.1.bias": (C,)})
    elif cls == "SeperateTrans":
        keys.update(single_trans("a_s_trans", s, ns, T, embed))
        keys.update(single_trans("v_s_trans", s, ns, T, embed))
    else:
        keys.update(single_trans("s_trans", s, ns, 2 * T if cls == "FullAttTrans" else T, embed))
    g = torch.Generator().manual_seed(0)
    state = {k: torch.randn(shape, generator=g) for k, shape in keys.items()}
    return {f"module.{k}": v for k, v in state.items()} if dp else state


OURS = {"UnifiedTrans": UAVM, "SeperateTrans": Independent, "FullAttTrans": CrossAttention}
CASES = [(cls, n, ns, e, s) for cls in OURS for (n, ns) in ((3, 3), (0, 2), (2, 0), (0, 0), (1, 1))
         for (e, s) in ((12, 0), (8, 4)) if not (cls == "FullAttTrans" and ns == 0)]


def model(cls, n, ns, e, s):
    cfg = UAVMConfig(embed_dim=e, num_heads=2, n_specific=n, n_shared=ns, s_dim=s)
    return OURS[cls](cfg, FeatureSpec(DA, DV, T), TaskSpec(C))


@pytest.mark.parametrize("cls,n,ns,e,s", CASES)
def test_every_key_maps_and_nothing_is_left_over(cls, n, ns, e, s):
    m = model(cls, n, ns, e, s)
    state = authors_state(cls, e, n, ns, s, dp=True)
    plain = strip_data_parallel(state)
    assert len(plain) == len(state) and not any(k.startswith("module.") for k in plain)
    ours_to_theirs, unused = m.reference_key_map()
    ours = m.state_dict()
    assert set(ours_to_theirs) == set(ours)  # every key of ours has a source
    assert set(ours_to_theirs.values()) | set(unused) == set(plain)  # every key of theirs is used or known-unused
    assert not set(ours_to_theirs.values()) & set(unused)
    mapped = map_reference(m, plain)
    for k, v in mapped.items():
        assert tuple(v.shape) == tuple(ours[k].shape)
    m.load_state_dict(mapped, strict=True)
    # the tensors arrive where their forward uses them
    top = {"UnifiedTrans": "s_trans", "FullAttTrans": "s_trans", "SeperateTrans": "a_s_trans"}[cls]
    if ns:
        name = "shared" if cls != "SeperateTrans" else "a_top"
        head = "head" if cls != "SeperateTrans" else "a_head"
        assert torch.equal(getattr(m, name).pos, plain[f"{top}.pos_embed"])
        assert torch.equal(getattr(m, head).fc.weight, plain[f"{top}.mlp_head.1.weight"])
        assert torch.equal(getattr(m, name).norm.weight, plain[f"{top}.in_layernorm.weight"])
    else:
        assert torch.equal(m.a_head.norm.weight, plain["a_mlp.0.weight"])
    if n:
        assert torch.equal(m.v_stem.blocks[n - 1].mlp.fc2.weight, plain[f"v_trans.blocks.{n - 1}.mlp.fc2.weight"])
        assert "a_trans.mlp_head.1.weight" in unused  # created by their code, never used by its forward
    else:
        assert torch.equal(m.a_in.proj.weight, plain["a_in_proj.1.weight"])
    if ns and (s or e) == e:  # equal widths: their s_trans.in_proj exists but is skipped
        assert f"{top}.in_proj.weight" in unused and (getattr(m, "shared", None) or m.a_top).proj is None


def _write(tmp_path, state):
    p = tmp_path / "best_audio_model.pth"
    torch.save(state, p)
    return p


def test_a_dataparallel_file_loads_through_the_public_loader(tmp_path):
    m = model("UnifiedTrans", 3, 3, 12, 0)
    w = read_weights(_write(tmp_path, authors_state("UnifiedTrans", 12, 3, 3, dp=True)))
    assert w.kind == "reference" and not any(k.startswith("module.") for k in w.state)
    info = load_into(m, w)
    assert info["checkpoint_kind"] == "reference" and len(info["checkpoint_sha256"]) == 64
    assert torch.equal(m.a_stem.pos, w.state["a_trans.pos_embed"])


@pytest.mark.parametrize("over,fragment", [
    ({"n_shared": 2}, "s_trans.blocks.2.norm1.weight [12]: checkpoint key with no place"),
    ({"n_specific": 4}, "checkpoint has no a_trans.blocks.3.norm1.weight (model a_stem.blocks.3.norm1.weight [12])"),
    ({"s_dim": 8}, "s_trans.pos_embed: checkpoint [1, 5, 12], model [1, 5, 8] (shared.pos)"),
])
def test_a_mismatch_is_refused_in_one_line_naming_the_key_and_both_shapes(over, fragment):
    cfg = {"n": 3, "ns": 3, "e": 12}
    m = UAVM(UAVMConfig(embed_dim=12, num_heads=2, **{"n_specific": 3, "n_shared": 3, "s_dim": 0, **over}),
             FeatureSpec(DA, DV, T), TaskSpec(C))
    state = authors_state("UnifiedTrans", cfg["e"], cfg["n"], cfg["ns"])
    with pytest.raises(UserError) as e:
        map_reference(m, state)
    msg = str(e.value)
    assert "\n" not in msg and fragment in msg
    assert "--set n_specific=3 --set embed_dim=12 --set n_shared=3 --set s_dim=12" in msg


def test_the_cross_attention_file_is_told_apart_by_its_2T_positions():
    state = authors_state("FullAttTrans", 12, 3, 3)
    with pytest.raises(UserError, match=r"s_trans.pos_embed: checkpoint \[1, 10, 12\], model \[1, 5, 12\].*"
                                        r"FullAttTrans \(--strategy cross_attention\)"):
        map_reference(model("UnifiedTrans", 3, 3, 12, 0), state)
    with pytest.raises(UserError, match=r"no s_trans.pos_embed.*SeperateTrans \(--strategy independent\)"):
        map_reference(model("UnifiedTrans", 3, 3, 12, 0), authors_state("SeperateTrans", 12, 3, 3))


def test_their_released_modal_independent_model_is_uavm_without_shared_layers():
    """Their released modal-independent checkpoints are UnifiedTrans with depth_i 6, depth_s 0."""
    state = authors_state("UnifiedTrans", 12, 6, 0)
    g = torch.Generator().manual_seed(1)
    audio, video = torch.randn(3, T, DA, generator=g), torch.randn(3, T, DV, generator=g)
    preds = []
    for cls in ("UnifiedTrans", "SeperateTrans"):
        m = model(cls, 6, 0, 12, 0)
        m.load_state_dict(map_reference(m, state), strict=True)
        assert not [k for k in m.state_dict() if k.startswith(("shared.", "a_top.", "v_top."))]  # no shared layers
        assert torch.equal(m.a_head.fc.weight, state["a_mlp.1.weight"])
        assert torch.equal(m.v_head.fc.weight, state["v_mlp.1.weight"])
        with torch.no_grad():
            preds.append(m.eval().predict(audio, video))
    # Same file, same architecture under either name: the same predictions.
    assert preds[0].shape == (3, C) and torch.allclose(preds[0], preds[1])


def test_a_file_that_is_not_a_checkpoint_is_refused(tmp_path):
    bad = tmp_path / "x.pth"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(UserError, match="not a readable PyTorch checkpoint"):
        read_weights(bad)
    with pytest.raises(UserError, match="no such checkpoint"):
        read_weights(tmp_path / "missing.pth")
