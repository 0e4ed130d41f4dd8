"""``avbench list [strategies|datasets]``: what is registered, and where each comes from.

Only entry-point metadata is read, so a broken plugin is listed and fails only when it is used."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list", help="list registered strategies and datasets")
    p.add_argument("what", nargs="?", choices=["strategies", "datasets"], help="only this kind")
    p.set_defaults(func=cmd_list)


def cmd_list(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    from avbench import registry

    kinds = [args.what] if args.what else ["strategies", "datasets"]
    for kind in kinds:
        reg = registry.strategies if kind == "strategies" else registry.datasets
        rows = [[e.name, e.origin, e.target] for e in reg.entries().values()]
        print(f"{kind} (entry-point group {reg.group}):")
        print(tabulate(rows, headers=["name", "from", "target"], tablefmt="simple"))
        print()
    print("Any strategy can also be given as --strategy package.module:Class.")
    return 0
