"""One writer per run directory: an exclusive lock held for as long as a run writes it.

The lock is ``fcntl.flock`` on ``RUN_DIR/.entroprobe.lock``: the operating system releases it when the holding
process ends, however it ends (``kill -9`` included), so a lock of a dead process never blocks. The file holds
who has it (process id, host, command, since when) for the message that refuses a second writer. Under torchrun
the run's rank 0 holds it for every rank. On a network file system without ``flock`` support the lock is
advisory only (see the README).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import socket
import sys
from pathlib import Path

from entroprobe.errors import LoadError

__all__ = ["RunLock", "LOCK_NAME"]

LOCK_NAME = ".entroprobe.lock"


class RunLock:
    """``with RunLock(run_dir):`` — the directory is this process's until the block ends.

    Raises:
        LoadError: another live process holds the lock (naming it), or the lock file cannot be made.
    """

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / LOCK_NAME
        self._handle = None

    def __repr__(self) -> str:
        return f"RunLock({str(self.path.parent)!r})"

    def acquire(self) -> RunLock:
        import fcntl

        try:
            handle = open(self.path, "a+", encoding="utf-8")
        except OSError as exc:
            raise LoadError(f"cannot lock the run directory {self.path.parent}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = _describe(handle.read())
            handle.close()
            raise LoadError(
                f"{self.path.parent} is being written by another entroprobe process ({holder}); wait for it to end "
                "or stop it, then run again: two writers would commit the same units twice"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(sys.argv),
                                 "since": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}))
        handle.flush()
        self._handle = handle
        return self

    def release(self) -> None:
        if self._handle is not None:
            import fcntl

            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _describe(text: str) -> str:
    try:
        holder = json.loads(text)
        return f"pid {holder['pid']} on {holder['host']}, since {holder['since']}: {holder['command']}"
    except (ValueError, KeyError, TypeError):
        return "a process that has not written its name yet"
