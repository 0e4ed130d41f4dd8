"""Messages through Python ``logging``; progress bars only on a terminal (or when asked).

Why: bare prints cannot be silenced or made more talkative, and a progress bar written to a file or
a CI log is carriage-return spam. ``avbench -v`` shows debug messages, ``-q`` only warnings and
errors (``-qq`` only errors). Results a command exists to print (tables, JSON on stdout) are data and
stay on stdout; messages go to stderr through the ``avbench`` logger.

``--progress auto`` (default) shows bars only when stderr is a terminal; ``always`` / ``never``
force it; a command's own ``--no-progress`` always wins.
"""

from __future__ import annotations

import argparse
import logging
import sys

LOGGER = "avbench"
PROGRESS_CHOICES = ("auto", "always", "never")
_progress = "auto"


def get(name: str = "") -> logging.Logger:
    """The logger of an avbench module: ``log.get(__name__)``."""
    return logging.getLogger(name if name.startswith(LOGGER) else f"{LOGGER}.{name}" if name else LOGGER)


def add_arguments(parser: argparse.ArgumentParser, subparsers: dict[str, argparse.ArgumentParser] | None = None) -> None:
    """``-v``/``-q``/``--progress`` on the top-level parser and, so that ``avbench run -v`` works too,
    on every subcommand (where they only override what was given before the subcommand)."""
    for i, p in enumerate([parser, *(subparsers or {}).values()]):
        default = 0 if i == 0 else argparse.SUPPRESS
        g = p.add_argument_group("output")
        g.add_argument("-v", "--verbose", action="count", default=default, help="more messages (debug)")
        g.add_argument("-q", "--quiet", action="count", default=default,
                       help="fewer messages: warnings and errors only (-qq: errors only)")
        g.add_argument("--progress", choices=PROGRESS_CHOICES, default="auto" if i == 0 else argparse.SUPPRESS,
                       help="progress bars: auto (only on a terminal, the default), always or never")


def level(verbose: int = 0, quiet: int = 0) -> int:
    n = int(verbose or 0) - int(quiet or 0)
    return logging.DEBUG if n > 0 else logging.INFO if n == 0 else logging.WARNING if n == -1 else logging.ERROR


class _Format(logging.Formatter):
    """Plain message for INFO; ``warning: ...`` / ``error: ...`` above; logger name in debug."""

    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        if record.exc_info and record.levelno >= logging.ERROR:
            msg += "\n" + self.formatException(record.exc_info)
        if record.levelno == logging.INFO:
            return msg
        if record.levelno < logging.INFO:
            return f"debug [{record.name}]: {msg}"
        return f"{record.levelname.lower()}: {msg}"


def setup(verbose: int = 0, quiet: int = 0, progress: str = "auto", stream=None) -> None:
    """Configure the ``avbench`` logger (idempotent: one handler, replaced on every call)."""
    global _progress
    if progress not in PROGRESS_CHOICES:
        raise ValueError(f"progress must be one of {PROGRESS_CHOICES}")
    _progress = progress
    logger = logging.getLogger(LOGGER)
    for h in list(logger.handlers):
        if getattr(h, "_avbench", False):
            logger.removeHandler(h)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler._avbench = True  # type: ignore[attr-defined]
    handler.setFormatter(_Format())
    logger.addHandler(handler)
    logger.setLevel(level(verbose, quiet))
    logger.propagate = False


def configure(args: argparse.Namespace) -> None:
    setup(getattr(args, "verbose", 0), getattr(args, "quiet", 0), getattr(args, "progress", "auto"))


def progress_enabled(requested: bool = True, stream=None) -> bool:
    """Whether to draw progress bars: never when a command said no, else per ``--progress``."""
    if not requested or _progress == "never":
        return False
    if _progress == "always":
        return True
    s = stream or sys.stderr
    try:
        return bool(s.isatty())
    except (AttributeError, ValueError):
        return False
