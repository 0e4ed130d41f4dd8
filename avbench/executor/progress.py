"""One progress display for a whole sweep: done / running / failed / ETA, with a line per finished job.

On a terminal it is one tqdm bar; in a log (stderr not a TTY, ``--progress never`` or ``--no-progress``)
each job's line carries the same counts, so nothing redraws.

Jobs run with their own progress off (N interleaved per-epoch bars from N processes are unreadable);
the driver owns the only bar. The ETA is the mean wall time of the jobs finished in this session
times the jobs left, divided by the jobs that run at once: skipped (already finished) jobs do not
count, so a resumed sweep does not promise an instant finish.
"""

from __future__ import annotations

import sys
import time
from typing import Any


class SweepProgress:
    def __init__(self, total: int, slots: int, already_done: int = 0, already_failed: int = 0, enabled: bool = True,
                 desc: str = "sweep", stream: Any = None):
        from tqdm.auto import tqdm

        from avbench import log

        self.total, self.slots = total, max(1, slots)
        self.done, self.failed, self.running = already_done, already_failed, 0
        self._durations: list[float] = []
        self._t0 = time.monotonic()
        self._stream = stream or sys.stderr
        bar = log.progress_enabled(enabled, self._stream)  # --progress auto: a bar only on a terminal
        self._bar = tqdm(total=total, initial=already_done, desc=desc, unit="job", file=self._stream,
                         disable=not bar, dynamic_ncols=True,
                         bar_format="{desc}: {n_fmt}/{total_fmt} done |{bar}| [{elapsed}{postfix}]")
        self._refresh()

    def eta_seconds(self) -> float | None:
        if not self._durations:
            return None
        left = self.total - self.done
        return sum(self._durations) / len(self._durations) * left / self.slots

    def set_running(self, n: int) -> None:
        if n != self.running:
            self.running = n
            self._refresh()

    def finished(self, seconds: float, failed: bool, line: str | None = None) -> None:
        self.done += 1
        self.failed += int(failed)
        if seconds > 0:
            self._durations.append(seconds)
        self._bar.update(1)
        if line:
            self.write(line if not self._bar.disable else f"{line}  [{self.status()}]")
        self._refresh()

    def write(self, line: str) -> None:
        from tqdm.auto import tqdm

        if self._bar.disable:
            print(line, flush=True)
        else:
            tqdm.write(line, file=sys.stdout)

    def status(self) -> str:
        eta = self.eta_seconds()
        return f"{self.running} running, {self.failed} failed, ETA {_fmt(eta) if eta is not None else '?'}"

    def _refresh(self) -> None:
        if not self._bar.disable:
            self._bar.set_postfix_str(self.status(), refresh=True)

    def close(self) -> None:
        self._bar.close()


def _fmt(seconds: float) -> str:
    s = round(seconds)
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
