"""The run registry: an index of run directories in SQLite (WAL mode, in the data dir).

A row is written when a run is launched: id, recipe, host, GPUs, pid, run dir, created, and
the last conclusively known state. The TUI and several CLI processes may write at once: every
write is a short `BEGIN IMMEDIATE` transaction with a busy timeout, retried on "database is
locked" until a deadline: a process that holds the lock for good (suspended with Ctrl-Z, an
open sqlite3 shell) makes a write fail in one line (`RegistryBusy`), never hang. What a row
says about a run's state is only a cache: `runs.py` reconciles it with the run directory on
the host, and writes it back with `note`, which gives up after a short wait (reads never
wait in WAL mode), so `runs` still answers with the truth. On a full disk a write fails in
one line (`RegistryUnusable`) and reads fall back to the database file alone.

The run directories are the truth and this file only their index: a corrupt file is moved
aside (`runs.sqlite.corrupt-<time>`, one warning line) and a missing or empty (0-byte) one
recreated, and both are rebuilt from the run directories of every configured host
(`rebuild.py`). A file deleted while a process uses the registry is rebuilt too: sqlite is
never let to create an empty file in its place.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import sqlite3
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from vlmtui.core.errors import BadInput
from vlmtui.core.fleet.registrydb import (
    SCHEMA,
    RegistryBusy,
    RegistryUnusable,
    add_missing_columns,
    is_corrupt,
    is_locked,
    read_immutable,
    record_of,
    retry,
)
from vlmtui.core.fleet.runrecord import RunRecord
from vlmtui.core.paths import data_dir
from vlmtui.core.rundir import ACTIVE_STATES, RunState

REBUILD_TIMEOUT_S = 6.0
"""How long a rebuild that a command did on its own waits for each host (`runs --rebuild`
waits each host's own timeout)."""

WRITE_WAIT_S = 20.0
"""How long a write waits for another process's transaction before it gives up."""
NOTE_WAIT_S = 2.0
"""How long writing back a cached state (`note`) waits: the run directory keeps the truth."""

if TYPE_CHECKING:
    from vlmtui.core.fleet.rebuild import RebuildResult

T = TypeVar("T")

RESERVING_STATES: tuple[str, ...] = (*ACTIVE_STATES, RunState.UNKNOWN.value)
"""Rows that hold their GPUs: the active ones, and `unknown` (a launch whose reply was lost
may be running)."""


class Registry:
    """The run registry. Cheap to create; every call opens its own connection (thread-safe)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = Path(path) if path else data_dir() / "runs.sqlite"
        self._ready = False
        self._lock = threading.Lock()

    def _connect(self, deadline: float) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.rebuild_when_missing and not self._has_content():
            self._create_rebuilt()
        # mode=rw: a file deleted from under a running process is not silently recreated
        # empty (which no later process would rebuild); the check above rebuilds it.
        mode = "rw" if self.rebuild_when_missing else "rwc"
        busy_s = max(0.05, deadline - time.monotonic())
        uri = f"file:{urllib.parse.quote(str(self.path))}?mode={mode}"
        try:
            con = sqlite3.connect(uri, uri=True, timeout=busy_s, isolation_level=None)
        except sqlite3.OperationalError:
            if self._has_content():
                raise
            self._create_rebuilt()  # deleted between the check and the open
            con = sqlite3.connect(uri, uri=True, timeout=busy_s, isolation_level=None)
        con.row_factory = sqlite3.Row
        con.execute(f"PRAGMA busy_timeout = {int(busy_s * 1000)}")
        if not self._ready:
            with self._lock:
                retry(lambda: con.execute("PRAGMA journal_mode = WAL"), deadline)
                retry(lambda: con.executescript(SCHEMA), deadline)
                retry(lambda: add_missing_columns(con), deadline)
                self._ready = True
        con.execute("PRAGMA synchronous = NORMAL")
        return con

    def _has_content(self) -> bool:
        """False when the file is missing, or empty (0 bytes: zeroed by a crash, or made by a
        process that found it deleted) with no write-ahead log holding its pages."""
        try:
            if self.path.stat().st_size > 0:
                return True
            return Path(f"{self.path}-wal").stat().st_size > 0
        except FileNotFoundError:
            return False

    rebuild_when_missing = True
    """A missing file is rebuilt from the hosts' run directories (`rebuild.py`) on first use."""

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        """Across processes: one at a time replaces the file (the others then find it)."""
        with open(self.path.with_name(self.path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _build_beside(self) -> tuple[Path, RebuildResult]:
        """A registry rebuilt from the hosts' run directories, in a scratch file beside this
        one: it takes the registry's place complete, in one rename, so no reader ever sees
        it empty or half-filled."""
        from vlmtui.core.fleet.rebuild import rebuild

        scratch = self.path.with_name(f".{self.path.name}.{os.getpid()}.rebuild")
        for suffix in ("", "-wal", "-shm"):
            Path(f"{scratch}{suffix}").unlink(missing_ok=True)
        building = Registry(scratch)
        building.rebuild_when_missing = False
        building._connect(time.monotonic() + WRITE_WAIT_S).close()
        return scratch, rebuild(building, timeout=REBUILD_TIMEOUT_S)

    def _create_rebuilt(self) -> None:
        with self._exclusive():
            if self._has_content():
                return
            what = "empty" if self.path.exists() else "missing"
            scratch, result = self._build_beside()
            for suffix in ("-wal", "-shm"):  # an empty file's: nothing of the new one's
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)
            os.replace(scratch, self.path)
            self._ready = False
        if result.added or result.unreachable:
            print(f"vlmtui: the run registry was {what}; {result.summary()}", file=sys.stderr)

    def _guarded(self, fn: Callable[[float], T], wait_s: float | None = None) -> T:
        """`fn(deadline)`, and once more after a corrupt file was moved aside and rebuilt;
        RegistryBusy when the file stayed locked for `wait_s` (WRITE_WAIT_S) seconds."""
        wait_s = WRITE_WAIT_S if wait_s is None else wait_s
        deadline = time.monotonic() + wait_s
        try:
            try:
                return retry(lambda: fn(deadline), deadline)
            except sqlite3.DatabaseError as exc:
                if not is_corrupt(exc):
                    raise
                self._move_aside(str(exc))
            return retry(lambda: fn(deadline), deadline)
        except sqlite3.OperationalError as exc:
            if is_locked(exc):
                raise RegistryBusy(self.path, wait_s) from None
            raise RegistryUnusable(self.path, exc) from None

    def _move_aside(self, why: str) -> None:
        """Keep the corrupt file as runs.sqlite.corrupt-<time> and put a rebuilt registry in
        its place (of several processes that find it corrupt, one does, once)."""
        with self._exclusive():
            if not self._still_corrupt():
                return
            scratch, result = self._build_beside()
            aside = self._aside_name()
            try:
                os.link(self.path, aside)
            except OSError:  # no hard links on this file system
                shutil.copyfile(self.path, aside)
            for suffix in ("-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.replace(f"{self.path}{suffix}", f"{aside}{suffix}")
            os.replace(scratch, self.path)
            self._ready = False
        print(
            f"vlmtui: warning: the run registry {self.path} was corrupt ({why}); "
            f"moved it to {aside.name}; {result.summary()}",
            file=sys.stderr,
        )

    def _aside_name(self) -> Path:
        stem = f"{self.path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}"
        aside, n = self.path.with_name(stem), 1
        while aside.exists():
            n += 1
            aside = self.path.with_name(f"{stem}-{n}")
        return aside

    def _still_corrupt(self) -> bool:
        if not self.path.exists():
            return False
        try:
            con = sqlite3.connect(self.path, timeout=30.0)
            try:
                con.execute("SELECT count(*) FROM sqlite_master").fetchall()
                con.execute("PRAGMA quick_check").fetchall()
            finally:
                con.close()
        except sqlite3.DatabaseError as exc:
            return is_corrupt(exc)
        return False

    def _write(self, fn: Callable[[sqlite3.Connection], T], wait_s: float | None = None) -> T:
        """Run fn inside one BEGIN IMMEDIATE transaction, retrying while the file is locked."""

        def attempt(deadline: float) -> T:
            con = self._connect(deadline)
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

        return self._guarded(attempt, wait_s)

    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[RunRecord]:
        def attempt(deadline: float) -> list[RunRecord]:
            con = self._connect(deadline)
            try:
                return [record_of(row) for row in con.execute(sql, args)]
            finally:
                con.close()

        try:
            return self._guarded(attempt)
        except RegistryUnusable:
            try:  # a full disk: the file can still be read, without WAL's side files
                return read_immutable(self.path, sql, args)
            except sqlite3.Error:
                pass
            raise

    def all(self) -> list[RunRecord]:
        """Every run, newest first."""
        return self._read("SELECT * FROM runs ORDER BY created DESC, id DESC")

    def get(self, run_id: str) -> RunRecord:
        """The run `run_id` (or a unique prefix of it); BadInput when unknown or ambiguous."""
        if not run_id.strip():  # every id starts with the empty prefix
            raise BadInput("RUN is empty: give a run id (see `vlmtui runs`)")
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
        *,
        replace: bool = False,
        if_state: str | None = None,
    ) -> RunRecord:
        """Insert `record` atomically. `check` sees the host's active runs inside the same
        transaction and returns the record to insert (or raises): that is how two launches
        at once never take the same GPU. `replace` overwrites the row with the same id (a
        resumed run), only while its state is still `if_state` when that is given: of two
        resumes at once, one starts the run."""

        def txn(con: sqlite3.Connection) -> RunRecord:
            rec = record
            if if_state is not None:
                row = con.execute("SELECT state FROM runs WHERE id = ?", (record.id,)).fetchone()
                if row is None or row[0] != if_state:
                    now = row[0] if row else "gone from the registry"
                    raise BadInput(
                        f"run {record.id} changed while it was being resumed: it is {now} "
                        "now (another `launch --resume` of it?)"
                    )
            if check is not None:
                marks = ",".join("?" * len(RESERVING_STATES))
                rows = con.execute(
                    f"SELECT * FROM runs WHERE host = ? AND id != ? AND state IN ({marks})",
                    (record.host, record.id, *RESERVING_STATES),
                )
                rec = check([record_of(r) for r in rows])
            values = {f.name: getattr(rec, f.name) for f in fields(rec)}
            cols = ",".join(values)
            verb = "INSERT OR REPLACE" if replace else "INSERT"
            con.execute(
                f"{verb} INTO runs ({cols}) VALUES ({','.join('?' * len(values))})",
                tuple(values.values()),
            )
            return rec

        return self._write(txn)

    def update(self, run_id: str, **changes: Any) -> None:
        self._update(run_id, None, changes)

    def note(self, run_id: str, *, patient: bool = False, **changes: Any) -> bool:
        """`update` for what the run directory records too (a state, a pid): False, written
        nothing, when another process holds the registry for NOTE_WAIT_S seconds
        (WRITE_WAIT_S if `patient`), or cannot write it (a full disk); the next reconciliation
        writes it."""
        try:
            self._update(run_id, WRITE_WAIT_S if patient else NOTE_WAIT_S, changes)
        except (RegistryBusy, RegistryUnusable):
            return False
        return True

    def _update(self, run_id: str, wait_s: float | None, changes: dict[str, Any]) -> None:
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
            ),
            wait_s,
        )

    def delete(self, run_id: str) -> None:
        """Only for a launch the host refused outright: the run certainly did not start."""
        self._write(lambda con: con.execute("DELETE FROM runs WHERE id = ?", (run_id,)))

    def add_missing(self, records: Sequence[RunRecord]) -> int:
        """Insert the records whose id is not in the registry yet; how many were new."""

        def txn(con: sqlite3.Connection) -> int:
            added = 0
            for rec in records:
                values = {f.name: getattr(rec, f.name) for f in fields(rec)}
                cur = con.execute(
                    f"INSERT OR IGNORE INTO runs ({','.join(values)}) "
                    f"VALUES ({','.join('?' * len(values))})",
                    tuple(values.values()),
                )
                added += cur.rowcount
            return added

        return self._write(txn) if records else 0

    def active(self, host: str | None = None) -> list[RunRecord]:
        """Rows that hold their GPUs (`RESERVING_STATES`), of one host or all."""
        marks = ",".join("?" * len(RESERVING_STATES))
        if host is None:
            return self._read(f"SELECT * FROM runs WHERE state IN ({marks})", RESERVING_STATES)
        return self._read(
            f"SELECT * FROM runs WHERE host = ? AND state IN ({marks})", (host, *RESERVING_STATES)
        )

    def reservations(self) -> dict[str, dict[int, str]]:
        """host -> {GPU index -> id of the active run on it} (last known states)."""
        out: dict[str, dict[int, str]] = {}
        for rec in self.active():
            for g in rec.gpu_indices:
                out.setdefault(rec.host, {})[g] = rec.id
        return out
