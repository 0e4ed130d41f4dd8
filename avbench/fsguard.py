"""Paths and disk space checked before work starts, and write errors as one line.

A run that trains for an hour and then cannot write its results has lost the hour: ``avbench run``
checks ``--output-json``, ``--results-dir`` and the cache root here before training, and a cache or
results write checks free space against what it will write. ``os_error`` is what the CLI prints for
ENOSPC, EROFS, EACCES, ENOTDIR (and their kin) raised anywhere: the path and the problem, exit 2.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from avbench.errors import UserError

WRITE_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EISDIR,
                errno.EDQUOT, errno.EEXIST, errno.ENAMETOOLONG, errno.EFBIG}
MARGIN_BYTES = 16 << 20  # filesystems misbehave when filled to the last block ...
MARGIN_FRACTION = 0.05  # ... but on a small one (an 8 MiB tmpfs) the margin is 5% of its size


def os_error(e: OSError, path: str | Path | None = None) -> str:
    """``<path>: <problem>`` for a failed write (the problem in the system's own words)."""
    where = path or e.filename or "?"
    problem = (e.strerror or type(e).__name__).lower()
    if e.errno == errno.ENOSPC:
        problem = "no space left on device"
    return f"cannot write {where}: {problem}"


def is_write_error(e: BaseException) -> bool:
    return isinstance(e, OSError) and e.errno in WRITE_ERRNOS


@contextlib.contextmanager
def writing(path: str | Path) -> Iterator[None]:
    """Turn a write error inside the block into a one-line UserError naming ``path``."""
    try:
        yield
    except OSError as e:
        if e.errno not in WRITE_ERRNOS:
            raise
        raise UserError(os_error(e, e.filename or path)) from None


def _existing_ancestor(path: Path) -> Path:
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check_dir(path: str | Path, what: str) -> Path:
    """Make ``path`` (a directory) if needed and prove a file can be created in it."""
    p = Path(path).expanduser()
    anc = _existing_ancestor(p)
    if not anc.is_dir():
        raise UserError(f"{what} {p}: {anc} is a file, not a directory")
    try:
        p.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".avbench-write-test.", dir=p)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        if e.errno not in WRITE_ERRNOS:
            raise
        raise UserError(f"{what} {p}: not writable ({(e.strerror or '').lower()})") from None
    return p


STDOUT = "-"  # an output path of "-" means standard output


def check_output(path: str | Path, what: str = "output") -> None:
    """The one rule for every file avbench writes by write-then-rename: ``path`` is a regular file (it
    is replaced) or a new name. A device, FIFO or socket is refused: renaming over ``/dev/full`` would
    replace the device node with a JSON file (as root), and writing into a FIFO would block."""
    p = Path(path).expanduser()
    if str(path) == STDOUT:
        return
    try:
        st = os.stat(p)  # follows a symlink: what the name points at is what must be a file
    except (FileNotFoundError, NotADirectoryError):
        return  # a new name (a folder on the way that is a file is check_dir's to say)
    except OSError as e:
        raise UserError(f"{what} {p}: cannot be checked ({(e.strerror or type(e).__name__).lower()})") from None
    if stat.S_ISDIR(st.st_mode):
        raise UserError(f"{what} {p}: is a directory, expected a file name")
    if not stat.S_ISREG(st.st_mode):
        kind = ("a character device" if stat.S_ISCHR(st.st_mode) else "a block device" if stat.S_ISBLK(st.st_mode)
                else "a FIFO" if stat.S_ISFIFO(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode)
                else "not a regular file")
        raise UserError(f"{what} {p}: is {kind}, not a regular file; give a new file name (or - for standard output)")


def check_file(path: str | Path, what: str) -> Path:
    """``path`` can be written as a file: a regular file or a new name (``check_output``), its folder
    writable; ``-`` is standard output."""
    p = Path(path).expanduser()
    check_output(path, what)
    if str(path) == STDOUT:
        return p
    check_dir(p.parent if str(p.parent) else Path("."), what)
    return p


def check_file_options(**paths: str | None) -> None:
    """``check_file`` for each given option (``output_json=args.output_json``; None is skipped), so a
    command refuses a bad output path before it works, not after."""
    for name, path in paths.items():
        if path:
            check_file(path, "--" + name.replace("_", "-"))


def available_memory() -> int:
    """Bytes of memory a new allocation can get without swapping (psutil's ``available``)."""
    import psutil

    return int(psutil.virtual_memory().available)


def check_memory(need: int, what: str) -> None:
    """Refuse (one line, needed vs available) an allocation that would not fit in memory."""
    have = available_memory()
    if need > have:
        raise UserError(f"{what}: needs {human(need)} of memory, the machine has {human(have)} available")


def free_bytes(path: str | Path) -> int:
    return shutil.disk_usage(_existing_ancestor(Path(path).expanduser().resolve())).free


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def check_space(path: str | Path, need: int, what: str) -> None:
    """Refuse (one line, needed vs free) when ``need`` bytes would not fit under ``path``."""
    usage = shutil.disk_usage(_existing_ancestor(Path(path).expanduser().resolve()))
    free = free_bytes(path)
    margin = min(MARGIN_BYTES, int(MARGIN_FRACTION * usage.total))
    if need + margin > free:
        raise UserError(f"{what} {path}: needs {human(need)} (+{human(margin)} margin), "
                        f"only {human(free)} free")


def atomic_path(final: Path) -> Path:
    """A temporary name beside ``final`` for write-then-rename (a torn file is never under ``final``)."""
    return final.with_name(f".{final.name}.{os.getpid()}.tmp")


@contextlib.contextmanager
def atomic_write(final: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write; rename it to ``final`` on success, remove it on any failure."""
    final = Path(final)
    check_output(final)
    tmp = atomic_path(final)
    try:
        with writing(final):
            yield tmp
            os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


def check_resources(memory: int, disk: int, path: str | Path, what: str) -> None:
    """Both checks for something about to be generated: ``memory`` bytes held at once, ``disk`` bytes
    written under ``path`` (one line each: needs X, has Y)."""
    check_memory(memory, what)
    check_space(path, disk, what)
