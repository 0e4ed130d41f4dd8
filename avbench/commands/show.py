"""``avbench show STRATEGY [--dataset D] [--preset NAME]``: what a strategy lets you set and what it can do.

Every field of the strategy's config with its type, default and comment; what the dataset card
changes (``--dataset``) and what a preset changes (``--preset``), and the value a run would use
before ``--set``; the strategy's named presets; its capabilities, with the reason for each one it
lacks; its training stages; and the recipe defaults the card sets. ``--format json`` for tools.
"""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("show", help="a strategy's fields, defaults, presets, capabilities and stages",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("strategy", help="registered name (avbench list) or package.module:Class")
    p.add_argument("--dataset", help="also show what this dataset card sets")
    p.add_argument("--preset", help="also show what this preset sets")
    p.add_argument("--format", default="text", choices=["text", "json"])
    p.set_defaults(func=cmd_show)


def cmd_show(args: argparse.Namespace) -> int:
    import json

    info = describe(args.strategy, args.dataset, args.preset)
    if args.format == "json":
        print(json.dumps(info, indent=2, default=str))
    else:
        print(render(info))
    return 0


def _type_name(t) -> str:
    if isinstance(t, type):
        return t.__name__
    return str(t).replace("typing.", "")


def describe(strategy: str, dataset: str | None = None, preset: str | None = None) -> dict:
    """Everything ``show`` prints, as plain data."""
    import dataclasses

    from avbench import config as cfgmod
    from avbench import registry
    from avbench.api import field_comments

    cls = registry.load_strategy(strategy)
    card = registry.load_dataset(dataset) if dataset else None
    types = cfgmod.field_types(cls.Config)
    defaults = cls.Config()
    names = [f.name for f in dataclasses.fields(cls.Config)]
    card_over = card.strategy_overrides(cls.name, set(names)) if card else {}
    preset_over = registry.preset(cls, preset) if preset else {}
    effective = cfgmod.apply_overrides(defaults, card_over, where="the card")
    effective = cfgmod.apply_overrides(effective, preset_over, where=f"preset '{preset}'")
    comments = field_comments(cls.Config)  # the inline ``# comments`` of the Config source
    fields = [{"name": n, "type": _type_name(types[n]), "default": getattr(defaults, n),
               "card": card_over.get(n), "preset": preset_over.get(n), "value": getattr(effective, n),
               "help": comments.get(n, "")} for n in names]
    caps = cls.capabilities
    cap_names = [f.name for f in dataclasses.fields(caps) if f.name != "reasons"]
    import inspect

    own = cls.__dict__.get("__doc__") or (inspect.getmodule(cls).__doc__ if inspect.getmodule(cls) else "")
    doc = (own or "").strip().split("\n\n")[0].replace("\n", " ")
    return {"name": cls.name, "target": strategy, "origin": registry.strategies.origin(strategy), "doc": doc,
            "stages": list(cls.stages), "dataset": card.name if card else None, "preset": preset,
            "fields": fields,
            "capabilities": [{"name": c, "supported": bool(getattr(caps, c)), "reason": caps.why_not(c)}
                             for c in cap_names],
            "presets": {k: dict(v) for k, v in (getattr(cls, "presets", {}) or {}).items()},
            "recipe_defaults": dict(card.recipe_defaults) if card else {}}


def _v(x) -> str:
    return "" if x is None else repr(x) if isinstance(x, str) else str(x)


def render(info: dict) -> str:
    from tabulate import tabulate

    out = [f"{info['name']} ({info['origin']})"]
    if info["doc"]:
        out.append(info["doc"])
    out.append(f"stages: {', '.join(info['stages'])}")
    cols = ["field", "type", "default"]
    if info["dataset"]:
        cols.append(f"card {info['dataset']}")
    if info["preset"]:
        cols.append(f"preset {info['preset']}")
    if info["dataset"] or info["preset"]:
        cols.append("used")
    cols.append("what")
    rows = []
    for f in info["fields"]:
        row = [f["name"], f["type"], _v(f["default"])]
        if info["dataset"]:
            row.append(_v(f["card"]))
        if info["preset"]:
            row.append(_v(f["preset"]))
        if info["dataset"] or info["preset"]:
            row.append(_v(f["value"]))
        rows.append(row + [f["help"]])
    out.append("")
    if rows:
        out.append("config (--set FIELD=VALUE):")
        out.append(tabulate(rows, headers=cols, tablefmt="simple"))
    else:
        out.append("config: nothing to set")
    out.append("")
    if info["presets"]:
        out.append("presets (--preset NAME):")
        out += [f"  {k}: " + ", ".join(f"{a}={b}" for a, b in v.items()) for k, v in info["presets"].items()]
    else:
        out.append("presets: none")
    out.append("")
    out.append("capabilities:")
    out.append(tabulate([[c["name"], "yes" if c["supported"] else "no", c["reason"]] for c in info["capabilities"]],
                        headers=["capability", "", "why not"], tablefmt="simple"))
    if info["recipe_defaults"]:
        out.append("")
        out.append(f"recipe defaults of {info['dataset']} (--set train.FIELD=VALUE): "
                   + ", ".join(f"{k}={v}" for k, v in info["recipe_defaults"].items()))
    return "\n".join(out)
