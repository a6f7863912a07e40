"""How a run reports its progress: a bar on a terminal, a plain line every 30 s or so in a batch job's log.

On clusters stderr is a file, where a bar's redrawn lines pile up; there a run writes
``probing MODEL: 120/1080 units (11 %), 2.4 units/s, about 7 min left`` every ``every`` seconds, and a last
line at the end.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["progress", "LogLines"]


class LogLines:
    """A progress reporter that writes one plain line per ``every`` seconds (the ``tqdm`` methods a run uses)."""

    def __init__(self, total: int, desc: str, every: float = 30.0, stream: TextIO | None = None,
                 clock=time.monotonic):  # fmt: skip
        self.total, self.desc, self.every = total, desc, every
        self.stream = stream or sys.stderr
        self.clock = clock
        self.done = 0
        self.start = self.last = clock()

    def update(self, n: int = 1) -> None:
        self.done += n
        if self.clock() - self.last >= self.every:
            self._line()

    def close(self) -> None:
        if self.done:
            self._line()

    def _line(self) -> None:
        now = self.clock()
        self.last = now
        rate = self.done / (now - self.start) if now > self.start else 0.0
        share = f" ({100 * self.done / self.total:.0f} %)" if self.total else ""
        left = f", about {_duration((self.total - self.done) / rate)} left" if rate and self.done < self.total else ""
        print(f"{self.desc}: {self.done}/{self.total} units{share}, {rate:.2f} units/s{left}", file=self.stream,
              flush=True)  # fmt: skip


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class _Silent:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def progress(total: int, desc: str, enabled: bool | None, rank: int):
    """A bar (``enabled`` True, or None on a terminal), log lines (None elsewhere), or nothing (False, rank > 0)."""
    if rank != 0 or enabled is False:
        return _Silent()
    if enabled or sys.stderr.isatty():
        from tqdm.auto import tqdm

        return tqdm(total=total, unit="unit", desc=desc, dynamic_ncols=True, smoothing=0.1)
    return LogLines(total, desc)
