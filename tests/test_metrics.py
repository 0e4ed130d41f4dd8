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


# --- the vectorised kernels against scikit-learn (ties, empty classes, multilabel, multiclass) ------------
def _sklearn_per_class(scores, labels):
    from sklearn.metrics import average_precision_score, roc_auc_score

    c = labels.shape[1]
    ap, auc = np.full(c, np.nan), np.full(c, np.nan)
    for j in range(c):
        pos = int(labels[:, j].sum())
        if pos:
            ap[j] = average_precision_score(labels[:, j], scores[:, j])
            if pos < len(labels):
                auc[j] = roc_auc_score(labels[:, j], scores[:, j])
    return ap, auc


def _cases():
    rng = np.random.default_rng(3)
    n, c = 300, 17
    multiclass = np.eye(c, dtype=np.int64)[rng.integers(0, c - 2, n)]  # the last two classes have no positives
    logits = rng.standard_normal((n, c)) + 1.5 * multiclass
    yield "multiclass", logits, multiclass
    multilabel = (rng.random((n, c)) < 0.2).astype(np.int64)
    multilabel[:, 0] = 1  # a class without negatives: AP defined, AUC not
    yield "multilabel", rng.standard_normal((n, c)) + multilabel, multilabel
    # Heavy ties: scores on a coarse grid (and float32, as a model's logits are).
    yield "ties", np.round(rng.standard_normal((n, c)) + multilabel, 0).astype(np.float32), multilabel
    yield "all_tied", np.zeros((n, c), np.float32), multilabel
    yield "tiny", np.array([[0.5], [0.5], [0.2]]), np.array([[1], [0], [1]])


@pytest.mark.parametrize("case", ["multiclass", "multilabel", "ties", "all_tied", "tiny"])
def test_per_class_ap_auc_equal_sklearn(case):
    from avbench.metrics.classification import per_class_ap_auc

    _, scores, labels = next(c for c in _cases() if c[0] == case)
    ap, auc = per_class_ap_auc(scores, labels)
    ref_ap, ref_auc = _sklearn_per_class(scores.astype(np.float64), labels)
    np.testing.assert_array_equal(np.isnan(ap), np.isnan(ref_ap))
    np.testing.assert_array_equal(np.isnan(auc), np.isnan(ref_auc))
    np.testing.assert_allclose(ap, ref_ap, rtol=0, atol=1e-6, equal_nan=True)
    np.testing.assert_allclose(auc, ref_auc, rtol=0, atol=1e-6, equal_nan=True)


def test_torch_inputs_give_the_numpy_answer_and_per_class_dprime():
    import torch

    from avbench.metrics.classification import per_class_metrics

    _, scores, labels = next(c for c in _cases() if c[0] == "multilabel")
    m_np = classification_metrics(scores, labels)
    m_t = classification_metrics(torch.from_numpy(scores).float(), torch.from_numpy(labels))
    assert m_t.keys() == m_np.keys()
    for k in m_np:
        assert m_t[k] == pytest.approx(m_np[k], abs=1e-6)
    pc = per_class_metrics(torch.from_numpy(scores), torch.from_numpy(labels))
    ref_ap, ref_auc = _sklearn_per_class(scores, labels)
    finite = np.isfinite(ref_auc)
    np.testing.assert_allclose(pc["dprime"].numpy()[finite], [d_prime(a) for a in ref_auc[finite]], atol=1e-9)
    assert np.isnan(pc["dprime"].numpy()[~finite]).all()


def test_retrieval_ranks_match_a_direct_count_with_ties_and_even_median():
    from avbench.metrics.retrieval import ranks

    rng = np.random.default_rng(1)
    a, v = rng.standard_normal((30, 4, 6)), rng.standard_normal((30, 4, 6))
    pa = a.mean(1) / np.linalg.norm(a.mean(1), axis=1, keepdims=True)
    pv = v.mean(1) / np.linalg.norm(v.mean(1), axis=1, keepdims=True)
    sim = pa @ pv.T
    want = (sim >= np.diag(sim)[:, None]).sum(1)
    np.testing.assert_array_equal(ranks(a, v), want)
    m = retrieval_metrics(a, v)
    assert m["a2v_medr"] == float(np.median(want))  # 30 queries: the mean of the middle two
    assert m["a2v_R_at5"] == pytest.approx(float((want <= 5).mean()))
