"""``avbench check-strategy NAME``: run the strategy contract on tiny random data (avbench/testing.py).

For a plugin author before a first real run: every rule of docs/plugins.md that can be checked in
seconds (abstract methods, a Config with ranges, forward/backward in every stage, predict under eval
mode + no_grad + autocast, honest capabilities, determinism, state_dict round trip, onsets accepted).
Exit 0 when every check passes, 1 when one fails, 2 when the name cannot be loaded."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check-strategy", help="check a strategy against the plugin contract on tiny data",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("strategy", help="registered name or package.module:Class")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="a Config field for the tiny build (embed_dim is 16 unless set); repeatable")
    p.set_defaults(func=cmd_check_strategy)


def cmd_check_strategy(args: argparse.Namespace) -> int:
    from avbench import config as cfgmod
    from avbench.testing import check_strategy

    report = check_strategy(args.strategy, overrides=cfgmod.parse_pairs(args.overrides), raise_on_failure=False)
    for line in report.lines():
        print(line)
    print(f"{report.strategy}: {'follows the contract' if report.ok else f'{len(report.failed)} check(s) failed'}")
    return 0 if report.ok else 1
