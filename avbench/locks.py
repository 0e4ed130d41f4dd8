"""One file lock for everything several processes may build at once (a synth cache, a cache's pending
manifest, the validation record, the sqlite tracking store).

Why ``fcntl.flock`` on a lock file: the kernel releases it when its holder dies (kill -9, SIGBUS, a
lost node), so a dead holder never leaves a stale lock to clear by hand, and the next waiter simply
gets it. The protocol for a shared thing is always the same: take the lock, look whether another
process finished it while we waited (reuse it), else build it and publish it atomically, release.
The lock file itself stays (it holds no data; removing it while another process waits on it would
let two holders in).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)
_held: dict[tuple[str, int], int] = {}  # (lock file, thread) -> depth: the lock is re-entrant per thread


def _open(path: Path) -> int:
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as e:  # a read-only place that already has the lock file: flock works read-only
        if e.errno in (errno.EACCES, errno.EROFS, errno.EPERM) and path.exists():
            return os.open(path, os.O_RDONLY)
        raise


@contextlib.contextmanager
def file_lock(path: str | Path, what: str = "") -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if needed) for the block. A second process waits
    (saying once what for); the kernel frees the lock when its holder exits, however it exits. The same
    thread taking it again (a builder calling another builder under the same lock) goes straight in."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    key = (os.path.realpath(p), threading.get_ident())
    if _held.get(key):  # this thread holds it already: a second flock on a new descriptor would wait forever
        _held[key] += 1
        try:
            yield
        finally:
            _held[key] -= 1
        return
    fd = _open(p)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for another process %s (%s)", what or "holding the lock", p)
            fcntl.flock(fd, fcntl.LOCK_EX)
        _held[key] = 1
        yield
    finally:
        _held.pop(key, None)
        os.close(fd)  # closing the descriptor releases the lock


def lock_beside(target: str | Path) -> Path:
    """The lock file that guards building ``target`` (a directory or file): a hidden sibling, so the
    lock exists before the target does and never sits inside what it guards."""
    t = Path(target)
    return t.with_name(f".{t.name}.lock")
