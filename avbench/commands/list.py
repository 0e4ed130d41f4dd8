"""``avbench list [strategies|datasets]``: what is registered, where each comes from, and each
strategy's named presets (``avbench show STRATEGY`` for the details).

Entry-point metadata names the plugins; a strategy is imported only to read its presets, and one
that fails to import is still listed, with the failure in place of its presets."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list", help="list registered strategies (with their presets) and datasets")
    p.add_argument("what", nargs="?", choices=["strategies", "datasets"], help="only this kind")
    p.set_defaults(func=cmd_list)


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
        if kind == "strategies":
            rows = [[e.name, _presets(e.name), e.origin, e.target] for e in reg.entries().values()]
            headers = ["name", "presets", "from", "target"]
        else:
            rows = [[e.name, e.origin, e.target] for e in reg.entries().values()]
            headers = ["name", "from", "target"]
        print(f"{kind} (entry-point group {reg.group}):")
        print(tabulate(rows, headers=headers, tablefmt="simple"))
        print()
    print("Any strategy can also be given as --strategy package.module:Class; "
          "'avbench show STRATEGY' lists its fields and presets.")
    return 0
