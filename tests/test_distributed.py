"""Data-parallel training: per-rank shares of one global batch, the same augmentations whatever the
number of ranks, and a real 2-process gloo run that matches a 1-process run."""

import json

import numpy as np
import pytest
import torch

from avbench.api import FeatureSpec
from avbench.cache.reader import FeatureCache
from avbench.cli import main
from avbench.commands import run as run_cmd
from avbench.train import augment, distributed
from avbench.train.engine import Engine
from avbench.train.recipe import Recipe
from avbench_strategies.uavm import UAVM, UAVMConfig
from helpers import run_args, tiny_cache


def _engine(cache, recipe, rank=0, world=1, seed=3):
    torch.manual_seed(0)
    f = cache.features
    model = UAVM(UAVMConfig(embed_dim=16), FeatureSpec(f.audio_dim, f.video_dim, f.num_steps), cache.task)
    return Engine(model, cache, recipe, seed=seed, rank=rank, world=world, progress=False)


def _batch(engine, plan, step):
    return engine.make_batch(engine.train_split.gather(plan.fetch), train=True, step=step, plan=plan)


@pytest.mark.parametrize("world", [2, 3])
def test_rank_shares_rebuild_the_one_process_batch_exactly(tmp_path, world):
    cache = FeatureCache(tiny_cache(tmp_path / "c"))
    recipe = Recipe(batch_size=16, mixup_prob=0.5, device_resident="off")
    one = _engine(cache, recipe)
    glob = one.global_batches(epoch=0)[1]
    ref = _batch(one, one.plan_step(7, glob), 7)
    shares = [_engine(cache, recipe, rank=r, world=world) for r in range(world)]
    plans = [e.plan_step(7, glob) for e in shares]
    parts = [_batch(e, p, 7) for e, p in zip(shares, plans)]
    assert sum(len(p.fetch) - len(p.rows) for p in plans) > 0  # some mixup partners live on other ranks
    for field in ("audio", "video", "targets", "labels", "onsets", "index"):
        got = torch.cat([getattr(b, field) for b in parts])
        assert torch.equal(got, getattr(ref, field)), field
    # Loss scales make DDP's average of per-rank means, (1/W) sum_r scale_r * mean_r, the global mean:
    # scale_r = W * n_r / B (1 when the shares are equal).
    for p in plans:
        assert p.loss_scale == pytest.approx(world * len(p.rows) / 16)
    assert (world == 2) == all(p.loss_scale == 1.0 for p in plans)


def test_one_rank_batches_follow_the_recipe_module(tmp_path):
    """The engine's draws and mixing are those of augment.mixup + augment.time_roll (one rank)."""
    cache = FeatureCache(tiny_cache(tmp_path / "c"))
    recipe = Recipe(batch_size=16)
    e = _engine(cache, recipe, seed=5)
    rows = e.global_batches(0)[0]
    raw = e.train_split.gather(rows)
    got = e.make_batch(raw, train=True, step=11)
    rng = np.random.default_rng([5, 11, 0])
    a = augment.l2_normalize_steps(raw["audio"].float())
    v = augment.l2_normalize_steps(raw["video"].float())
    a, v, targets, partner, lam = augment.mixup(a, v, raw["labels"], recipe.mixup_prob, recipe.mixup_alpha,
                                                recipe.label_smoothing, rng)
    onsets = raw["onsets"] | (raw["onsets"][partner] & (lam < 1)[:, None])
    a, v, onsets = augment.time_roll(augment.random_shifts(16, cache.features.num_steps, rng), a, v, onsets)
    # UAVM trains on one modality per batch, but make_batch hands both over (no cross-modal protocol).
    assert torch.equal(got.audio, a) and torch.equal(got.video, v)
    assert torch.equal(got.targets, targets) and torch.equal(got.onsets, onsets)


def test_shards_cover_the_range_in_order():
    for n in (0, 1, 7, 48):
        for world in (1, 2, 3, 5):
            parts = [distributed.shard(n, r, world) for r in range(world)]
            assert parts[0][0] == 0 and parts[-1][1] == n
            assert all(parts[i][1] == parts[i + 1][0] for i in range(world - 1))
            sizes = [b - a for a, b in parts]
            assert max(sizes) - min(sizes) <= 1


def test_worker_command_line_round_trips_without_nproc():
    from avbench.cli import build_parser

    argv = ["run", "--strategy", "uavm", "--dataset", "synth", "--seeds", "0,2", "--epochs", "3", "--set",
            "data.classes=4", "--set", "lr=0.01", "--results-dir", "r", "--no-progress", "--resume",
            "--output-json", "o.json", "--nproc", "2"]
    parser = build_parser()
    args = parser.parse_args(argv)
    again = parser.parse_args(run_cmd.worker_args(args))
    keep = {k: v for k, v in vars(args).items() if k not in ("nproc", "func")}
    assert {k: v for k, v in vars(again).items() if k not in ("nproc", "func")} == keep and again.nproc == 1
    cmd = distributed.torchrun_command(2, ["run"])
    assert cmd[1:] == ["-m", "torch.distributed.run", "--nproc-per-node=2", "--standalone", "-m", "avbench", "run"]


@pytest.mark.slow
def test_two_gloo_processes_match_one_process(tmp_path):
    """Tolerance: both runs see the same global batches and the same augmentation draws, and DDP's
    averaged gradient equals the full-batch mean; only float summation order differs (fp32, ~1e-7
    relative per step). Over 12 steps that cannot move accuracy by more than one test clip (1/48), nor
    mAP by 1e-3; on this machine the two runs agree exactly."""
    sets = ("embed_dim=16", "train.amp=fp32")
    one, two = tmp_path / "one.json", tmp_path / "two.json"
    assert main(run_args("uavm", tmp_path / "r1", "--output-json", str(one), epochs=2, model_sets=sets)) == 0
    assert main(run_args("uavm", tmp_path / "r2", "--output-json", str(two), "--nproc", "2", epochs=2,
                         model_sets=sets)) == 0
    a = json.loads(one.read_text())["seeds"][0]["metrics"]
    b = json.loads(two.read_text())["seeds"][0]["metrics"]
    for k in a:
        if "per_s" in k or k == "wall_seconds":
            continue
        tol = 1 / 48 + 1e-9 if k.endswith("acc") or k.endswith("top5") else 1e-3
        assert abs(a[k] - b[k]) <= tol, (k, a[k], b[k])
    from avbench.tracking import Tracker

    tr = Tracker(tmp_path / "r2")
    child = tr.children(json.loads(two.read_text())["parent_run_id"])[0]
    path = tr.client.download_artifacts(child.info.run_id, "result.json", str(tmp_path))
    result = json.loads(open(path).read())
    assert result["throughput"]["world_size"] == 2
    assert len(result["history"]) == 2
    assert _count_runs(tmp_path / "r2") == 2  # rank 0 alone logged: one parent, one seed


def _count_runs(results):
    import sqlite3

    with sqlite3.connect(results / "mlflow.db") as c:
        return c.execute("select count(*) from runs").fetchone()[0]


def test_nproc_under_torchrun_is_refused(monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["run", "--strategy", "uavm", "--dataset", "synth", "--nproc", "2"]) == 2
    assert "under torchrun leave it out" in capsys.readouterr().err


def test_main_first_outside_a_group_just_runs():
    ctx = distributed.setup("cpu")
    assert (ctx.rank, ctx.world, ctx.owns_group) == (0, 1, False)
    assert distributed.main_first(lambda: 42, ctx) == 42
    assert distributed.all_gather_objects({"x": 1}) == [{"x": 1}]
