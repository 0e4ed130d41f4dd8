"""``avbench list [strategies|datasets] [--presets]``: what is registered and where each comes from
(``avbench show STRATEGY`` for the details).

Entry-point metadata names the plugins, so listing imports no plugin and neither torch nor sklearn
(it starts in well under a second). ``--presets`` imports each strategy to read its named presets;
one that fails to import is still listed, with the failure in place of its presets. A name that two
packages register is listed with both (and refused when requested)."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list", help="list registered strategies (with their presets) and datasets")
    p.add_argument("what", nargs="?", choices=["strategies", "datasets"], help="only this kind")
    p.add_argument("--presets", action="store_true",
                   help="also each strategy's named presets (imports every strategy, and so torch)")
    p.set_defaults(func=cmd_list, computes=False)  # no thread setup: listing must not import torch


def _presets(name: str) -> str:
    from avbench import registry

    try:
        cls = registry.load_strategy(name)
    except Exception as e:  # a broken plugin breaks only its own line
        return f"(cannot import: {type(e).__name__})"
    return ", ".join(getattr(cls, "presets", {}) or {}) or "-"


def cmd_list(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    from avbench import registry

    kinds = [args.what] if args.what else ["strategies", "datasets"]
    for kind in kinds:
        reg = registry.strategies if kind == "strategies" else registry.datasets
        entries = reg.entries().values()
        rows = [[e.name, e.origin + "".join(f"; CONFLICT: also {o}" for o in e.others), e.target] for e in entries]
        headers = ["name", "from", "target"]
        if kind == "strategies" and args.presets:
            rows = [[row[0], _presets(e.name), *row[1:]] for row, e in zip(rows, entries)]
            headers = ["name", "presets", "from", "target"]
        print(f"{kind} (entry-point group {reg.group}):")
        print(tabulate(rows, headers=headers, tablefmt="simple"))
        print()
    print("Any strategy can also be given as --strategy package.module:Class; "
          "'avbench show STRATEGY' lists its fields and presets (or: avbench list --presets).")
    return 0
