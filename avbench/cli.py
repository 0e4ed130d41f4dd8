"""The ``avbench`` command line: thin wrappers that parse, call the library, and print.

Each subcommand lives in ``avbench/commands/<name>.py`` and exposes ``add_parser(subparsers)``, which
registers its parser and sets ``func``. Command modules import heavy libraries (torch, mlflow) inside
their handlers so ``avbench --help`` and ``avbench list`` start fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from avbench import __version__
from avbench.errors import UserError

COMMANDS = ("run", "list", "table", "cache", "extract", "bench", "sweep", "analyze", "report")


class _Parser(argparse.ArgumentParser):
    """argparse exits with 2 on bad usage already; keep its one-line style for our own errors too."""


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="avbench", description="Benchmark audio-visual fusion strategies on frozen features.")
    parser.add_argument("--version", action="version", version=f"avbench {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"avbench.commands.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"avbench.commands.{name}":
                continue  # a command not built yet
            raise
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        rc = args.func(args)
    except UserError as e:
        print(f"avbench {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("avbench: interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
