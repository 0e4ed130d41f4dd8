import math

import numpy as np
import pytest

from avbench.metrics import classification_metrics, d_prime, mean_std_ci, retrieval_metrics, stratified_subset


def test_classification_metrics_by_hand():
    scores = np.array([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1], [0.1, 0.8, 0.1]])
    labels = np.array([[1, 0, 0], [0, 1, 0], [0, 1, 0], [1, 0, 0]])  # class 2 has no positives
    m = classification_metrics(scores, labels)
    assert m["acc"] == pytest.approx(0.5)  # clips 0 and 1 right
    assert m["top5"] == 1.0
    # Class 0: positives {0, 3} with scores .9, .1; negatives .2, .6 -> ranking .9(P) .6 .2 .1(P)
    ap0 = (1 / 1 + 2 / 4) / 2
    auc0 = 2 / 4  # pairs (P,N): .9>.6 .9>.2 .1<.6 .1<.2
    # Class 1: positives {1, 2} scores .7, .3; negatives .1, .8 -> ranking .8 .7(P) .3(P) .1
    ap1 = (1 / 2 + 2 / 3) / 2
    auc1 = 2 / 4  # .7>.1 .7<.8 .3>.1 .3<.8
    assert m["mAP"] == pytest.approx((ap0 + ap1) / 2)
    assert m["mAUC"] == pytest.approx((auc0 + auc1) / 2)
    assert m["classes_without_positives"] == 1
    assert m["dprime"] == pytest.approx(0.0, abs=1e-9)  # AUC 0.5 -> d' = 0


def test_d_prime():
    assert d_prime(0.5) == 0.0
    assert d_prime(0.8413447460685429) == pytest.approx(math.sqrt(2), rel=1e-6)  # Phi(1)


def test_retrieval_identical_embeddings_rank_first_and_shuffled_do_not():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((20, 5, 8))
    m = retrieval_metrics(x, x)
    assert m["a2v_R_at1"] == 1.0 and m["v2a_R_at1"] == 1.0 and m["a2v_medr"] == 1.0
    m2 = retrieval_metrics(x, x[::-1])
    assert m2["a2v_R_at1"] <= 0.1
    collapsed = np.ones((20, 5, 8))  # every candidate ties: the partner ranks last, not first
    m3 = retrieval_metrics(collapsed, collapsed)
    assert m3["a2v_R_at1"] == 0.0 and m3["a2v_R_at10"] == 0.0 and m3["a2v_medr"] == 20.0


def test_stratified_subset_takes_five_per_class():
    labels = np.eye(3)[np.repeat([0, 1, 2], [10, 3, 7])]
    idx = stratified_subset(labels, 5, seed=0)
    assert np.bincount(labels[idx].argmax(1)).tolist() == [5, 3, 5]
    assert np.array_equal(idx, stratified_subset(labels, 5, seed=0))


def test_mean_std_ci():
    s = mean_std_ci([1.0, 2.0, 3.0])
    assert s["mean"] == 2.0 and s["std"] == 1.0 and s["n"] == 3
    half = 4.302652729911275 / math.sqrt(3)  # t(0.975, df=2)
    assert s["ci_low"] == pytest.approx(2 - half) and s["ci_high"] == pytest.approx(2 + half)
    assert mean_std_ci([0.5])["std"] == 0.0
