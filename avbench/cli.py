"""The ``avbench`` command line: thin wrappers that parse, call the library, and print.

Each subcommand lives in ``avbench/commands/<name>.py`` and exposes ``add_parser(subparsers)``, which
registers its parser and sets ``func``. Command modules import heavy libraries (torch, sklearn,
mlflow) and avbench's computing modules inside their handlers, so building the parser imports none
of them: ``avbench --help``, ``--version`` and ``avbench list`` start without torch
(tests/test_cli_startup.py checks it). Every command in ``COMMANDS`` must exist: a missing module
is an error, never a command silently left out of the parser.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import sys

from avbench import __version__, config_file, log, results
from avbench.errors import UserError
from avbench.fsguard import is_write_error, os_error

COMMANDS = ("run", "eval", "list", "show", "table", "cache", "extract", "bench", "sweep", "analyze", "report", "sync", "tune",
            "check-strategy")


class _Parser(argparse.ArgumentParser):
    """argparse exits with 2 on bad usage already; keep its one-line style for our own errors too."""


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="avbench", description="Benchmark audio-visual fusion strategies on frozen features.")
    parser.add_argument("--version", action="version", version=f"avbench {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"avbench.commands.{name.replace('-', '_')}")
        except ModuleNotFoundError as e:
            if e.name == f"avbench.commands.{name.replace('-', '_')}":
                raise ImportError(f"avbench command '{name}' has no module avbench/commands/{name.replace('-', '_')}.py "
                                  f"(a broken installation?)") from e
            raise
        module.add_parser(sub)
    log.add_arguments(parser, sub.choices)  # -v/-q/--progress before or after the command
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    results.set_command(argv)  # the full command line, recorded in every results JSON
    try:
        args = config_file.parse_args(parser, argv)  # --config FILE under the command line's flags
    except UserError as e:
        print(f"avbench: error: {e}", file=sys.stderr)
        return 2
    log.configure(args)
    if getattr(args, "computes", True):  # `avbench list` and the like set computes=False: no torch for them
        from avbench.hardware import configure_threads  # imports torch

        configure_threads()  # the cores this process may use (affinity, cgroup quota, OMP_NUM_THREADS), never more
    try:
        rc = args.func(args)
    except UserError as e:
        print(f"avbench {args.command}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a full disk, a read-only or wrong path anywhere: one line, exit 2 (avbench.fsguard)
        if not is_write_error(e):
            raise
        print(f"avbench {args.command}: error: {os_error(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("avbench: interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


def entry() -> None:
    """The console script and ``python -m avbench``: ``main``, then exit with the garbage collector's
    objects frozen (``gc.freeze``). Without it the interpreter's teardown collects every object torch,
    dynamo and MLflow made: 1.7-2.3 s after a run's result was printed, on a quiet 2-core machine (issue 27).
    Exit handlers, thread joins and stream flushes run as usual; only the last collections skip them."""
    rc = main()
    gc.freeze()
    sys.exit(rc)


if __name__ == "__main__":
    entry()
