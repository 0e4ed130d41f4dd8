"""Paper 003's per-class vote scored against synth's true dominant event types."""

import numpy as np

from avbench.analysis.event_types import event_type_analysis
from avbench.datasets.synth import EVENT_TYPES

HEADS = ["continuous", "instant", "onset", "visual", "audio"]


def _logits(winner_per_clip, classes, n_classes):
    """Head logits where ``winner_per_clip[i]`` scores highest on clip i's true class."""
    out = {h: np.zeros((len(classes), n_classes), np.float32) for h in HEADS}
    for i, (h, c) in enumerate(zip(winner_per_clip, classes)):
        out[h][i, c] = 5.0
    return out


def test_fraction_of_classes_voted_to_their_true_dominant_type():
    t = {name: i for i, name in enumerate(EVENT_TYPES)}
    # class 0: mostly continuous, voted continuous (match); class 1: mostly rhythmic, voted instant (miss);
    # class 2: mostly audio_only, voted audio (match). One clip of another type in each class.
    classes = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2])
    types = np.array([t["continuous"]] * 2 + [t["instant"]] + [t["rhythmic"]] * 2 + [t["continuous"]]
                     + [t["audio_only"]] * 2 + [t["visual_only"]])
    winners = ["continuous", "continuous", "instant", "instant", "instant", "onset", "audio", "audio", "visual"]
    rep = event_type_analysis(_logits(winners, classes, 3), classes, ["a", "b", "c"], types, EVENT_TYPES, heads=HEADS)
    cm = rep.class_match
    assert cm["classes"] == 3 and cm["matched"] == 2 and cm["fraction"] == 2 / 3
    assert cm["per_class"]["b"] == {"dominant_type": "rhythmic", "its_head": "onset", "voted_head": "instant",
                                    "match": False}
    assert rep.metrics()["event_class_match"] == 2 / 3
    assert "classes voted to their true dominant type: 2/3" in rep.table


def test_a_type_without_its_head_is_not_scored():
    classes = np.array([0, 0, 1, 1])
    types = np.array([0, 0, 3, 3])  # continuous; audio_only (no audio head below)
    heads = {"continuous": np.eye(2)[classes] * 3.0, "instant": np.zeros((4, 2))}
    rep = event_type_analysis(heads, classes, ["a", "b"], types, EVENT_TYPES)
    assert rep.class_match["classes"] == 1 and rep.class_match["fraction"] == 1.0
    assert rep.class_match["per_class"]["b"]["match"] is None


def test_the_report_states_the_class_match_per_seed_and_on_average():
    from avbench.report.document import class_match_line

    t = {name: i for i, name in enumerate(EVENT_TYPES)}
    classes = np.array([0, 0, 1, 1])
    types = np.array([t["continuous"]] * 2 + [t["rhythmic"]] * 2)
    seeds = [event_type_analysis(_logits(w, classes, 2), classes, ["a", "b"], types, EVENT_TYPES,
                                 heads=HEADS).to_dict()
             for w in (["continuous", "continuous", "onset", "onset"],      # both classes matched
                       ["continuous", "continuous", "instant", "instant"])]  # class b missed
    line = class_match_line(seeds)
    assert line.startswith("Classes voted to the head of their true dominant event type: 2/2 (100.0%) on the first")
    assert "75.0% on average over 2 seeds" in line and "chance 20.0%" in line
    assert class_match_line([{"class_match": None}]) == ""
