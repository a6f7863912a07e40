"""Crash-safe storage of a run's rows: one SQLite database per rank, one transaction per work unit.

A work unit (one prompt × one task) commits its rows and its "done" mark in a single transaction, so a run
killed at any moment (even ``kill -9``) holds either all of a unit's rows or none of them; started again it
skips the units marked done in any rank's database. ``results.parquet`` is written from the databases at the
end of a run and on demand (:func:`collect`).
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from entroprobe.errors import LoadError
from entroprobe.probe.schema import COLUMNS

__all__ = ["ShardStore", "done_units", "read_rows", "read_errors", "read_outputs", "shard_paths", "write_atomic"]

_SHARD_DIR = "shards"


def shard_paths(run_dir: Path) -> list[Path]:
    return sorted((run_dir / _SHARD_DIR).glob("rank-*.sqlite"))


class ShardStore:
    """The database one rank writes: tables ``rows`` (the schema's columns), ``units`` and ``outputs``."""

    def __init__(self, run_dir: Path, rank: int):
        path = run_dir / _SHARD_DIR / f"rank-{rank}.sqlite"
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.connection = sqlite3.connect(path, timeout=60)
        self.connection.execute("PRAGMA journal_mode=WAL")
        self.connection.execute("PRAGMA synchronous=NORMAL")
        columns = ", ".join(f'"{name}"' for name in COLUMNS)
        with self.connection:
            self.connection.execute(f"CREATE TABLE IF NOT EXISTS rows (unit TEXT NOT NULL, {columns})")
            self.connection.execute(
                "CREATE TABLE IF NOT EXISTS units (unit TEXT PRIMARY KEY, ord INTEGER, status TEXT, detail TEXT)"
            )
            self.connection.execute("CREATE TABLE IF NOT EXISTS outputs (unit TEXT PRIMARY KEY, record TEXT)")

    def commit_unit(self, unit: str, order: int, rows: list[dict[str, Any]], output: dict[str, Any] | None) -> None:
        """Store a finished unit's rows, its output record and its done mark in one transaction."""
        names = ["unit", *COLUMNS]
        placeholders = ", ".join("?" for _ in names)
        values = [(unit, *(row[name] for name in COLUMNS)) for row in rows]
        with self.connection:
            self.connection.executemany(f"INSERT INTO rows VALUES ({placeholders})", values)
            if output is not None:
                self.connection.execute("INSERT OR REPLACE INTO outputs VALUES (?, ?)", (unit, json.dumps(output)))
            self.connection.execute("INSERT OR REPLACE INTO units VALUES (?, ?, 'ok', NULL)", (unit, order))

    def commit_error(self, unit: str, order: int, record: dict[str, Any]) -> None:
        """Mark a unit failed, with its error record (item, task, reason)."""
        with self.connection:
            self.connection.execute(
                "INSERT OR REPLACE INTO units VALUES (?, ?, 'error', ?)", (unit, order, json.dumps(record))
            )

    def close(self) -> None:
        self.connection.close()


def _query(run_dir: Path, sql: str) -> Iterable[tuple]:
    for path in shard_paths(run_dir):
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=60)
        try:
            if not connection.execute("SELECT 1 FROM sqlite_master WHERE name = 'units'").fetchone():
                continue  # a shard whose tables are not created yet holds nothing
            yield from connection.execute(sql).fetchall()
        except sqlite3.DatabaseError as exc:
            raise LoadError(f"Cannot read the run's shard database {path}: {exc}") from exc
        finally:
            connection.close()


def done_units(run_dir: Path) -> set[str]:
    """The units any rank has committed rows for (failed units are not done: a restarted run retries them)."""
    return {unit for (unit,) in _query(run_dir, "SELECT unit FROM units WHERE status = 'ok'")}


def read_rows(run_dir: Path) -> pd.DataFrame:
    """Every committed row of every rank, in the run's prompt order, as the schema's dtypes."""
    names = ["ord", *COLUMNS]
    columns = ", ".join(f'r."{name}"' for name in COLUMNS)
    sql = f"SELECT u.ord, {columns} FROM rows r JOIN units u ON r.unit = u.unit"
    frame = pd.DataFrame(list(_query(run_dir, sql)), columns=names)
    frame = frame.sort_values(["ord", "measure", "layer"], kind="stable").drop(columns="ord")
    frame = frame.astype({name: dtype for name, (dtype, _) in COLUMNS.items()})
    return frame.reset_index(drop=True)


def read_errors(run_dir: Path) -> list[dict[str, Any]]:
    """The recorded per-item errors, in the run's prompt order."""
    done = done_units(run_dir)  # a unit retried on another rank may have succeeded there
    rows = sorted(_query(run_dir, "SELECT ord, detail, unit FROM units WHERE status = 'error'"))
    return [json.loads(detail) for _, detail, unit in rows if unit not in done]


def read_outputs(run_dir: Path) -> list[dict[str, Any]]:
    """The generated outputs' records (text, or the path of a saved image), in the run's prompt order."""
    sql = "SELECT u.ord, o.record FROM outputs o JOIN units u ON o.unit = u.unit"
    return [json.loads(record) for _, record in sorted(_query(run_dir, sql))]


def write_atomic(path: Path, write: Any) -> None:
    """Write a file through ``write(tmp_path)`` then rename it into place, so readers never see half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write(tmp)
    os.replace(tmp, path)
