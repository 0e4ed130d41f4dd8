"""event_layers (paper 003): pooling, onset fallback, vote, union, shapes/gradients, behaviour on synth."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from avbench.api import Batch, FeatureSpec, TaskSpec
from avbench.cache import FeatureCache
from avbench.config import apply_overrides
from avbench.datasets.synth import SynthKnobs, build_synth_cache
from avbench.errors import UserError
from avbench.metrics.multilabel import head_union_metrics, union_of_argmax
from avbench.registry import Registry
from avbench_strategies.event_layers import (
    HEADS,
    EventLayers,
    EventLayersConfig,
    onset_pool,
    resolve_k,
    topk_pool,
    vote_scores,
)

FEAT = FeatureSpec(audio_dim=6, video_dim=5, num_steps=10)
TASK = TaskSpec(num_classes=4)


def make(cfg: EventLayersConfig | None = None, features: FeatureSpec = FEAT, task: TaskSpec = TASK) -> EventLayers:
    torch.manual_seed(0)
    return EventLayers(cfg or EventLayersConfig(embed_dim=8), features, task)


def batch(b: int = 3, features: FeatureSpec = FEAT, c: int = 4, onsets: torch.Tensor | None = None) -> Batch:
    g = torch.Generator().manual_seed(1)
    y = F.one_hot(torch.arange(b) % c, c).float()
    return Batch(audio=torch.randn(b, features.num_steps, features.audio_dim, generator=g),
                 video=torch.randn(b, features.num_steps, features.video_dim, generator=g),
                 targets=y, labels=y, onsets=onsets)


# --- k and top-k ---------------------------------------------------------------------------------
def test_resolve_k_keeps_the_paper_ratio_and_bounds():
    assert resolve_k(100, 0.1) == 10  # the paper's T = 100, k = 10
    assert resolve_k(30, 0.1) == 3
    assert resolve_k(5, 0.1) == 1  # 0.5 rounds up: at least 1 anyway
    assert resolve_k(4, 0.1) == 1
    assert resolve_k(30, 0.1, k=7) == 7  # absolute k overrides
    assert resolve_k(30, 0.1, k=99) == 30


def test_topk_pool_picks_the_highest_score_steps():
    z = torch.arange(2 * 6 * 2, dtype=torch.float32).reshape(2, 6, 2)
    scores = torch.tensor([[0.1, 5.0, -1.0, 3.0, 0.0, 2.0],
                           [9.0, 0.0, 0.0, 0.0, 8.0, -3.0]])
    pooled, weights = topk_pool(z, scores, 2)
    assert weights[0].nonzero().flatten().tolist() == [1, 3] and weights[1].nonzero().flatten().tolist() == [0, 4]
    assert torch.all(weights.sum(1) == 1.0)
    torch.testing.assert_close(pooled[0], (z[0, 1] + z[0, 3]) / 2)
    torch.testing.assert_close(pooled[1], (z[1, 0] + z[1, 4]) / 2)


def test_instant_head_pools_top_k_by_v_dot_a_through_the_model():
    # project=false: the score is the raw v_t . a_t; steps 2, 5, 7 carry aligned audio and video.
    feats = FeatureSpec(audio_dim=3, video_dim=3, num_steps=10)
    m = make(EventLayersConfig(project=False, topk=3), feats)
    m.heads["instant"] = nn.Identity()  # expose the pooled feature
    a = torch.zeros(1, 10, 3)
    v = torch.zeros(1, 10, 3)
    a[0, :, 0] = 0.1
    v[0, :, 1] = 0.1  # orthogonal background: score 0
    for t, s in ((2, 1.0), (5, 3.0), (7, 2.0), (8, 0.5)):
        a[0, t, 2] = s
        v[0, t, 2] = 1.0
    pooled = m.head_logits(a, v)["instant"][0]
    z = torch.cat([v, a], dim=-1)[0]  # concat(v_t, a_t)
    torch.testing.assert_close(pooled, z[[2, 5, 7]].mean(0))
    assert not torch.allclose(pooled, z[[5, 7, 8]].mean(0))


# --- onsets ----------------------------------------------------------------------------------------
def test_onset_pool_uses_exactly_the_flagged_steps_and_flags_fallback():
    z = torch.randn(3, 8, 4)
    onsets = torch.zeros(3, 8, dtype=torch.bool)
    onsets[0, [1, 4, 6]] = True
    onsets[2, 7] = True
    pooled, fallback = onset_pool(z, onsets)
    torch.testing.assert_close(pooled[0], z[0, [1, 4, 6]].mean(0))
    torch.testing.assert_close(pooled[1], z[1].mean(0))  # no onset: continuous pool
    torch.testing.assert_close(pooled[2], z[2, 7])
    assert fallback.tolist() == [False, True, False]


def test_onset_fallbacks_counted_per_epoch_and_per_evaluation():
    m = make()
    onsets = torch.zeros(3, 10, dtype=torch.bool)
    onsets[0, 3] = True  # clips 1 and 2 fall back
    bt = batch(onsets=onsets)
    m.training_step(bt, 0)
    m.training_step(bt, 1)
    diag = m.epoch_diagnostics()
    assert diag["onset_fallbacks"] == 4.0 and diag["onset_fallback_rate"] == pytest.approx(4 / 6)
    assert m.epoch_diagnostics()["onset_fallbacks"] == 0.0  # reset each epoch

    m.eval()
    with torch.no_grad():
        m.predict(bt.audio, bt.video, onsets=onsets)
        m.predict(bt.audio, None)  # unimodal columns do not use the onset head
        m.predict(bt.audio, bt.video, onsets=onsets)
    stats = m.onset_fallback_stats()
    assert stats["eval_onset_fallbacks"] == 4.0 and stats["eval_clips"] == 6.0
    m.train()
    m.training_step(bt, 2)  # a new evaluation starts from zero
    with torch.no_grad():
        m.predict(bt.audio, bt.video)  # no onsets given: every clip falls back
    assert m.onset_fallback_stats()["eval_onset_fallbacks"] == 3.0


def test_onset_head_through_the_model_matches_the_flagged_mean():
    feats = FeatureSpec(audio_dim=4, video_dim=4, num_steps=6)
    m = make(EventLayersConfig(project=False), feats)
    m.heads["onset"] = nn.Identity()
    bt = batch(b=2, features=feats)
    onsets = torch.zeros(2, 6, dtype=torch.bool)
    onsets[0, [0, 5]] = True
    out = m.head_logits(bt.audio, bt.video, onsets)["onset"]
    z = torch.cat([bt.video, bt.audio], dim=-1)
    torch.testing.assert_close(out[0], z[0, [0, 5]].mean(0))
    torch.testing.assert_close(out[1], z[1].mean(0))


# --- vote and union ---------------------------------------------------------------------------------
def _heads_for(preds: list[int], confs: list[float], c: int = 4) -> torch.Tensor:
    """[H, 1, C] logits whose argmax is preds[i] with softmax confidence rising with confs[i]."""
    out = torch.zeros(len(preds), 1, c)
    for i, (p, s) in enumerate(zip(preds, confs)):
        out[i, 0, p] = s
    return out


def test_vote_majority_beats_a_more_confident_minority():
    logits = _heads_for([2, 2, 2, 1, 0], [1.0, 1.0, 1.0, 9.0, 8.0])
    winner, scores = vote_scores(logits)
    assert winner.item() == 2 and scores.argmax(-1).item() == 2


def test_vote_without_a_majority_takes_the_most_confident_layer():
    # Paper 003 (the default rule): 2-2-1 is no majority of 5, so the most confident layer's label
    # wins -- head 4 (class 1, a single vote, confidence 7) over the tied classes 0 and 3.
    logits = _heads_for([0, 0, 3, 3, 1], [2.0, 1.0, 1.5, 4.0, 7.0])
    winner, scores = vote_scores(logits)
    assert winner.item() == 1 and scores.argmax(-1).item() == 1
    # 3 of 5 is a majority: it wins against a more confident minority.
    assert vote_scores(_heads_for([2, 2, 2, 1, 0], [1.0, 1.0, 1.0, 9.0, 8.0]))[0].item() == 2
    # 2-1-1-1 is a plurality but no majority: the most confident layer (class 3) wins.
    assert vote_scores(_heads_for([0, 0, 1, 2, 3], [1.0, 1.0, 2.0, 3.0, 5.0]))[0].item() == 3
    assert vote_scores(_heads_for([0, 0, 1, 2, 3], [1.0, 1.0, 2.0, 3.0, 5.0]), rule="plurality")[0].item() == 0


def test_plurality_switch_breaks_ties_by_the_most_confident_tied_head():
    # 2-2-1: classes 0 and 3 tie; head 3 (class 3) is the most confident of the tied voters;
    # head 4 (class 1, a single vote) is more confident still but is not in the tie.
    logits = _heads_for([0, 0, 3, 3, 1], [2.0, 1.0, 1.5, 4.0, 7.0])
    winner, scores = vote_scores(logits, tie_break="tied", rule="plurality")
    assert winner.item() == 3 and scores.argmax(-1).item() == 3
    winner_all, scores_all = vote_scores(logits, tie_break="all", rule="plurality")
    assert winner_all.item() == 1 and scores_all.argmax(-1).item() == 1
    # Ranking below the winner follows the votes: class 0 (2 votes) above class 2 (none).
    assert scores[0, 0] > scores[0, 1] > scores[0, 2]


def test_vote_all_disagree_takes_the_most_confident_head():
    logits = torch.cat([_heads_for([0, 1, 2, 3], [1.0, 5.0, 2.0, 3.0], c=5),
                        _heads_for([4], [0.5], c=5)])
    assert vote_scores(logits)[0].item() == 1


def test_a_head_that_does_not_vote_neither_counts_nor_decides():
    # Heads in HEADS order: continuous, instant, onset, visual, audio. Clip 0: the onset head (index
    # 2) makes class 2 a 3-of-5 majority; without its vote, 2-2 of 4 is no majority and the most
    # confident voting head (visual, class 0) wins. Clip 1: the onset head is the most confident
    # of all, but it does not vote, so the most confident *voting* head decides.
    clip0 = _heads_for([2, 2, 2, 0, 0], [1.0, 1.0, 1.0, 3.0, 2.0])
    clip1 = _heads_for([0, 1, 3, 2, 2], [1.0, 4.0, 9.0, 2.0, 3.0])
    logits = torch.cat([clip0, clip1], dim=1)
    everyone = vote_scores(logits)[0].tolist()
    assert everyone == [2, 3]
    voters = torch.ones(5, 2, dtype=torch.bool)
    voters[2] = False
    winner, scores = vote_scores(logits, voters=voters)
    # clip 1 without the onset head: 1-1-2 of 4 (class 2 twice) is no majority; instant (4.0) decides
    assert winner.tolist() == [0, 1] and scores.argmax(-1).tolist() == [0, 1]


OLD_VOTE = dict(vote_rule="majority", vote_tie_break="tied", vote_output="counts")


def test_fallback_onset_head_does_not_vote_unless_switched_on():
    m = make(EventLayersConfig(embed_dim=8, **OLD_VOTE))
    bt = batch(b=16)
    onsets = torch.zeros(16, 10, dtype=torch.bool)
    onsets[:8, ::3] = True  # clips 8-15 have no onsets: their onset head falls back
    with torch.no_grad():
        heads = m.head_logits(bt.audio, bt.video, onsets)
        pred = m.predict(bt.audio, bt.video, onsets)
        on = make(EventLayersConfig(embed_dim=8, fallback_votes=True, **OLD_VOTE)).predict(bt.audio, bt.video, onsets)
        default = make().predict(bt.audio, bt.video, onsets)
    stacked = torch.stack([heads[h] for h in HEADS])
    voters = torch.ones(5, 16, dtype=torch.bool)
    voters[HEADS.index("onset"), 8:] = False
    torch.testing.assert_close(pred, vote_scores(stacked, voters=voters)[1])
    torch.testing.assert_close(on, vote_scores(stacked)[1])
    # The defaults (plurality, most confident of all, probability output) with the same voters.
    torch.testing.assert_close(default, vote_scores(stacked, False, "all", "plurality", voters, "probability")[1])
    assert m.onset_fallback_stats()["eval_onset_fallbacks"] == 8.0  # still counted


def test_head_union_metrics_are_the_set_f1_of_the_union():
    # Clip 0: heads say {0, 2}, truth {0, 2} -> F1 1. Clip 1: heads say {1}, truth {0} -> F1 0.
    # Clip 2: heads say {0, 1}, truth {1} -> F1 2/3. Samples F1 = (1 + 0 + 2/3) / 3; micro: tp 3,
    # fp 2, fn 1 -> 6 / 9.
    h1 = np.array([[5.0, 0, 1], [0, 3, 1], [4, 1, 0]])
    h2 = np.array([[0.0, 1, 5], [0, 3, 1], [0, 4, 1]])
    labels = np.array([[1, 0, 1], [1, 0, 0], [0, 1, 0]])
    out = head_union_metrics({"a": h1, "b": h2}, labels)
    assert out["heads/union_f1"] == pytest.approx(5 / 9)
    assert out["heads/union_f1_micro"] == pytest.approx(6 / 9)
    assert out["heads/union_size"] == pytest.approx(5 / 3)
    assert head_union_metrics({"a": h1}, labels) == {}  # one head is no set prediction


def test_predict_returns_vote_scores_and_union_of_argmax():
    m = make(EventLayersConfig(embed_dim=8, **OLD_VOTE))
    bt = batch(b=16)
    onsets = torch.zeros(16, 10, dtype=torch.bool)
    onsets[:, 1::4] = True  # every clip has onsets: all five heads vote
    with torch.no_grad():
        heads = m.head_logits(bt.audio, bt.video, onsets)
        pred = m.predict(bt.audio, bt.video, onsets)
    stacked = torch.stack([heads[h] for h in HEADS])
    winner, _ = vote_scores(stacked)
    assert torch.equal(pred.argmax(-1), winner)
    per_head = stacked.argmax(-1)  # [H, B]
    conf = stacked.softmax(-1).max(-1).values  # [H, B]
    for b in range(16):  # a majority (3 of 5) wins; without one, the most confident head
        votes = torch.bincount(per_head[:, b], minlength=4)
        expected = votes.argmax() if votes.max() >= 3 else per_head[conf[:, b].argmax(), b]
        assert winner[b] == expected
    union = m.predict_label_set(bt.audio, bt.video, onsets)
    assert union.dtype == torch.bool and union.shape == (16, 4)
    for b in range(16):
        assert set(union[b].nonzero().flatten().tolist()) == set(per_head[:, b].tolist())


def test_union_of_argmax_constructed():
    h1 = np.array([[3.0, 1, 0], [0, 2, 1]])
    h2 = np.array([[0.0, 1, 3], [0, 5, 1]])
    u = union_of_argmax({"a": h1, "b": h2})
    assert u.tolist() == [[True, False, True], [False, True, False]]


def test_multilabel_task_predicts_mean_logits_by_default():
    m = make(task=TaskSpec(num_classes=4, multilabel=True))
    bt = batch()
    with torch.no_grad():
        heads = m.head_logits(bt.audio, bt.video)
        torch.testing.assert_close(m.predict(bt.audio, bt.video), torch.stack(list(heads.values())).mean(0))


# --- shapes, gradients, config ----------------------------------------------------------------------
def test_shapes_gradients_and_unimodal_heads():
    m = make()
    onsets = torch.zeros(3, 10, dtype=torch.bool)
    onsets[:, ::3] = True
    bt = batch(onsets=onsets)
    out = m.training_step(bt, 0)
    assert out["loss"].ndim == 0
    losses = [out[f"loss_{h}"] for h in HEADS]
    assert out["loss"].item() == pytest.approx(sum(x.item() for x in losses), rel=1e-5)
    out["loss"].backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    with torch.no_grad():
        assert m.predict(bt.audio, bt.video, onsets).shape == (3, 4)
        assert list(m.head_logits(bt.audio, bt.video)) == list(HEADS)
        assert list(m.head_logits(bt.audio, None)) == ["audio"]
        assert list(m.head_logits(None, bt.video)) == ["visual"]
        torch.testing.assert_close(m.predict(bt.audio, None), m.head_logits(bt.audio, bt.video)["audio"])
        torch.testing.assert_close(m.predict(None, bt.video), m.head_logits(bt.audio, bt.video)["visual"])


def test_config_overrides_and_checks():
    cfg = apply_overrides(EventLayersConfig(), {"topk": "5", "topk_fraction": "0.2", "project": "false",
                                                "embed_dim": "64", "vote_tie_break": "all"})
    assert (cfg.topk, cfg.topk_fraction, cfg.project, cfg.embed_dim, cfg.vote_tie_break) == (5, 0.2, False, 64, "all")
    assert apply_overrides(EventLayersConfig(), {"topk": "none"}).topk is None
    with pytest.raises(UserError, match="equal feature widths"):
        EventLayers(EventLayersConfig(project=False), FEAT, TASK)
    with pytest.raises(UserError, match="topk_fraction"):
        EventLayers(EventLayersConfig(topk_fraction=0.0), FEAT, TASK)
    assert make(EventLayersConfig(embed_dim=8, topk_fraction=0.25)).k == 3  # 2.5 rounds up
    assert make(EventLayersConfig(embed_dim=8, topk=4)).k == 4


def test_registered_under_its_name():
    cls = Registry("avbench.strategies", "strategy").load("event_layers")
    assert cls is EventLayers and cls.name == "event_layers" and cls.capabilities.heads


# --- behaviour on synth -----------------------------------------------------------------------------
def _train_and_score(tmp_path, knobs: SynthKnobs, epochs: int, seed: int = 0) -> dict[str, float]:
    """Tiny engine stand-in: Adam, per-step L2 normalisation (the recipe), fixed seed; test accuracy per head."""
    cache = FeatureCache(build_synth_cache(tmp_path / "cache", knobs))
    tr = cache.train_split().gather(np.arange(knobs.train_clips))
    te = cache.test_split().gather(np.arange(knobs.test_clips))

    def feats(d):
        return F.normalize(d["audio"].float(), dim=-1), F.normalize(d["video"].float(), dim=-1)

    torch.manual_seed(seed)
    m = EventLayers(EventLayersConfig(embed_dim=64), cache.features, cache.task)
    opt = torch.optim.Adam(m.parameters(), lr=2e-3)
    a, v = feats(tr)
    y = tr["labels"].float()
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        perm = torch.randperm(len(y), generator=g)
        for i in range(0, len(y), 32):
            idx = perm[i:i + 32]
            out = m.training_step(Batch(a[idx], v[idx], y[idx], y[idx], onsets=tr["onsets"][idx]), i)
            opt.zero_grad()
            out["loss"].backward()
            opt.step()
    m.eval()
    ta, tv = feats(te)
    truth = te["labels"].argmax(1)
    with torch.no_grad():
        heads = m.head_logits(ta, tv, te["onsets"])
    return {h: (x.argmax(1) == truth).float().mean().item() for h, x in heads.items()}


@pytest.mark.slow
def test_instant_head_beats_continuous_head_on_instant_events(tmp_path):
    # Only instant events: class evidence at 3 of 30 steps (10%) in both modalities, per-step
    # evidence norm equal to the noise norm (snr 1), plus clip backgrounds and distractors of another
    # class in one modality at ~30% of steps. Averaging all steps dilutes the evidence 10x below the
    # distractors' share; the instant head pools 3 steps. Measured over seeds 0-7 (1200/600 clips,
    # 15 epochs, embed 64, lr 2e-3): instant - continuous = 0.07..0.41, 0.21 at seed 0
    # (0.52 vs 0.31; chance 0.17). The margin 0.08 is ~3 standard errors of a paired accuracy
    # difference on 600 test clips (sqrt(0.5 / 600) = 0.029 at most), below the fixed seed's gap.
    knobs = SynthKnobs(classes=6, train_clips=1200, test_clips=600, steps=30, audio_dim=32, video_dim=24,
                       snr=1.0, event_mix="instant", seed=0)
    acc = _train_and_score(tmp_path, knobs, epochs=15)
    assert acc["instant"] > 0.35, acc
    assert acc["instant"] - acc["continuous"] > 0.08, acc


@pytest.mark.slow
def test_audio_head_beats_visual_head_on_audio_only_events(tmp_path):
    # Audio-only events: the video carries no class evidence (only another class's distractors), so
    # the visual head cannot beat chance (1/6) while the audio head reads the evidence at every step.
    # Measured (600/300 clips, 10 epochs): audio 1.00, visual 0.16. The margin 0.5 is far below that
    # gap and far above the test-set noise (sqrt(0.5 / 300) = 0.04).
    knobs = SynthKnobs(classes=6, train_clips=400, test_clips=300, steps=30, audio_dim=32, video_dim=24,
                       snr=0.7, event_mix="audio_only", seed=0)
    acc = _train_and_score(tmp_path, knobs, epochs=6)
    assert acc["audio"] > 0.8, acc
    assert acc["audio"] - acc["visual"] > 0.5, acc
    assert acc["visual"] < 0.3, acc


@pytest.mark.slow
def test_event_layers_trains_one_epoch_end_to_end_through_the_cli(tmp_path):
    import json

    from avbench.cli import main
    from helpers import run_args

    out = tmp_path / "summary.json"
    assert main(run_args("event_layers", tmp_path / "results", "--output-json", str(out))) == 0
    summary = json.loads(out.read_text())
    columns = {k.split("/")[0] for k in summary["summary"] if k.endswith("/acc")}
    assert columns == {"audio", "video", "fusion"}
    # Paper 003 Table 2 beside the usual metrics: the union of the five heads' argmax, 1 to 5 labels.
    assert 0.0 <= summary["summary"]["heads/union_f1"]["mean"] <= 1.0
    assert 1.0 <= summary["summary"]["heads/union_size"]["mean"] <= 5.0


def test_optional_alignment_loss_adds_a_weighted_infonce_term():
    bt = batch(b=8)
    plain = make(EventLayersConfig(embed_dim=8))
    aligned = make(EventLayersConfig(embed_dim=8, align_weight=0.5))  # same seed: same weights
    out0, out1 = plain.training_step(bt, 0), aligned.training_step(bt, 0)
    assert "loss_align" not in out0
    # A symmetric InfoNCE over 8 clips at temperature 0.1: positive, and finite.
    assert 0.5 < out1["loss_align"].item() < 20.0
    assert out1["loss"].item() == pytest.approx(out0["loss"].item() + 0.5 * out1["loss_align"].item(), rel=1e-5)
    out1["loss"].backward()
    assert aligned.proj_a.weight.grad.abs().sum() > 0
    with pytest.raises(UserError, match="align_weight"):
        make(EventLayersConfig(align_weight=-1.0))


# --- the two readings of paper 003's vote, on every enumerated 5-head case -------------------------
def _reference_vote(preds: tuple[int, ...], confs: tuple[float, ...], rule: str, tie_break: str = "all") -> int:
    """Paper 003 sec. 4.2 read literally, one clip in plain Python (the specification the tests hold)."""
    counts = {k: preds.count(k) for k in set(preds)}
    top = max(counts.values())
    leaders = [k for k, n in counts.items() if n == top]
    if rule == "plurality" and len(leaders) == 1:  # argmax_k sum_i I(p_i = k), when unique
        return leaders[0]
    if rule == "majority" and top > len(preds) / 2:  # more than half of the voting layers
        return leaders[0]
    heads = range(len(preds))
    if rule == "plurality" and tie_break == "tied":
        heads = [i for i in heads if preds[i] in leaders]
    return preds[max(heads, key=lambda i: confs[i])]  # the most confident layer


def _enumerated(n_heads: int = 5, classes: int = 4) -> tuple[torch.Tensor, list, list]:
    """Every n_heads-tuple of predictions over ``classes`` classes, each with every confidence order
    from a fixed set (distinct confidences; the softmax confidence rises with the logit)."""
    import itertools

    orders = list(itertools.permutations(range(n_heads)))[::7]  # 18 of the 120 orders, all positions covered
    preds_all, confs_all = [], []
    for preds in itertools.product(range(classes), repeat=n_heads):
        for order in orders:
            preds_all.append(preds)
            confs_all.append(tuple(1.0 + 0.5 * r for r in order))
    logits = torch.zeros(n_heads, len(preds_all), classes)
    p = torch.tensor(preds_all).t()  # [H, B]
    logits.scatter_(2, p.unsqueeze(-1), torch.tensor(confs_all).t().unsqueeze(-1))
    return logits, preds_all, confs_all


@pytest.mark.parametrize("rule,tie_break", [("plurality", "all"), ("plurality", "tied"), ("majority", "all")])
@pytest.mark.parametrize("output", ["probability", "counts"])
def test_each_vote_switch_is_its_stated_reading_on_every_enumerated_case(rule, tie_break, output):
    logits, preds, confs = _enumerated()
    assert logits.shape == (5, 4 ** 5 * 18, 4)
    winner, scores = vote_scores(logits, rule=rule, tie_break=tie_break, output=output)
    expected = torch.tensor([_reference_vote(p, c, rule, tie_break) for p, c in zip(preds, confs)])
    assert torch.equal(winner, expected)
    assert torch.equal(scores.argmax(-1), expected)


def test_the_readings_differ_exactly_where_a_plurality_is_no_majority():
    logits, preds, confs = _enumerated()
    plural = vote_scores(logits, rule="plurality", tie_break="all")[0]
    major = vote_scores(logits, rule="majority")[0]
    differ = (plural != major).tolist()
    for d, p, c in zip(differ, preds, confs):
        counts = sorted((p.count(k) for k in set(p)), reverse=True)
        unique_minority_plurality = counts[0] == 2 and (len(counts) == 1 or counts[1] < 2)
        # They can differ only on a unique 2-vote plurality (2-1-1-1 of five heads over four classes);
        # there they differ exactly when the most confident layer is not one of the plurality's.
        if not unique_minority_plurality:
            assert not d, (p, c)
        else:
            leader = max(set(p), key=p.count)
            assert d == (p[max(range(5), key=lambda i: c[i])] != leader), (p, c)
    assert any(differ)


def test_a_non_voting_onset_head_on_every_enumerated_case():
    # The onset head (index 2) on its fallback pool does not vote: 4 voters, majority means 3 of 4.
    logits, preds, confs = _enumerated()
    voters = torch.ones(5, logits.shape[1], dtype=torch.bool)
    voters[2] = False
    for rule in ("plurality", "majority"):
        winner = vote_scores(logits, rule=rule, tie_break="all", voters=voters)[0]
        expected = [_reference_vote(p[:2] + p[3:], c[:2] + c[3:], rule) for p, c in zip(preds, confs)]
        assert winner.tolist() == expected


def test_probability_output_changes_only_the_winners_entry():
    logits, _, _ = _enumerated(classes=6)
    logits = logits[:, :2000] + 0.3 * torch.randn(5, 2000, 6, generator=torch.Generator().manual_seed(0))
    winner, scores = vote_scores(logits, rule="plurality", tie_break="all", output="probability")
    mean_prob = logits.softmax(-1).mean(0)
    keep = torch.ones_like(scores, dtype=torch.bool).scatter(1, winner.unsqueeze(1), False)
    assert torch.equal(scores[keep], mean_prob[keep])  # top-5 / mAP read the mean probabilities
    torch.testing.assert_close(scores.gather(1, winner.unsqueeze(1)).squeeze(1),
                               mean_prob.max(-1).values + 1e-6)
    assert torch.equal(scores.argmax(-1), winner)  # top-1 is the vote
    # Where the vote agrees with the mean probability's argmax, the ranking is the probabilities'.
    agree = winner == mean_prob.argmax(-1)
    assert agree.float().mean() > 0.5
    assert torch.equal(scores[agree].argsort(-1)[:, 1:], mean_prob[agree].argsort(-1)[:, 1:])


def test_unimodal_heads_initialised_as_the_papers_fc_over_the_2d_concat():
    torch.manual_seed(0)
    m = EventLayers(EventLayersConfig(embed_dim=200), FEAT, TaskSpec(num_classes=50))
    old = EventLayers(EventLayersConfig(embed_dim=200, unimodal_head_init="width"), FEAT, TaskSpec(num_classes=50))
    for h in ("visual", "audio"):
        # U(-b, b) with b = 1/sqrt(2 * 200) = 0.05: the max of 10000 draws is within 0.1% of b.
        assert 0.0495 < m.heads[h].weight.abs().max().item() <= 0.05
        assert 0.0700 < old.heads[h].weight.abs().max().item() <= 1 / 200 ** 0.5
        assert m.heads[h].bias.abs().max().item() <= 0.05
    for h in ("continuous", "instant", "onset"):  # already Linear(2D, C)
        assert 0.0495 < m.heads[h].weight.abs().max().item() <= 0.05


def test_separate_unimodal_models_train_beside_the_joint_one_and_fill_the_unimodal_columns():
    m = make(EventLayersConfig(embed_dim=8, unimodal="separate"))
    bt = batch(b=6)
    out = m.training_step(bt, 0)
    assert {"loss_separate_audio", "loss_separate_visual"} <= set(out)
    parts = [v.item() for k, v in out.items() if k.startswith("loss_")]
    assert out["loss"].item() == pytest.approx(sum(parts), rel=1e-5)  # 5 heads + 2 separate models
    out["loss"].backward()
    assert m.separate["audio"][0].weight.grad.abs().sum() > 0
    assert m.separate["audio"][0].weight.grad is not None and m.proj_a.weight.grad is not None
    with torch.no_grad():
        a_only = m.predict(bt.audio, None)
        torch.testing.assert_close(a_only, m.separate["audio"][2](m.separate["audio"][0](bt.audio).mean(1)))
        torch.testing.assert_close(m.predict(None, bt.video),
                                   m.separate["visual"][2](m.separate["visual"][0](bt.video).mean(1)))
        joint = make(EventLayersConfig(embed_dim=8))  # same seed: the joint parts are initialised alike
        torch.testing.assert_close(m.predict(bt.audio, bt.video), joint.predict(bt.audio, bt.video))
    # The separate models' parameters are disjoint from the joint model's: the joint losses give them
    # no gradient.
    m.zero_grad()
    sum(m.loss_fn(v, bt.targets) for v in m.head_logits(bt.audio, bt.video).values()).backward()
    assert m.separate["audio"][0].weight.grad is None
