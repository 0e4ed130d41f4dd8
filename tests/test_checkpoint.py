"""``avbench.train.checkpoint`` as a unit: an epoch checkpoint saved and loaded back through the
weights-only reader restores the model, the optimizer and every RNG exactly (a resumed run continues
as the uninterrupted one would), the stage of a multi-stage strategy first; a checkpoint for another
model or a file that is no checkpoint is refused in one line; a failed save keeps the previous file.

tests/test_safe_loading.py covers the other side: hostile pickles refused by every entry point, the
``--trust-checkpoint`` switch, and avbench's own files from a real run read weights-only.
"""

from __future__ import annotations

import pickle
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from avbench.api import Batch, FeatureSpec, TaskSpec
from avbench.errors import UserError
from avbench.train import checkpoint
from avbench_strategies.baselines import LateFusion, NaiveAV

FEAT = FeatureSpec(audio_dim=6, video_dim=5, num_steps=4)
TASK = TaskSpec(num_classes=3)


def _model(seed: int = 0) -> LateFusion:
    torch.manual_seed(seed)
    return LateFusion(LateFusion.Config(), FEAT, TASK)


def _batch(seed: int) -> Batch:
    g = torch.Generator().manual_seed(seed)
    y = F.one_hot(torch.arange(6) % 3, 3).float()
    return Batch(audio=torch.randn(6, 4, 6, generator=g), video=torch.randn(6, 4, 5, generator=g), targets=y, labels=y)


def _step(model, opt, seed: int) -> None:
    opt.zero_grad()
    model.training_step(_batch(seed), seed)["loss"].backward()
    opt.step()


def _draws() -> tuple:
    return torch.rand(3).tolist(), np.random.rand(3).tolist(), [random.random() for _ in range(3)]


def test_model_optimizer_and_rng_round_trip_through_the_weights_only_reader(tmp_path):
    model = _model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for s in range(2):
        _step(model, opt, s)
    torch.manual_seed(7)
    np.random.seed(7)
    random.seed(7)
    path = tmp_path / "ckpt" / "seed0.pt"
    history = [{"epoch": 1, "train/loss": 1.25}, {"epoch": 2, "train/loss": 0.5}]
    checkpoint.save_checkpoint(path, model, opt, global_epoch=2, global_step=2, history=history,
                               validation={"best": 0.5, "curve": [0.25, 0.5]})
    expected_draws = _draws()  # what the uninterrupted run draws next
    _step(model, opt, 2)  # ... and where its next step takes the weights
    expected = {k: v.clone() for k, v in model.state_dict().items()}

    assert torch.load(path, map_location="cpu", weights_only=True)["global_step"] == 2  # the safe reader takes it
    resumed = _model(seed=1)  # other initial weights: everything must come from the file
    opt2 = torch.optim.AdamW(resumed.parameters(), lr=1e-2)
    state = checkpoint.load_checkpoint(path, resumed)
    opt2.load_state_dict(state["optimizer"])
    assert state["global_epoch"] == 2 and state["history"] == history and state["stage"] == "train"
    assert state["validation"] == {"best": 0.5, "curve": [0.25, 0.5]} and state["name"] == "late_fusion"
    torch.manual_seed(123)  # the resumed process's RNGs are elsewhere until restored
    np.random.seed(123)
    random.seed(123)
    checkpoint.restore_rng(state["rng"])
    assert _draws() == expected_draws
    _step(resumed, opt2, 2)
    for k, v in resumed.state_dict().items():
        assert torch.equal(v, expected[k]), k  # bit for bit: weights and Adam moments both restored
    assert sorted(p.name for p in path.parent.iterdir()) == ["seed0.pt"]  # no temporary left


def test_the_stage_is_restored_before_the_weights(tmp_path):
    """A checkpoint of vq_codes' downstream stage loads into a fresh (pretrain-stage) model."""
    from test_vq_codes import _small

    m = _small()
    m.begin_stage("pretrain")
    m.begin_stage("downstream")
    opt = torch.optim.Adam(list(m.trainable_parameters()), lr=1e-3)
    path = tmp_path / "vq.pt"
    checkpoint.save_checkpoint(path, m, opt, global_epoch=3, global_step=30, history=[])
    fresh = _small()
    assert fresh.stage == "pretrain"
    state = checkpoint.load_checkpoint(path, fresh)
    assert fresh.stage == "downstream" and state["global_step"] == 30
    for k, v in fresh.state_dict().items():
        if isinstance(v, torch.Tensor):
            assert torch.equal(v, m.state_dict()[k]), k


def test_a_checkpoint_of_another_model_or_no_epoch_checkpoint_is_refused_in_one_line(tmp_path):
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    path = tmp_path / "seed0.pt"
    checkpoint.save_checkpoint(path, model, opt, 1, 1, [])
    torch.manual_seed(0)
    other = NaiveAV(NaiveAV.Config(), FEAT, TASK)
    with pytest.raises(UserError, match=r"checkpoint is for late_fusion with another configuration") as e:
        checkpoint.load_checkpoint(path, other)
    assert "\n" not in str(e.value)
    weights = tmp_path / "model.pt"  # a final model file, not an epoch checkpoint
    torch.save({"state_dict": model.state_dict(), "name": "late_fusion", "config": model.config_dict()}, weights)
    with pytest.raises(UserError, match="not an avbench epoch checkpoint; remove it or run without --resume") as e:
        checkpoint.load_checkpoint(weights, _model())
    assert "\n" not in str(e.value)


def _torn(tmp_path):
    p = tmp_path / "torn.pt"
    torch.save({"w": torch.zeros(64)}, p)
    p.write_bytes(p.read_bytes()[:200])
    return p


def _text(tmp_path):
    p = tmp_path / "notes.pt"
    p.write_text("epoch 3, loss 0.25\n")
    return p


def _empty(tmp_path):
    p = tmp_path / "empty.pt"
    p.write_bytes(b"")
    return p


def _pickled_object(tmp_path):
    p = tmp_path / "obj.pt"
    with open(p, "wb") as f:
        pickle.dump(FeatureSpec(1, 2, 3), f)  # a harmless class, but a class: refused, not built
    return p


@pytest.mark.parametrize("make,words", [(_torn, "not a readable PyTorch checkpoint"),
                                        (_text, "not a readable PyTorch checkpoint"),
                                        (_empty, "not a readable PyTorch checkpoint"),
                                        (_pickled_object, "refused: the safe loader cannot read this pickle")])
def test_a_file_that_is_not_a_checkpoint_is_one_line_naming_it(tmp_path, make, words):
    p = make(tmp_path)
    with pytest.raises(UserError) as e:
        checkpoint.load_checkpoint(p, _model())
    msg = str(e.value)
    assert msg.startswith(f"{p}: ") and words in msg and "\n" not in msg, msg
    with pytest.raises(UserError, match="no such checkpoint file"):
        checkpoint.load_file(tmp_path / "missing.pt")


def test_a_failed_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    path = tmp_path / "seed0.pt"
    checkpoint.save_checkpoint(path, model, opt, 1, 10, [{"epoch": 1}])
    before = path.read_bytes()
    real = torch.save

    def full_disk(obj, f, *a, **k):
        real(obj, f, *a, **k)  # the bytes reach the temporary file ...
        raise OSError(28, "No space left on device")  # ... and the rename never happens

    monkeypatch.setattr(checkpoint.torch, "save", full_disk)
    with pytest.raises(OSError):
        checkpoint.save_checkpoint(path, model, opt, 2, 20, [{"epoch": 1}, {"epoch": 2}])
    monkeypatch.undo()
    assert path.read_bytes() == before and checkpoint.load_file(path)["global_step"] == 10
    assert [p.name for p in tmp_path.iterdir()] == ["seed0.pt"]


def test_safetensors_round_trip_with_name_and_config(tmp_path):
    model = _model()
    path = tmp_path / "model.safetensors"
    checkpoint.save_safetensors(path, model.state_dict(), model.name, model.config_dict())
    assert checkpoint.is_safetensors(path) and not checkpoint.is_safetensors(_text(tmp_path))
    state = checkpoint.load_file(path)
    assert state["name"] == "late_fusion" and state["config"] == json_round_trip(model.config_dict())
    assert state["state_dict"].keys() == model.state_dict().keys()
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state["state_dict"].items())


def json_round_trip(d):
    import json

    return json.loads(json.dumps(d, sort_keys=True, default=str))
