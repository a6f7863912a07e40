"""Crash-safe storage of a run's rows: one SQLite database per rank, one transaction per work unit.

A work unit (one prompt × one task) commits its rows and its "done" mark in a single transaction, so a run
killed at any moment (even ``kill -9``) holds either all of a unit's rows or none of them; started again it
skips the units marked done in any rank's database. ``results.parquet`` is written from the databases at the
end of a run and on demand (:func:`collect`).

A row can be committed once only: a unique index on its key (the unit and :data:`~.schema.ROW_KEY`'s row
columns) refuses a second copy, and a unit's commit first removes any rows it had. A directory that an older
entroprobe damaged (two writers, the same rows twice) is repaired when a shard opens or is read: one copy of
each row is kept. Each unit's mark records a hash of what the model saw (``content``), so a prompt edited
since it was measured is recomputed.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import sqlite3
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from entroprobe.errors import LoadError
from entroprobe.probe.schema import COLUMNS, ROW_KEY

__all__ = ["ShardStore", "done_units", "read_rows", "read_errors", "read_outputs", "shard_paths", "write_atomic",
           "remove_stale_temporaries", "file_stem", "forget", "repair", "disk_full", "commit_failure", "Done"]

_SHARD_DIR = "shards"
_ROW_COLUMNS = [c for c in ROW_KEY if c not in ("source", "prompt_id", "task")]  # the unit names those three
_KEY_SQL = ", ".join(f'"{c}"' for c in ["unit", *_ROW_COLUMNS])
_TMP = re.compile(r"^\..+\.(\d+)\.tmp$")


def shard_paths(run_dir: Path) -> list[Path]:
    return sorted((run_dir / _SHARD_DIR).glob("rank-*.sqlite"))


def disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` says the disk (or the quota) is full, from SQLite or from the operating system."""
    if isinstance(exc, sqlite3.OperationalError):
        return "full" in str(exc).lower()
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def commit_failure(exc: BaseException, path: Path) -> LoadError:
    """The error for a failed write: a full disk (say so, and that committed units are kept), or another cause."""
    if disk_full(exc):
        return LoadError(f"cannot write {path}: the disk is full. The units committed before are kept; free space "
                         "and run the same command again to resume")
    return LoadError(f"cannot write {path}: {exc}. The units committed before are kept; run the same command "
                     "again to resume")




class ShardStore:
    """The database one rank writes: tables ``rows`` (the schema's columns), ``units`` and ``outputs``."""

    def __init__(self, run_dir: Path, rank: int):
        path = run_dir / _SHARD_DIR / f"rank-{rank}.sqlite"
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.repaired = 0  # duplicate rows an older version left, removed when this shard opened
        try:
            self.connection = sqlite3.connect(path, timeout=60)
            self.connection.execute("PRAGMA journal_mode=WAL")
            self.connection.execute("PRAGMA synchronous=NORMAL")
            columns = ", ".join(f'"{name}"' for name in COLUMNS)
            with self.connection:
                self.connection.execute(f"CREATE TABLE IF NOT EXISTS rows (unit TEXT NOT NULL, {columns})")
                self.connection.execute("CREATE TABLE IF NOT EXISTS units (unit TEXT PRIMARY KEY, ord INTEGER, "
                                        "status TEXT, detail TEXT, content TEXT)")  # fmt: skip
                self.connection.execute("CREATE TABLE IF NOT EXISTS outputs (unit TEXT PRIMARY KEY, record TEXT)")
                self.repaired = _deduplicate(self.connection)
                self.connection.execute(f"CREATE UNIQUE INDEX IF NOT EXISTS rows_key ON rows ({_KEY_SQL})")
        except sqlite3.OperationalError as exc:
            raise commit_failure(exc, path) from None

    def commit_unit(self, unit: str, order: int, rows: list[dict[str, Any]], output: dict[str, Any] | None,
                    content: str) -> None:  # fmt: skip
        """Store a finished unit's rows, its output record and its done mark in one transaction."""
        names = ["unit", *COLUMNS]
        placeholders = ", ".join("?" for _ in names)
        values = [(unit, *(row[name] for name in COLUMNS)) for row in rows]
        try:
            with self.connection:
                self.connection.execute("DELETE FROM rows WHERE unit = ?", (unit,))  # a retried or edited unit
                self.connection.executemany(f"INSERT INTO rows VALUES ({placeholders})", values)
                if output is not None:
                    self.connection.execute("INSERT OR REPLACE INTO outputs VALUES (?, ?)", (unit, json.dumps(output)))
                self.connection.execute("INSERT OR REPLACE INTO units VALUES (?, ?, 'ok', NULL, ?)",
                                        (unit, order, content))  # fmt: skip
        except sqlite3.OperationalError as exc:
            raise commit_failure(exc, self.path) from None

    def commit_error(self, unit: str, order: int, record: dict[str, Any], content: str) -> None:
        """Mark a unit failed, with its error record (item, task, reason)."""
        try:
            with self.connection:
                self.connection.execute("INSERT OR REPLACE INTO units VALUES (?, ?, 'error', ?, ?)",
                                        (unit, order, json.dumps(record), content))  # fmt: skip
        except sqlite3.OperationalError as exc:
            raise commit_failure(exc, self.path) from None

    def close(self) -> None:
        self.connection.close()


def forget(run_dir: Path, units: Iterable[str]) -> None:
    """Remove units (rows, output, mark) from every shard: their prompts changed since they were measured."""
    keys = [(u,) for u in units]
    for path in shard_paths(run_dir):
        connection = sqlite3.connect(path, timeout=60)
        try:
            with connection:
                for table in ("rows", "outputs", "units"):
                    if connection.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (table,)).fetchone():
                        connection.executemany(f"DELETE FROM {table} WHERE unit = ?", keys)
        except sqlite3.OperationalError as exc:
            raise commit_failure(exc, path) from None
        finally:
            connection.close()


def repair(run_dir: Path) -> int:
    """Remove for good what an older entroprobe committed twice: repeated rows within a shard, and units that a
    later shard holds again. The caller holds the run's lock. Returns the rows removed."""
    removed, seen = 0, set()
    for path in shard_paths(run_dir):
        connection = sqlite3.connect(path, timeout=60)
        try:
            with connection:
                if not connection.execute("SELECT 1 FROM sqlite_master WHERE name = 'units'").fetchone():
                    continue
                removed += _deduplicate(connection, force=True)
                mine = {u for (u,) in connection.execute("SELECT unit FROM units WHERE status = 'ok'")}
                again = [(u,) for u in mine & seen]
                before = connection.total_changes
                for table in ("rows", "outputs", "units"):
                    connection.executemany(f"DELETE FROM {table} WHERE unit = ?", again)
                removed += connection.total_changes - before
                connection.execute(f"CREATE UNIQUE INDEX IF NOT EXISTS rows_key ON rows ({_KEY_SQL})")
                seen |= mine
        except sqlite3.OperationalError as exc:
            raise commit_failure(exc, path) from None
        finally:
            connection.close()
    return removed


def _columns(connection: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in connection.execute(f"PRAGMA table_info({table})")}


def _deduplicate(connection: sqlite3.Connection, force: bool = False) -> int:
    """Keep one copy of each row (the first committed); returns how many copies were removed."""
    if not set(_ROW_COLUMNS) <= _columns(connection, "rows"):
        return 0  # a shard of an older layout: its run's settings differ, and it is refused or wiped
    if "content" not in _columns(connection, "units"):
        connection.execute("ALTER TABLE units ADD COLUMN content TEXT")
    if not force and connection.execute("SELECT 1 FROM sqlite_master WHERE name = 'rows_key'").fetchone():
        return 0  # the unique index is there: no row can have been committed twice
    before = connection.total_changes
    connection.execute(f"DELETE FROM rows WHERE rowid NOT IN (SELECT MIN(rowid) FROM rows GROUP BY {_KEY_SQL})")
    return connection.total_changes - before


def _query(run_dir: Path, sql: str) -> Iterable[tuple[int, tuple]]:
    """``(shard index, row)`` for every row of ``sql`` in every shard."""
    for index, path in enumerate(shard_paths(run_dir)):
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=60)
        try:
            if not connection.execute("SELECT 1 FROM sqlite_master WHERE name = 'units'").fetchone():
                continue  # a shard whose tables are not created yet holds nothing
            for row in connection.execute(sql).fetchall():
                yield index, row
        except sqlite3.DatabaseError as exc:
            raise LoadError(f"Cannot read the run's shard database {path}: {exc}") from exc
        finally:
            connection.close()


Done = dict[str, str | None]  # unit → the content hash it was measured with (None: recorded before hashes)


def done_units(run_dir: Path) -> Done:
    """The units any rank has committed rows for, with their content hashes (failed units are not done: a
    restarted run retries them)."""
    done: Done = {}
    for _, (unit, content) in _query(run_dir, "SELECT unit, content FROM units WHERE status = 'ok'"):
        done.setdefault(unit, content)
    return done


def read_rows(run_dir: Path) -> tuple[pd.DataFrame, int]:
    """Every committed row of every rank, in the run's prompt order, as the schema's dtypes.

    A unit committed by several shards (two writers of an older entroprobe) is read from the first; a row
    repeated within a shard once. Returns the rows and how many repeated rows were left out.
    """
    names = ["shard", "ord", "unit", *COLUMNS]
    columns = ", ".join(f'r."{name}"' for name in COLUMNS)
    sql = f"SELECT u.ord, r.unit, {columns} FROM rows r JOIN units u ON r.unit = u.unit"
    frame = pd.DataFrame([(shard, *row) for shard, row in _query(run_dir, sql)], columns=names)
    first = frame.groupby("unit")["shard"].transform("min")
    keep = (frame["shard"] == first) & ~frame.duplicated(["unit", *_ROW_COLUMNS])
    dropped = int((~keep).sum())
    frame = frame[keep].sort_values(["ord", "measure", "layer"], kind="stable").drop(columns=["shard", "ord", "unit"])
    frame = frame.astype({name: dtype for name, (dtype, _) in COLUMNS.items()})
    return frame.reset_index(drop=True), dropped


def read_errors(run_dir: Path) -> list[dict[str, Any]]:
    """The recorded per-item errors, in the run's prompt order."""
    done = done_units(run_dir)  # a unit retried on another rank may have succeeded there
    rows = sorted({row for _, row in _query(run_dir, "SELECT ord, detail, unit FROM units WHERE status = 'error'")})
    return [json.loads(detail) for _, detail, unit in rows if unit not in done]


def read_outputs(run_dir: Path) -> list[dict[str, Any]]:
    """The generated outputs' records (text, or the path of a saved image), in the run's prompt order."""
    sql = "SELECT u.ord, o.unit, o.record FROM outputs o JOIN units u ON o.unit = u.unit"
    records = {unit: (order, record) for _, (order, unit, record) in _query(run_dir, sql)}
    return [json.loads(record) for order, record in sorted(records.values())]


def write_atomic(path: Path, write: Callable[[Path], Any]) -> None:
    """Write a file through ``write(tmp_path)`` then rename it into place, so readers never see half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise LoadError(f"cannot write {path}: {exc.strerror or exc}") from None


def remove_stale_temporaries(run_dir: Path) -> list[Path]:
    """Remove ``.NAME.PID.tmp`` files that a killed process left in ``run_dir``; returns them."""
    removed = []
    for path in run_dir.glob(".*.tmp"):
        match = _TMP.match(path.name)
        if match and not _alive(int(match.group(1))):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - another user's live process
        return True
    return True


def file_stem(key: str, most: int = 120) -> str:
    """A portable, short file name for a unit key, different for every key.

    Every character but ``A-Z a-z 0-9 - _ .`` is written ``~XX`` (its UTF-8 bytes in hex; ``~`` itself too),
    which is injective; a name that would be longer than ``most`` keeps its start and ends with a hash of the
    whole key.

    >>> file_stem("jsonl/p/q/image-gen"), file_stem("jsonl/p__q/image-gen")
    ('jsonl~2Fp~2Fq~2Fimage-gen', 'jsonl~2Fp__q~2Fimage-gen')
    """
    stem = "".join(ch if re.fullmatch(r"[A-Za-z0-9_.\-]", ch) else "".join(f"~{b:02X}" for b in ch.encode())
                   for ch in key)  # fmt: skip
    if stem.startswith("."):
        stem = "~2E" + stem[1:]
    digest = hashlib.sha256(key.encode()).hexdigest()
    if key != key.lower():  # case-insensitive file systems (macOS, Windows) would merge P1 and p1: a hash tells
        stem = f"{stem}-{digest[:8]}"
    if len(stem) <= most:
        return stem
    return f"{stem[: most - 17]}-{digest[:16]}"
