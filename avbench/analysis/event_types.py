"""Event characteristics of a dataset from per-head scores (paper 003, section 4.2, Table 4).

Paper 003 assigns each test clip to the event head with the highest score on the clip's true class,
``argmax_i O_{i,y}``, then takes a majority vote per category (the category's dominant event type)
and counts categories per head for the dataset. This module does that from plain arrays, so it
works for any strategy that exposes named heads (``capabilities.heads``), and adds what no paper
could check: on ``synth`` the generating event type of every clip is known, so the report also says
how often the assigned head is the head built for that type, and (``class_match``) the fraction of
classes whose majority vote names the head built for the class's true dominant event type.

Choices made explicit:

* ``score="logit"`` compares the heads' raw outputs as the paper's ``O_{i,y}`` does;
  ``score="prob"`` compares softmax probabilities (sigmoid on multilabel tasks), which removes the
  heads' different logit scales.
* A multi-label clip contributes one assignment per positive class. The generating-type check uses
  single-label clips only (synth stores the primary event type per clip; secondary ones separately).
* Ties (a category's vote, a clip's scores) go to the earlier head in the head order given.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

import numpy as np

# Generating event type (synth's taxonomy) -> the paper-003 head built for it.
TYPE_TO_HEAD = {
    "continuous": "continuous",
    "instant": "instant",
    "rhythmic": "onset",
    "audio_only": "audio",
    "visual_only": "visual",
}


@dataclass
class EventTypeReport:
    heads: list[str]
    num_clips: int  # assignments (clip, true class) counted
    clip_share: dict[str, float]  # share of assignments per head (the dataset-level view)
    clip_counts: dict[str, int]
    category_head: dict[str, str | None]  # class name -> majority head (None: no test clip)
    category_votes: dict[str, dict[str, int]]
    category_counts: dict[str, int]  # Table 4: number of categories assigned to each head
    assignments: list[str]  # head per assignment, in clip order
    type_match: dict[str, Any] | None = None  # generating type vs assigned head (synth)
    class_match: dict[str, Any] | None = None  # each class's vote vs its true dominant type (synth)
    table: str = ""
    score: str = "logit"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def metrics(self) -> dict[str, float]:
        """Flat scalars for MLflow: shares, category counts, match rates."""
        out = {f"event_share_{h}": v for h, v in self.clip_share.items()}
        out.update({f"event_categories_{h}": float(v) for h, v in self.category_counts.items()})
        if self.type_match is not None:
            out["event_type_match"] = self.type_match["overall"]
            for t, d in self.type_match["by_type"].items():
                if d["n"]:
                    out[f"event_type_match_{t}"] = d["match_rate"]
        if self.class_match is not None:
            out["event_class_match"] = self.class_match["fraction"]
        return out


def _label_pairs(labels: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(clip index, true class) pairs from ``[N]`` class ids or ``[N, C]`` multi-hot labels."""
    labels = np.asarray(labels)
    if labels.ndim == 1:
        return np.arange(len(labels)), labels.astype(np.int64)
    if labels.ndim == 2 and labels.shape[1] == num_classes:
        clips, classes = np.nonzero(labels > 0)
        return clips, classes
    raise ValueError(f"labels must be [N] class ids or [N, {num_classes}] multi-hot, got {labels.shape}")


def _scores(head_logits: Mapping[str, np.ndarray], heads: Sequence[str], score: str,
            multilabel: bool) -> np.ndarray:
    s = np.stack([np.asarray(head_logits[h], dtype=np.float64) for h in heads])  # [H, N, C]
    if score == "logit":
        return s
    if score != "prob":
        raise ValueError(f"score must be 'logit' or 'prob', got {score!r}")
    if multilabel:
        return 1.0 / (1.0 + np.exp(-s))
    s = s - s.max(-1, keepdims=True)
    e = np.exp(s)
    return e / e.sum(-1, keepdims=True)


def event_type_analysis(head_logits: Mapping[str, np.ndarray], labels: np.ndarray,
                        class_names: Sequence[str], event_types: np.ndarray | None = None,
                        event_type_names: Sequence[str] | None = None, *, score: str = "logit",
                        heads: Sequence[str] | None = None, tablefmt: str = "github") -> EventTypeReport:
    """Assign clips to heads by their score on the true class; aggregate by category and dataset.

    ``head_logits``: ``{head: [N, C]}`` test-clip outputs. ``labels``: ``[N]`` ids or ``[N, C]``
    multi-hot. ``event_types``: optional ``[N]`` generating type ids (negative = unknown) naming
    ``event_type_names[id]``; types with no head in ``TYPE_TO_HEAD`` or no such head are skipped.
    """
    heads = list(heads) if heads is not None else list(head_logits)
    if not heads:
        raise ValueError("event_type_analysis needs at least one head")
    c = len(class_names)
    n = None
    for h in heads:
        shape = np.asarray(head_logits[h]).shape
        if len(shape) != 2 or shape[1] != c or (n is not None and shape[0] != n):
            raise ValueError(f"head '{h}' logits have shape {shape}; expected [N, {c}] for every head")
        n = shape[0]
    labels = np.asarray(labels)
    if labels.shape[0] != n:
        raise ValueError(f"{labels.shape[0]} labels for {n} clips")
    multilabel = labels.ndim == 2 and bool((labels.sum(1) > 1).any())
    scores = _scores(head_logits, heads, score, multilabel)
    clips, classes = _label_pairs(labels, c)
    on_true = scores[:, clips, classes]  # [H, P]
    assigned = on_true.argmax(0) if len(clips) else np.zeros(0, np.int64)  # first head wins ties

    counts = np.bincount(assigned, minlength=len(heads))
    total = int(len(assigned))
    clip_counts = {h: int(counts[i]) for i, h in enumerate(heads)}
    clip_share = {h: (counts[i] / total if total else 0.0) for i, h in enumerate(heads)}

    category_votes: dict[str, dict[str, int]] = {}
    category_head: dict[str, str | None] = {}
    for k, name in enumerate(class_names):
        v = np.bincount(assigned[classes == k], minlength=len(heads))
        category_votes[str(name)] = {h: int(v[i]) for i, h in enumerate(heads)}
        category_head[str(name)] = heads[int(v.argmax())] if v.sum() else None
    category_counts = {h: sum(1 for a in category_head.values() if a == h) for h in heads}

    type_match = class_match = None
    if event_types is not None:
        type_match = _type_match(np.asarray(event_types), event_type_names, labels, heads, clips, assigned)
        class_match = _class_match(np.asarray(event_types), event_type_names, labels, class_names, heads,
                                   category_head)

    report = EventTypeReport(
        heads=heads, num_clips=total, clip_share=clip_share, clip_counts=clip_counts,
        category_head=category_head, category_votes=category_votes, category_counts=category_counts,
        assignments=[heads[i] for i in assigned], type_match=type_match, class_match=class_match, score=score)
    report.table = format_table(report, tablefmt)
    return report


def _type_match(event_types: np.ndarray, names: Sequence[str] | None, labels: np.ndarray,
                heads: list[str], clips: np.ndarray, assigned: np.ndarray) -> dict[str, Any]:
    if names is None:
        raise ValueError("event_types given without event_type_names")
    single = np.ones(len(labels), bool) if labels.ndim == 1 else (labels > 0).sum(1) == 1
    by_type: dict[str, dict[str, Any]] = {}
    hits = total = 0
    for tid, tname in enumerate(names):
        head = TYPE_TO_HEAD.get(str(tname))
        if head is None or head not in heads:
            continue
        sel = single[clips] & (event_types[clips] == tid)
        got = assigned[sel]
        hist = np.bincount(got, minlength=len(heads))
        match = int(hist[heads.index(head)])
        by_type[str(tname)] = {"head": head, "n": int(sel.sum()), "matches": match,
                               "match_rate": match / int(sel.sum()) if sel.sum() else 0.0,
                               "assigned": {h: int(hist[i]) for i, h in enumerate(heads)}}
        hits += match
        total += int(sel.sum())
    return {"overall": hits / total if total else 0.0, "n": total, "by_type": by_type}


def _class_match(event_types: np.ndarray, names: Sequence[str] | None, labels: np.ndarray,
                 class_names: Sequence[str], heads: list[str], category_head: Mapping[str, str | None]) -> dict[str, Any]:
    """Paper 003's per-class majority vote scored against the truth: a class's true dominant event
    type is the most common generating type among its single-label clips; the class counts as
    matched when its voted head is the head built for that type. Classes whose dominant type has no
    head in this strategy are left out (and listed)."""
    if names is None:
        raise ValueError("event_types given without event_type_names")
    ids = labels if labels.ndim == 1 else np.where((labels > 0).sum(1) == 1, np.argmax(labels, 1), -1)
    per_class: dict[str, dict[str, Any]] = {}
    scored = matched = 0
    for k, cname in enumerate(class_names):
        t = event_types[(ids == k) & (event_types >= 0)]
        if not len(t):
            continue
        dominant = str(names[int(np.bincount(t, minlength=len(names)).argmax())])
        want = TYPE_TO_HEAD.get(dominant)
        got = category_head.get(str(cname))
        ok = None if want not in heads else got == want
        per_class[str(cname)] = {"dominant_type": dominant, "its_head": want, "voted_head": got, "match": ok}
        if ok is not None:
            scored += 1
            matched += int(ok)
    return {"fraction": matched / scored if scored else 0.0, "matched": matched, "classes": scored,
            "chance": 1.0 / len(heads), "per_class": per_class}


def format_table(report: EventTypeReport, tablefmt: str = "github") -> str:
    """Table 4's row (categories per head) with the clip shares, plus the synth type check."""
    from tabulate import tabulate

    heads = report.heads
    rows = [["categories"] + [report.category_counts[h] for h in heads] + [len(report.category_head)],
            ["clip share"] + [f"{report.clip_share[h]:.3f}" for h in heads] + [report.num_clips]]
    text = tabulate(rows, headers=[""] + heads + ["total"], tablefmt=tablefmt)
    if report.type_match is not None and report.type_match["by_type"]:
        trows = []
        for tname, d in report.type_match["by_type"].items():
            trows.append([tname, d["head"], d["n"], f"{d['match_rate']:.3f}"]
                         + [d["assigned"][h] for h in heads])
        trows.append(["all", "", report.type_match["n"], f"{report.type_match['overall']:.3f}"]
                     + [""] * len(heads))
        text += "\n\n" + tabulate(trows, headers=["generating type", "its head", "clips", "match"] + heads,
                                  tablefmt=tablefmt)
    cm = report.class_match
    if cm is not None and cm["classes"]:
        crows = [[c, d["dominant_type"], d["its_head"], d["voted_head"], "" if d["match"] is None else
                  ("yes" if d["match"] else "no")] for c, d in cm["per_class"].items()]
        text += "\n\n" + tabulate(crows, headers=["class", "true dominant type", "its head", "voted head", "match"],
                                  tablefmt=tablefmt)
        text += (f"\n\nclasses voted to their true dominant type: {cm['matched']}/{cm['classes']} "
                 f"({100 * cm['fraction']:.1f}%; chance {100 * cm['chance']:.1f}%)")
    return text
