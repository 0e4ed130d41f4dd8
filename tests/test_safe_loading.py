"""Files from strangers are data, never code (issue 24): a checkpoint whose pickle would run a function
is refused by every entry point that reads one, in one line naming the file, and the function never
runs (it would create a marker file). avbench's own files are read by the safe loader; a user's own
legacy file is read in full only when named with ``--trust-checkpoint``.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch

from avbench.cli import main
from avbench.errors import UserError
from avbench.train import checkpoint
from helpers import TINY_SETS, run_args

SETS = [a for s in TINY_SETS for a in ("--set", s)]


class Planted:
    """What a hostile checkpoint holds: unpickling it calls ``open(marker, "w")``."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def hostile_files(tmp_path: Path) -> tuple[Path, dict[str, Path]]:
    marker = tmp_path / "MARKER"
    zip_file = tmp_path / "evil.pt"  # torch's zip format
    torch.save({"state_dict": {"w": torch.zeros(1)}, "name": "late_fusion", "config": {}, "x": Planted(marker)},
               zip_file)
    plain = tmp_path / "evil.pth"  # a bare pickle, as old torch wrote them
    with open(plain, "wb") as f:
        pickle.dump({"w": torch.zeros(1), "x": Planted(marker)}, f, protocol=2)
    return marker, {"zip": zip_file, "pickle": plain}


def assert_refused(capsys, rc: int, path: Path, marker: Path) -> None:
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    lines = [line for line in err.splitlines() if "error" in line.lower()]
    assert len(lines) == 1 and str(path) in lines[0] and "refused" in lines[0] and "Traceback" not in err, err
    assert "--trust-checkpoint" in lines[0]
    assert not marker.exists(), "the file's code ran"


def tiny(results: Path, *extra: str, seeds: str = "0") -> list[str]:
    return run_args("late_fusion", results, *extra, seeds=seeds, model_sets=())


@pytest.mark.parametrize("kind", ["zip", "pickle"])
def test_eval_checkpoint_refuses_code(tmp_path, capsys, kind):
    marker, files = hostile_files(tmp_path)
    args = ["eval", "--strategy", "late_fusion", "--checkpoint", str(files[kind]), "--dataset", "synth",
            "--results-dir", str(tmp_path / "res"), "--no-track", "--no-progress", *SETS]
    assert_refused(capsys, main(args), files[kind], marker)


@pytest.mark.parametrize("kind", ["zip", "pickle"])
def test_run_init_from_refuses_code(tmp_path, capsys, kind):
    marker, files = hostile_files(tmp_path)
    res = tmp_path / "res"
    assert_refused(capsys, main(tiny(res, "--init-from", str(files[kind]))), files[kind], marker)
    assert not (res / "runs").exists()


def test_a_planted_resume_checkpoint_is_refused(tmp_path, capsys):
    marker, files = hostile_files(tmp_path)
    res = tmp_path / "res"
    assert main(tiny(res)) == 0  # a real run: its group's checkpoint folder exists
    group = next((res / "checkpoints").iterdir())
    planted = group / "seed1.pt"
    planted.write_bytes(files["zip"].read_bytes())
    capsys.readouterr()
    assert_refused(capsys, main(tiny(res, "--resume", seeds="1")), planted, marker)


def test_avbench_own_checkpoints_are_read_by_the_safe_loader(tmp_path):
    res = tmp_path / "res"
    assert main([a for a in tiny(res) if a != "--no-save-model"]) == 0
    epoch_ckpt = next(res.glob("checkpoints/*/seed0.pt"))
    state = torch.load(epoch_ckpt, map_location="cpu", weights_only=True)  # model, optimizer, RNG, curve
    assert {"strategy", "optimizer", "rng", "history", "validation"} <= set(state)
    checkpoint.restore_rng(state["rng"])
    model = next(res.rglob("model.pt"))
    assert set(torch.load(model, map_location="cpu", weights_only=True)) >= {"state_dict", "name", "config"}


def test_eval_reads_safetensors_and_refuses_a_truncated_one(tmp_path, capsys):
    res = tmp_path / "res"
    assert main([a for a in tiny(res) if a != "--no-save-model"]) == 0
    state = torch.load(next(res.rglob("model.pt")), map_location="cpu", weights_only=True)
    st = tmp_path / "model.safetensors"
    checkpoint.save_safetensors(st, state["state_dict"], state["name"], state["config"])
    out = tmp_path / "eval.json"
    ev = ["eval", "--strategy", "late_fusion", "--dataset", "synth", "--results-dir", str(res), "--no-track",
          "--no-progress", "--output-json", str(out), *SETS]
    assert main([*ev[:3], "--checkpoint", str(st), *ev[3:]]) == 0
    assert json.loads(out.read_text())["metrics"]
    torn = tmp_path / "torn.safetensors"
    torn.write_bytes(st.read_bytes()[: st.stat().st_size // 2])
    capsys.readouterr()
    rc = main([*ev[:3], "--checkpoint", str(torn), *ev[3:]])
    err = capsys.readouterr().err
    assert rc == 2 and "not a readable safetensors file" in err and "Traceback" not in err


def test_trust_flag_is_the_only_way_to_unpickle_and_is_per_file(tmp_path, monkeypatch):
    marker, files = hostile_files(tmp_path)
    monkeypatch.setenv(checkpoint.TRUST_ENV, "")  # restored after the test: trust never leaks out of it
    with pytest.raises(UserError, match="refused"):
        checkpoint.load_file(files["zip"])
    checkpoint.trust(files["pickle"])  # trusting one file trusts no other
    with pytest.raises(UserError, match="refused"):
        checkpoint.load_file(files["zip"])
    assert not marker.exists()
    checkpoint.trust(files["zip"])  # the user's explicit decision for this file: it is read in full
    checkpoint.load_file(files["zip"])
    assert marker.exists()


def test_a_file_that_is_no_checkpoint_at_all_is_one_line(tmp_path):
    bad = tmp_path / "x.pt"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(UserError, match="not a readable PyTorch checkpoint"):
        checkpoint.load_file(bad)


def test_strategy_extra_state_is_read_by_the_safe_loader(tmp_path):
    """vq_codes carries its CLUB estimators' Adam moments and reset generator as extra state: tensors
    and plain containers, so an epoch checkpoint of it loads weights-only and restores them exactly."""
    from test_vq_codes import _batch, _small

    m = _small(reset_after=1)
    m.train()
    m.begin_stage("pretrain")
    opt = torch.optim.Adam(list(m.trainable_parameters()), lr=1e-3)
    out = m.training_step(_batch(seed=0), 0)
    opt.zero_grad()
    out["loss"].backward()
    opt.step()
    m.after_optimizer_step(0)
    path = tmp_path / "vq.pt"
    torch.save({"strategy": m.state_dict(), "optimizer": opt.state_dict()}, path)
    state = checkpoint.load_file(path)
    extra = state["strategy"]["_extra_state"]
    assert set(extra) >= {"club_optimizers", "reset_generator"}
    assert torch.equal(extra["reset_generator"], m._reset_generator.get_state())
