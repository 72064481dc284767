"""The run registry: an index of run directories in SQLite (WAL mode, in the data dir).

A row is written when a run is launched: id, recipe, host, GPUs, pid, run dir, created, and
the last conclusively known state. The TUI and several CLI processes may write at once: every
write is a short `BEGIN IMMEDIATE` transaction with a busy timeout, retried on "database is
locked". What a row says about a run's state is only a cache: `runs.py` reconciles it with
the run directory on the host.
"""

from __future__ import annotations

import random
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

from vlmtui.core.errors import BadInput
from vlmtui.core.paths import data_dir
from vlmtui.core.rundir import ACTIVE_STATES

T = TypeVar("T")

_SCHEMA = """
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


@dataclass(frozen=True)
class RunRecord:
    """One registry row: what was launched, plus the last conclusively known state."""

    id: str
    recipe: str
    host: str
    gpus: str
    """`0`, `0,1` or `cpu`."""
    run_dir: str
    """Absolute run directory on `host`."""
    created: float
    state: str
    """Last known state (`launching` until the process has started)."""
    nproc: int = 1
    model: str = ""
    data: str = ""
    max_steps: int | None = None
    pid: int | None = None
    """Supervisor pid = process group id of the run on its host."""
    step: int | None = None
    loss: float | None = None
    error: str | None = None
    checked: float | None = None
    """When the state was last confirmed on the host (epoch seconds)."""
    command: str = "[]"
    """JSON list: the command line the supervisor runs."""
    job: str | None = None
    """Slurm job ids, one per stage (`123,124`), for a run submitted to a cluster."""

    @property
    def gpu_indices(self) -> tuple[int, ...]:
        """GPU indices the run holds on its host; () for the CPU and for a cluster run
        (`2gpu`, `4gpux2`: Slurm places those, vlmtui reserves nothing)."""
        parts = self.gpus.split(",")
        return tuple(int(g) for g in parts) if all(p.isdigit() for p in parts) else ()

    @property
    def jobs(self) -> list[str]:
        return self.job.split(",") if self.job else []


def _retry(fn: Callable[[], T], attempts: int = 20) -> T:
    for i in range(attempts):
        try:
            return fn()
        except sqlite3.OperationalError as exc:
            msg = str(exc)
            if ("locked" not in msg and "busy" not in msg) or i == attempts - 1:
                raise
            time.sleep(min(0.5, 0.01 * 2**i) * (0.5 + random.random()))
    raise AssertionError("unreachable")


def _add_missing_columns(con: sqlite3.Connection) -> None:
    """A registry written before the `job` column existed gets it (NULL for old rows)."""
    have = {row[1] for row in con.execute("PRAGMA table_info(runs)")}
    if "job" not in have:
        try:
            con.execute("ALTER TABLE runs ADD COLUMN job TEXT")
        except sqlite3.OperationalError as exc:
            if "duplicate column" not in str(exc):  # another process added it just now
                raise


class Registry:
    """The run registry. Cheap to create; every call opens its own connection (thread-safe)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = Path(path) if path else data_dir() / "runs.sqlite"
        self._ready = False
        self._lock = threading.Lock()

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        con.row_factory = sqlite3.Row
        con.execute("PRAGMA busy_timeout = 30000")
        if not self._ready:
            with self._lock:
                _retry(lambda: con.execute("PRAGMA journal_mode = WAL"))
                _retry(lambda: con.executescript(_SCHEMA))
                _retry(lambda: _add_missing_columns(con))
                self._ready = True
        con.execute("PRAGMA synchronous = NORMAL")
        return con

    def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run fn inside one BEGIN IMMEDIATE transaction, retrying while the file is locked."""

        def attempt() -> T:
            con = self._connect()
            try:
                con.execute("BEGIN IMMEDIATE")
                try:
                    result = fn(con)
                except BaseException:
                    con.execute("ROLLBACK")
                    raise
                con.execute("COMMIT")
                return result
            finally:
                con.close()

        return _retry(attempt)

    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[RunRecord]:
        def attempt() -> list[RunRecord]:
            con = self._connect()
            try:
                return [RunRecord(**dict(row)) for row in con.execute(sql, args)]
            finally:
                con.close()

        return _retry(attempt)

    def all(self) -> list[RunRecord]:
        """Every run, newest first."""
        return self._read("SELECT * FROM runs ORDER BY created DESC, id DESC")

    def get(self, run_id: str) -> RunRecord:
        """The run `run_id` (or a unique prefix of it); BadInput when unknown or ambiguous."""
        rows = self._read("SELECT * FROM runs WHERE id = ?", (run_id,))
        if not rows:
            rows = self._read(
                "SELECT * FROM runs WHERE substr(id, 1, ?) = ?", (len(run_id), run_id)
            )
        if len(rows) == 1:
            return rows[0]
        if not rows:
            raise BadInput(f"unknown run {run_id!r} (see `vlmtui runs`)")
        raise BadInput(f"run {run_id!r} is ambiguous: {', '.join(r.id for r in rows[:5])}")

    def add(
        self,
        record: RunRecord,
        check: Callable[[list[RunRecord]], RunRecord] | None = None,
    ) -> RunRecord:
        """Insert `record` atomically. `check` sees the host's active runs inside the same
        transaction and returns the record to insert (or raises): that is how two launches
        at once never take the same GPU."""

        def txn(con: sqlite3.Connection) -> RunRecord:
            rec = record
            if check is not None:
                marks = ",".join("?" * len(ACTIVE_STATES))
                rows = con.execute(
                    f"SELECT * FROM runs WHERE host = ? AND state IN ({marks})",
                    (record.host, *ACTIVE_STATES),
                )
                rec = check([RunRecord(**dict(r)) for r in rows])
            values = {f.name: getattr(rec, f.name) for f in fields(rec)}
            cols = ",".join(values)
            con.execute(
                f"INSERT INTO runs ({cols}) VALUES ({','.join('?' * len(values))})",
                tuple(values.values()),
            )
            return rec

        return self._write(txn)

    def update(self, run_id: str, **changes: Any) -> None:
        if not changes:
            return
        allowed = {f.name for f in fields(RunRecord)} - {"id"}
        bad = set(changes) - allowed
        if bad:
            raise ValueError(f"unknown registry fields {sorted(bad)}")
        sets = ", ".join(f"{k} = ?" for k in changes)
        self._write(
            lambda con: con.execute(
                f"UPDATE runs SET {sets} WHERE id = ?", (*changes.values(), run_id)
            )
        )

    def delete(self, run_id: str) -> None:
        self._write(lambda con: con.execute("DELETE FROM runs WHERE id = ?", (run_id,)))

    def active(self, host: str | None = None) -> list[RunRecord]:
        marks = ",".join("?" * len(ACTIVE_STATES))
        if host is None:
            return self._read(f"SELECT * FROM runs WHERE state IN ({marks})", ACTIVE_STATES)
        return self._read(
            f"SELECT * FROM runs WHERE host = ? AND state IN ({marks})", (host, *ACTIVE_STATES)
        )

    def reservations(self) -> dict[str, dict[int, str]]:
        """host -> {GPU index -> id of the active run on it} (last known states)."""
        out: dict[str, dict[int, str]] = {}
        for rec in self.active():
            for g in rec.gpu_indices:
                out.setdefault(rec.host, {})[g] = rec.id
        return out
