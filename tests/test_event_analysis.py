"""Event-characteristics analysis (paper 003 Table 4) and multi-label set F1 (Table 2)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from avbench.analysis.event_types import TYPE_TO_HEAD, event_type_analysis
from avbench.api import Batch
from avbench.cache import FeatureCache
from avbench.datasets.synth import EVENT_TYPES, SynthKnobs, build_synth_cache
from avbench.metrics.multilabel import comparison_table, multilabel_f1_comparison, set_f1, top_k_sets, union_of_argmax
from avbench_strategies.baselines import NaiveAV, NaiveAVConfig
from avbench_strategies.event_layers import HEADS, EventLayers, EventLayersConfig

CLASSES = ["dog", "car", "rain"]


def _logits(n: int, c: int = 3) -> dict[str, np.ndarray]:
    return {h: np.zeros((n, c)) for h in HEADS}


# --- event-type analysis on constructed scores --------------------------------------------------------
def test_assignment_category_vote_dataset_share_and_type_match():
    # 6 clips: true classes 0,0,0,1,1,2. Head with the top score on the true class, per clip:
    # instant, instant, audio | continuous, onset | visual.
    hl = _logits(6)
    winners = ["instant", "instant", "audio", "continuous", "onset", "visual"]
    labels = np.array([0, 0, 0, 1, 1, 2])
    for i, (h, y) in enumerate(zip(winners, labels)):
        hl[h][i, y] = 2.0
        hl["continuous"][i, (y + 1) % 3] = 5.0  # a high score on a wrong class must not count
    hl["continuous"][3, 1] = 2.0
    hl["onset"][4, 1] = 3.0
    ev_types = np.array([EVENT_TYPES.index(t) for t in
                         ("instant", "rhythmic", "audio_only", "continuous", "rhythmic", "audio_only")])
    r = event_type_analysis(hl, labels, CLASSES, ev_types, EVENT_TYPES)
    assert r.assignments == winners
    assert r.category_head == {"dog": "instant", "car": "continuous", "rain": "visual"}  # car: 1-1 tie -> head order
    assert r.category_votes["dog"] == {"continuous": 0, "instant": 2, "onset": 0, "visual": 0, "audio": 1}
    assert r.category_counts == {"continuous": 1, "instant": 1, "onset": 0, "visual": 1, "audio": 0}
    assert r.clip_share["instant"] == pytest.approx(2 / 6) and sum(r.clip_share.values()) == pytest.approx(1)
    tm = r.type_match
    # matches: clip 0 (instant->instant), 2 (audio_only->audio), 3 (continuous), 4 (rhythmic->onset)
    assert tm["overall"] == pytest.approx(4 / 6) and tm["n"] == 6
    assert tm["by_type"]["rhythmic"]["match_rate"] == pytest.approx(0.5)
    assert tm["by_type"]["rhythmic"]["assigned"]["instant"] == 1
    assert tm["by_type"]["audio_only"]["head"] == "audio" and tm["by_type"]["audio_only"]["matches"] == 1
    for word in ("categories", "clip share", "generating type", "rhythmic", "onset"):
        assert word in r.table
    m = r.metrics()
    assert m["event_type_match"] == pytest.approx(4 / 6) and m["event_categories_instant"] == 1.0
    assert r.to_dict()["category_head"]["rain"] == "visual"


def test_multi_hot_clips_count_once_per_true_class_and_skip_the_type_check():
    hl = _logits(2)
    labels = np.array([[1, 0, 1], [0, 1, 0]])
    hl["audio"][0, 0] = 1.0
    hl["visual"][0, 2] = 1.0
    hl["onset"][1, 1] = 1.0
    ev = np.array([EVENT_TYPES.index("audio_only"), EVENT_TYPES.index("rhythmic")])
    r = event_type_analysis(hl, labels, CLASSES, ev, EVENT_TYPES)
    assert r.num_clips == 3 and r.assignments == ["audio", "visual", "onset"]
    assert r.category_head == {"dog": "audio", "car": "onset", "rain": "visual"}
    assert r.type_match["n"] == 1 and r.type_match["overall"] == 1.0  # only the single-label clip


def test_prob_score_removes_the_heads_logit_scale():
    # The continuous head is loud everywhere (large logits) but not confident on the true class;
    # the instant head is quiet but sure. "logit" follows the paper's O_{i,y}; "prob" compares confidence.
    hl = {"continuous": np.array([[10.0, 9.5, 9.5]]), "instant": np.array([[2.0, -3.0, -3.0]])}
    labels = np.array([0])
    assert event_type_analysis(hl, labels, CLASSES).assignments == ["continuous"]
    assert event_type_analysis(hl, labels, CLASSES, score="prob").assignments == ["instant"]


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match="head 'instant'"):
        event_type_analysis({"continuous": np.zeros((2, 3)), "instant": np.zeros((2, 4))}, np.array([0, 1]), CLASSES)
    with pytest.raises(ValueError, match="labels for 2 clips"):
        event_type_analysis({"continuous": np.zeros((2, 3))}, np.array([0, 1, 2]), CLASSES)
    assert set(TYPE_TO_HEAD.values()) == set(HEADS)


# --- multi-label F1 on constructed sets ---------------------------------------------------------------
def test_set_f1_samples_and_micro_by_hand():
    labels = np.array([[1, 1, 1, 0], [1, 0, 0, 0]])
    pred = np.array([[1, 0, 0, 0], [1, 0, 0, 0]], bool)
    # clip 0: P 1, R 1/3 -> F1 0.5; clip 1: F1 1 -> samples 0.75. micro: TP 2, FP 0, FN 2 -> 4/6.
    assert set_f1(pred, labels, "samples") == pytest.approx(0.75)
    assert set_f1(pred, labels, "micro") == pytest.approx(4 / 6)
    assert set_f1(np.zeros_like(pred), labels) == 0.0  # empty sets: F1 0, no exception
    with pytest.raises(ValueError):
        set_f1(pred, labels, "weighted-ish")


def test_top_k_sets_and_union_vs_top_k_comparison():
    scores = np.array([[3.0, 2.0, 1.0, 0.0], [0.0, 1.0, 3.0, 2.0]])
    assert top_k_sets(scores, 1).tolist() == [[True, False, False, False], [False, False, True, False]]
    assert top_k_sets(scores, 2).sum(1).tolist() == [2, 2] and top_k_sets(scores, 2)[1, 3]
    labels = np.array([[1, 1, 0, 0], [0, 0, 1, 0]])
    heads = {"h1": np.array([[5.0, 0, 0, 0], [0, 0, 5, 0]]), "h2": np.array([[0, 5.0, 0, 0], [0, 0, 5, 0]])}
    union = union_of_argmax(heads)
    assert union.tolist() == labels.astype(bool).tolist()
    res = multilabel_f1_comparison(union, scores, labels, ks=(1, 2, 3))
    assert res["union"]["samples"] == pytest.approx(1.0)
    # top-1: clip 0 F1 2/3, clip 1 F1 1 -> 5/6; top-2: clip 0 1, clip 1 2/3 -> 5/6; top-3: 0.8 and 0.5.
    assert res["top_k"][1]["samples"] == pytest.approx(5 / 6)
    assert res["top_k"][2]["samples"] == pytest.approx(5 / 6)
    assert res["top_k"][3]["samples"] == pytest.approx((0.8 + 0.5) / 2)
    assert res["union_mean_size"] == 1.5 and res["label_mean_size"] == 1.5
    table = comparison_table(res)
    assert "union (ours)" in table and "top-3" in table and "1.000" in table


# --- on synth: the generating type is known -----------------------------------------------------------
def _train(model, a, v, y, onsets, epochs: int, seed: int = 0):
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    for _ in range(epochs):
        perm = torch.randperm(len(y), generator=g)
        for i in range(0, len(y), 32):
            idx = perm[i:i + 32]
            out = model.training_step(Batch(a[idx], v[idx], y[idx], y[idx], onsets=onsets[idx]), i)
            opt.zero_grad()
            out["loss"].backward()
            opt.step()
    return model.eval()


@pytest.mark.slow
def test_on_synth_heads_match_generating_types_and_union_beats_top_1(tmp_path):
    # All five event types, 60% of clips with a second labelled event (multilabel). Measured at seed 0
    # (15 epochs): type match 0.67 over the 294 single-label test clips (chance 0.2; continuous and
    # rhythmic clips 1.00), union F1 0.766 vs naive-AV top-1 0.699 / top-2 0.732 / top-5 0.471
    # (paper 003 Table 2 on LLP: 0.72 vs 0.66 / 0.70 / 0.50). Bars sit well inside those gaps.
    knobs = SynthKnobs(classes=6, train_clips=1500, test_clips=750, steps=30, audio_dim=32, video_dim=24,
                       snr=1.0, secondary_rate=0.6, seed=0, class_type=0.0, instance=0.0)  # generator 2's data
    cache = FeatureCache(build_synth_cache(tmp_path / "c", knobs))
    assert cache.task.multilabel
    tr = cache.train_split().gather(np.arange(knobs.train_clips))
    te = cache.test_split().gather(np.arange(knobs.test_clips))
    norm = lambda d: (F.normalize(d["audio"].float(), dim=-1), F.normalize(d["video"].float(), dim=-1))  # noqa: E731
    a, v = norm(tr)
    ta, tv = norm(te)
    y = tr["labels"].float()
    torch.manual_seed(0)
    el = _train(EventLayers(EventLayersConfig(embed_dim=64), cache.features, cache.task), a, v, y, tr["onsets"], 15)
    with torch.no_grad():
        heads = {k: x.numpy() for k, x in el.head_logits(ta, tv, te["onsets"]).items()}
        union = el.predict_label_set(ta, tv, te["onsets"]).numpy()
    report = event_type_analysis(heads, te["labels"].numpy(), cache.task.class_names,
                                 cache.test_split().extras["event_type"], cache.manifest.info["event_types"])
    tm = report.type_match
    assert tm["n"] > 200
    assert tm["overall"] > 0.45, report.table
    assert tm["by_type"]["continuous"]["match_rate"] > 0.9, report.table
    assert tm["by_type"]["rhythmic"]["match_rate"] > 0.9, report.table

    torch.manual_seed(0)
    naive = _train(NaiveAV(NaiveAVConfig(), cache.features, cache.task), a, v, y, tr["onsets"], 15)
    with torch.no_grad():
        naive_scores = naive.predict(ta, tv).numpy()
    res = multilabel_f1_comparison(union, naive_scores, te["labels"].numpy())
    assert 1.0 < res["union_mean_size"] < 5.0  # the set size adapts per clip
    assert res["union"]["samples"] > res["top_k"][1]["samples"] + 0.03, res
    assert res["union"]["samples"] > res["top_k"][5]["samples"] + 0.1, res
