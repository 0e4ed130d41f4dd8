"""Report sections on behaviour under perturbation and on event types: robustness curves with relative
and effective robustness (MultiBench), and paper 003's event-type heads.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from avbench.report import plots
from avbench.report.blocks import Bullets, Heading, Para, Table
from avbench.report.builder import Builder
from avbench.report.cells import mean_std_text


def robustness(rep: Builder) -> None:
    """Robustness curves (drop, noise, shift), relative and effective robustness per row."""
    rep.add(Heading(2, "Robustness"))
    rows = rep.have("robustness")
    if not rows:
        rep.add(Para("No robustness analysis recorded."))
        return
    rep.add(Para("Fused primary metric with one modality dropped, with Gaussian noise mixed into one modality's "
                  "features (each step becomes (1 − level)·x + level·n, n Gaussian of the step's norm, before the "
                  "recipe's L2 norm: level 1 is pure noise), and with audio shifted in time against video "
                  "(level × T steps, circular). Relative robustness is the area under the curve (MultiBench); "
                  "effective robustness is MultiBench's Σ(f − (b + f₀ − b₀)) against the named baseline run "
                  "(seed-matched), without MultiBench's min-max normalisation."))
    curves = list(rows[0].analyses["robustness"][0]["curves"])
    groups = []
    for name in curves:
        series = []
        for r in rows:
            vals = [res["curves"][name]["values"] for res in r.analyses["robustness"] if name in res["curves"]]
            if not vals:
                continue
            arr = np.asarray(vals, dtype=float)
            levels = r.analyses["robustness"][0]["curves"][name]["levels"]
            series.append(plots.Series(f"{r.short} {r.label}", levels, arr.mean(0),
                                       arr.std(0, ddof=1) if len(arr) > 1 else None))
        groups.append((plots.robustness_title(name), series))
    primary = rows[0].analyses["robustness"][0].get("primary", "")
    rep.figure("robustness_curves", "Robustness curves, mean ± std over the seeds analysed",
                lambda p: plots.panels(groups, p, xlabel="level (fraction, 0-1)", ylabel=f"fused {primary} (%)", percent=True))
    body = []
    for r in rows:
        res = r.analyses["robustness"]
        line = [r.short, r.label, len(res), mean_std_text([x["clean"] for x in res]),
                mean_std_text([x["drop"]["audio"]["value"] for x in res]),
                mean_std_text([x["drop"]["video"]["value"] for x in res])]
        line += [mean_std_text([x["curves"][c]["relative"] for x in res if c in x["curves"]]) for c in curves]
        line += [mean_std_text([x["curves"][c].get("effective") for x in res if c in x["curves"]], signed=True)
                 for c in curves]
        bases = sorted({x.get("baseline") or "none" for x in res})
        line.append(", ".join(bases))
        body.append(line)
    rep.add(Table(["#", "row", "seeds", "clean", "drop audio", "drop video"] + [f"rel. {c}" for c in curves]
                   + [f"eff. {c}" for c in curves] + ["baseline"], body))
    hows = sorted({f"{r.short} {r.label}: drop {side} = {r.analyses['robustness'][0]['drop'][side]['how']}"
                   for r in rows for side in ("audio", "video")
                   if "zero" in r.analyses["robustness"][0]["drop"][side]["how"]})
    if hows:
        rep.add(Para("Strategies that cannot predict from one modality get zeros for the dropped one:"))
        rep.add(Bullets(hows))
    if any(x.get("baseline") is None for r in rows for x in r.analyses["robustness"]):
        rep.missing.append("effective robustness is missing where no baseline run (default: late_fusion on the "
                            "same cache, same seed) was found")
    rep.skipped_list(("robustness",))


def event_types(rep: Builder) -> None:
    """Paper 003's head assignment per category, and on synth its match with the generating type."""
    rows = rep.have("event-types")
    rep.add(Heading(2, "Event types"))
    if not rows:
        rep.add(Para("No event-type analysis recorded (strategies with named heads, e.g. `event_layers`)."))
        rep.skipped_list(("event-types",), by_reason=True)
        return
    rep.add(Para("Categories whose clips are mostly assigned to each head (paper 003, Table 4), first seed; "
                  "on synth, how often the assigned head is the head built for the clip's generating type."))
    for r in rows:
        res = r.analyses["event-types"][0]
        heads = res["heads"]
        body = [["categories"] + [res["category_counts"][h] for h in heads],
                ["clip share"] + [f"{res['clip_share'][h]:.3f}" for h in heads]]
        rep.add(Heading(4, f"{r.short} {r.label}"))
        rep.add(Table([""] + heads, body))
        tm = res.get("type_match")
        if tm:
            rep.add(Table(["generating type", "its head", "clips", "match"],
                           [[t, d["head"], d["n"], f"{d['match_rate']:.3f}"] for t, d in tm["by_type"].items()]
                           + [["all", "", tm["n"], f"{tm['overall']:.3f}"]]))
        line = class_match_line(r.analyses["event-types"])
        if line:
            rep.add(Para(line))
    rep.skipped_list(("event-types",), by_reason=True)


def class_match_line(per_seed: list[dict[str, Any]]) -> str:
    """Paper 003 Table 4's vote scored against synth's truth: the share of classes whose majority head
    is the head of their true dominant event type, first seed and mean over seeds, with chance."""
    got = [res["class_match"] for res in per_seed if (res.get("class_match") or {}).get("classes")]
    if not got:
        return ""
    first = got[0]
    text = (f"Classes voted to the head of their true dominant event type: {first['matched']}/{first['classes']} "
            f"({100 * first['fraction']:.1f}%) on the first seed")
    if len(got) > 1:
        text += f", {100 * float(np.mean([g['fraction'] for g in got])):.1f}% on average over {len(got)} seeds"
    return text + f"; chance {100 * first['chance']:.1f}% (one of the heads at random)."

