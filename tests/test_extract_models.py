"""timm extractors: 1-channel audio stem, local checkpoints, identities, output shapes."""

from __future__ import annotations

import pytest
import timm
import torch

from avbench.errors import UserError
from avbench.extract.models import AudioExtractor, VideoExtractor, build_model, file_sha256, key_identity

CPU = torch.device("cpu")


def _checkpoint(path, wrap=False):
    """A convnext_atto checkpoint with an RGB stem and a classifier, as a training run would save it."""
    torch.manual_seed(123)
    model = timm.create_model("convnext_atto", pretrained=False, num_classes=7)
    sd = model.state_dict()
    if wrap:
        sd = {"state_dict": {f"module.{k}": v for k, v in sd.items()}, "epoch": 3}
    torch.save(sd, path)
    return model.state_dict()


def test_random_init_is_reproducible_and_audio_stem_has_one_channel():
    a1, ident = build_model("convnext_atto", in_chans=1, pretrained=False, weights=None)
    a2, _ = build_model("convnext_atto", in_chans=1, pretrained=False, weights=None)
    assert ident["weights"] == "random-init:seed0" and ident["in_chans"] == 1
    assert a1.stem[0].weight.shape[1] == 1
    for (k, v), (_, w) in zip(a1.state_dict().items(), a2.state_dict().items()):
        assert torch.equal(v, w), k


def test_local_checkpoint_audio_stem_is_summed_rgb(tmp_path):
    path = tmp_path / "atto.pth"
    saved = _checkpoint(path, wrap=True)
    model, ident = build_model("convnext_atto", in_chans=1, pretrained=False, weights=path)
    assert ident["weights"] == f"sha256:{file_sha256(path)}" and ident["weights_file"] == str(path)
    assert "weights_file" not in key_identity(ident)  # the hash decides, not where the file lies
    torch.testing.assert_close(model.stem[0].weight, saved["stem.0.weight"].sum(dim=1, keepdim=True))
    torch.testing.assert_close(model.stages[2].blocks[1].conv_dw.weight, saved["stages.2.blocks.1.conv_dw.weight"])
    video, vid = build_model("convnext_atto", in_chans=3, pretrained=False, weights=path)
    torch.testing.assert_close(video.stem[0].weight, saved["stem.0.weight"])
    assert vid["weights"] == ident["weights"]


def test_wrong_checkpoint_is_a_user_error(tmp_path):
    path = tmp_path / "femto.pth"
    torch.save(timm.create_model("convnext_femto", pretrained=False).state_dict(), path)
    with pytest.raises(UserError, match="has shape"):
        build_model("convnext_atto", in_chans=1, pretrained=False, weights=path)
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="cannot read checkpoint"):
        build_model("convnext_atto", in_chans=1, pretrained=False, weights=tmp_path / "junk.pth")


def test_pretrained_without_hub_access_is_a_clear_error(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # no network wait in tests
    try:
        _, ident = build_model("convnext_atto", in_chans=1, pretrained=True, weights=None)
    except UserError as e:
        assert "--no-pretrained" in str(e) and "convnext_atto" in str(e)
    else:  # weights were in a local hub cache: then the identity names them
        assert ident["weights"].startswith("timm-pretrained:convnext_atto")


def test_extractor_output_shapes():
    am, aid = build_model("convnext_atto", in_chans=1, pretrained=False, weights=None)
    audio = AudioExtractor(am, aid, CPU, None)
    assert audio.probe(1000, 128) == (31, 320)
    assert audio.probe(990, 128) == (30, 320)  # the reference's 990 frames give exactly 30 steps
    out = audio(torch.randn(2, 1000, 128))
    # Mean over the 4 frequency bins of forward_features, per time step.
    ff = am.forward_features(torch.randn(2, 1000, 128).transpose(1, 2).unsqueeze(1))
    assert ff.shape == (2, 320, 4, 31) and out.shape == (2, 31, 320)
    vm, vid = build_model("convnext_atto", in_chans=3, pretrained=False, weights=None)
    video = VideoExtractor(vm, vid, CPU, None, chunk=4)
    frames = torch.randint(0, 255, (6, 40, 52, 3), dtype=torch.uint8)
    feats = video(frames)
    assert feats.shape == (6, 320)
    # ImageNet normalisation and spatial mean of forward_features, computed by hand for frame 0.
    x = frames[:1].permute(0, 3, 1, 2).float() / 255
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    x = (x - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
    with torch.no_grad():
        ref = vm.forward_features(x).mean(dim=(2, 3))
    torch.testing.assert_close(feats[:1], ref, rtol=1e-4, atol=1e-4)
    bf16 = VideoExtractor(vm, vid, CPU, torch.bfloat16)(frames[:2])
    torch.testing.assert_close(bf16, feats[:2], rtol=0.1, atol=0.1)
