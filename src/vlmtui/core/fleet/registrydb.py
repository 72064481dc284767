"""The SQLite side of the run registry (`registry.py`): its schema, telling a corrupt file
from a locked one, and retrying while another process holds the write lock — until a
deadline, so that a lock held for good fails a write in one line instead of hanging it."""

from __future__ import annotations

import itertools
import random
import shutil
import sqlite3
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any, TypeVar

from vlmtui.core.errors import WorkFailed
from vlmtui.core.fleet.runrecord import RunRecord

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    recipe TEXT NOT NULL,
    host TEXT NOT NULL,
    gpus TEXT NOT NULL,
    nproc INTEGER NOT NULL DEFAULT 1,
    model TEXT NOT NULL DEFAULT '',
    data TEXT NOT NULL DEFAULT '',
    max_steps INTEGER,
    run_dir TEXT NOT NULL,
    pid INTEGER,
    created REAL NOT NULL,
    state TEXT NOT NULL,
    step INTEGER,
    loss REAL,
    error TEXT,
    checked REAL,
    command TEXT NOT NULL DEFAULT '[]',
    job TEXT
);
CREATE INDEX IF NOT EXISTS runs_host_state ON runs(host, state);
"""

_FIELDS = frozenset(f.name for f in fields(RunRecord))


def record_of(row: Any) -> RunRecord:
    """A row as a RunRecord; columns this version does not know (a newer vlmtui added them
    to a registry both use) are left out."""
    return RunRecord(**{k: v for k, v in dict(row).items() if k in _FIELDS})


def add_missing_columns(con: sqlite3.Connection) -> None:
    """A registry written before the `job` column existed gets it (NULL for old rows)."""
    have = {row[1] for row in con.execute("PRAGMA table_info(runs)")}
    if "job" not in have:
        try:
            con.execute("ALTER TABLE runs ADD COLUMN job TEXT")
        except sqlite3.OperationalError as exc:
            if "duplicate column" not in str(exc):  # another process added it just now
                raise


def is_corrupt(exc: sqlite3.DatabaseError) -> bool:
    if isinstance(exc, sqlite3.OperationalError):
        return False  # locked, busy, I/O: not the file's content
    msg = str(exc)
    return "not a database" in msg or "malformed" in msg


def is_locked(exc: sqlite3.OperationalError) -> bool:
    return "locked" in str(exc) or "busy" in str(exc)


def retry(fn: Callable[[], T], deadline: float) -> T:
    """`fn()`, tried again while the file is locked, until the monotonic `deadline`."""
    for i in itertools.count():
        try:
            return fn()
        except sqlite3.OperationalError as exc:
            left = deadline - time.monotonic()
            if not is_locked(exc) or left <= 0:
                raise
            time.sleep(min(0.5, 0.01 * 2 ** min(i, 6), left) * (0.5 + random.random()))
    raise AssertionError("unreachable")


class RegistryBusy(WorkFailed):
    """Another process held the registry's write lock for longer than a write waits."""

    def __init__(self, path: Path, waited_s: float) -> None:
        super().__init__(
            f"the run registry {path} stayed locked by another process for {waited_s:g} s "
            "(a vlmtui command suspended with Ctrl-Z, or an open sqlite3 shell?); try again"
        )


class RegistryUnusable(WorkFailed):
    """SQLite cannot open or write the registry for another reason than a lock (a full or
    read-only disk: WAL mode needs room for its side files even to read)."""

    def __init__(self, path: Path, exc: sqlite3.Error) -> None:
        try:
            free = f"; {shutil.disk_usage(path.parent).free / 2**20:.1f} MiB free on its disk"
        except OSError:
            free = ""
        super().__init__(f"cannot use the run registry {path}: {exc}{free}")


def read_immutable(path: Path, sql: str, args: Sequence[Any]) -> list[RunRecord]:
    """The rows of `sql` read from the database file alone, without the locks and side files
    WAL mode creates (none can be created on a full disk); what the write-ahead log holds
    uncheckpointed is not seen (the last connection to close checkpoints it)."""
    uri = f"file:{urllib.parse.quote(str(path))}?immutable=1"
    con = sqlite3.connect(uri, uri=True)
    try:
        con.row_factory = sqlite3.Row
        return [record_of(row) for row in con.execute(sql, args)]
    finally:
        con.close()
