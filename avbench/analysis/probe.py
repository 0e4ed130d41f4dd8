"""Modality-classification probe per layer (UAVM Fig. 3A-C).

Can a linear classifier tell from a layer's time-pooled representation whether the input was audio
or video? UAVM's answer: yes, perfectly, in the modality-specific layers; much less from the first
shared layer on, when the shared width is small. As in the reference: an L1 logistic regression
(``liblinear``, ``random_state=0``) trained on the first half of the test clips (both their audio and
their video representations) and tested on the second half. The coefficients, sorted by magnitude,
show whether a few dimensions carry the modality (Fig. 3C): ``top_share`` is the largest
coefficient's share of the total absolute weight.

Clips: the whole test split by default. The authors' representations for the probe were computed on
their 5-per-class test subset (``test_vgg_convnext_2_5_per_class.json``, with ``feat_norm False``);
``probe_rows(labels, 5)`` (``avbench analyze --probe-per-class 5``) takes the same stratified subset the
retrieval uses.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import numpy as np

from avbench.analysis.representations import paired_layers


def probe_rows(labels: np.ndarray, per_class: int) -> np.ndarray | None:
    """The clips to probe: ``None`` (every test clip) for ``per_class`` 0, else the stratified subset
    of ``per_class`` clips per class (seed 0, the retrieval's subset)."""
    if per_class <= 0:
        return None
    from avbench.metrics.retrieval import stratified_subset

    return stratified_subset(labels, per_class, seed=0)


def l1_logistic_regression():
    """``LogisticRegression(penalty='l1', solver='liblinear', random_state=0)``, the reference probe.

    scikit-learn 1.8 deprecated ``penalty`` in favour of ``l1_ratio`` (``l1_ratio=1`` is the same L1
    model, same coefficients); use whichever spelling the installed version wants.
    """
    import sklearn
    from sklearn.linear_model import LogisticRegression

    major, minor = (int(x) for x in sklearn.__version__.split(".")[:2])
    if (major, minor) >= (1, 8):
        return LogisticRegression(l1_ratio=1.0, solver="liblinear", random_state=0)
    return LogisticRegression(penalty="l1", solver="liblinear", random_state=0)


def probe_layer(audio: np.ndarray, video: np.ndarray) -> dict[str, object]:
    """``audio``/``video``: ``[N, D]`` paired rows (row i = clip i). Needs N >= 4."""
    from sklearn.exceptions import ConvergenceWarning

    a = np.asarray(audio, dtype=np.float64)
    v = np.asarray(video, dtype=np.float64)
    n = len(a)
    half = n // 2
    x_tr = np.concatenate([a[:half], v[:half]])
    y_tr = np.r_[np.zeros(half), np.ones(half)]
    x_te = np.concatenate([a[half:], v[half:]])
    y_te = np.r_[np.zeros(n - half), np.ones(n - half)]
    clf = l1_logistic_regression()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(x_tr, y_tr)
    coef = clf.coef_[0]
    mags = np.sort(np.abs(coef))[::-1]
    total = float(mags.sum())
    return {"acc": float(clf.score(x_te, y_te)), "train_acc": float(clf.score(x_tr, y_tr)),
            "coef_sorted": mags.tolist(), "top_share": float(mags[0] / total) if total > 0 else 0.0,
            "nonzero": int((mags > 0).sum()), "dim": int(a.shape[1])}


def modality_probe(audio: Mapping[str, np.ndarray], video: Mapping[str, np.ndarray]) -> dict[str, object]:
    """Probe every layer; ``{"layers": [...], "per_layer": {layer: {...}}, "skipped": {layer: why}}``."""
    layers, per_layer, skipped = [], {}, {}
    for name, a, v in paired_layers(audio, video, skipped, 4, "{n} clips are too few to split in halves"):
        layers.append(name)
        per_layer[name] = probe_layer(a, v)
    return {"layers": layers, "per_layer": per_layer, "skipped": skipped}
