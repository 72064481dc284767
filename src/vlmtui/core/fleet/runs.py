"""Run registry (SQLite in WAL mode, in the data dir) and state reconciliation.

A row is written when a run is launched: id, recipe, host, GPUs, pid, run dir, created. The
run's state is never trusted from the row alone: `list_runs` asks each host (in parallel,
one round trip per host) for the run's status.json and whether its process group is alive,
and derives the state:

- status.json has a final state (finished / failed / stopped) → that state;
- the process is alive → the state status.json gives (pending / loading / training / saving);
- the process is gone without a final state → `failed`, with the reason (signal, exit code,
  "CUDA out of memory" found in the log tail);
- the host cannot be reached → `unknown` (not failed: the run may be fine).

Conclusive results are cached in the row, so finished runs are not probed again. The TUI and
several CLI processes may write at once: every write is a short `BEGIN IMMEDIATE`
transaction with a busy timeout, retried on "database is locked".
"""

from __future__ import annotations

import json
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

from vlmtui.core.errors import BadInput
from vlmtui.core.fleet.onhost import hostprobe
from vlmtui.core.paths import data_dir

FINAL_STATES = ("finished", "failed", "stopped")
ACTIVE_STATES = ("launching", "pending", "loading", "training", "saving")
LAUNCH_GRACE_S = 120.0
"""A row still without a pid after this long is a launch that never completed."""

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
    command TEXT NOT NULL DEFAULT '[]'
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

    @property
    def gpu_indices(self) -> tuple[int, ...]:
        return () if self.gpus == "cpu" else tuple(int(g) for g in self.gpus.split(","))


@dataclass(frozen=True)
class RunView:
    """A run as `vlmtui runs` and the TUI show it: the record reconciled with its host."""

    id: str
    recipe: str
    host: str
    gpu: str
    state: str
    """pending, loading, training, saving, finished, failed, stopped, or unknown."""
    step: int | None
    max_steps: int | None
    loss: float | None
    run_dir: str
    error: str | None
    """Why it failed / was stopped, or why the host could not be asked (state unknown)."""
    pid: int | None
    created: float
    model: str
    data: str
    nproc: int
    reachable: bool
    """False when the host could not be asked (state is then `unknown`)."""
    ended: float | None = None
    """When a finished / failed / stopped run ended (its status.json's last update)."""

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


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


# --- reconciliation ---------------------------------------------------------------------------


def _view(rec: RunRecord, state: str, *, reachable: bool = True, **kw: Any) -> RunView:
    return RunView(
        id=rec.id,
        recipe=rec.recipe,
        host=rec.host,
        gpu=rec.gpus,
        state=state,
        step=kw.get("step", rec.step),
        max_steps=kw.get("max_steps", rec.max_steps),
        loss=kw.get("loss", rec.loss),
        run_dir=kw.get("run_dir", rec.run_dir),
        error=kw.get("error", rec.error),
        pid=rec.pid,
        created=rec.created,
        model=rec.model,
        data=rec.data,
        nproc=rec.nproc,
        reachable=reachable,
        ended=kw.get("ended"),
    )


def judge(rec: RunRecord, facts: dict[str, Any], now: float | None = None) -> RunView:
    """The state of one run from its host's probe facts (see `hostprobe.probe_run`)."""
    now = time.time() if now is None else now
    status = facts.get("status") or {}
    last = facts.get("last") or {}
    state = status.get("state")
    kw: dict[str, Any] = {"run_dir": facts.get("run_dir") or rec.run_dir}
    if last:
        kw.update(step=last.get("step"), loss=last.get("loss"))
        if last.get("max_steps"):
            kw["max_steps"] = last["max_steps"]
    if state in FINAL_STATES:
        ended = status.get("updated")
        kw["ended"] = float(ended) if isinstance(ended, (int, float)) else None
        return _view(rec, state, error=status.get("error"), **kw)
    if facts.get("alive"):
        return _view(rec, state or "pending", error=None, **kw)
    if not facts.get("found") and now - rec.created < LAUNCH_GRACE_S:
        return _view(rec, "pending", **kw)
    if not facts.get("found"):
        return _view(rec, "failed", error=f"run directory {rec.run_dir} is missing", **kw)
    if facts.get("pid") is None and now - rec.created < LAUNCH_GRACE_S:
        return _view(rec, "pending", **kw)
    reason = hostprobe.failure_reason(facts.get("exit"), facts.get("log_tail") or "")
    return _view(rec, "failed", error=reason, **kw)


def _probe_host(host_name: str, recs: list[RunRecord]) -> dict[str, RunView]:
    """One round trip to `host_name` for all of `recs`; unreachable → every run `unknown`."""
    from vlmtui.core.fleet.hosts import get_host

    try:
        host = get_host(host_name)
    except BadInput as exc:
        return {r.id: _view(r, "unknown", reachable=False, error=str(exc)) for r in recs}
    args = [{"id": r.id, "run_dir": r.run_dir, "pid": r.pid} for r in recs]
    if host.is_local:
        facts = hostprobe.probe(args)
    else:
        res = host.run_python(
            Path(hostprobe.__file__).read_text(), ["probe", json.dumps({"runs": args})]
        )
        if res.transport_error or res.returncode != 0:
            why = res.transport_error or f"probe failed: {res.stderr.strip()[-300:]}"
            return {r.id: _view(r, "unknown", reachable=False, error=why) for r in recs}
        facts = json.loads(res.stdout)
    return {r.id: judge(r, facts["runs"].get(r.id, {})) for r in recs}


def reconcile(records: Iterable[RunRecord], registry: Registry | None = None) -> list[RunView]:
    """Views of `records` in order; active ones probed on their hosts (in parallel) and the
    conclusive results written back to the registry."""
    registry = registry or Registry()
    records = list(records)
    views: dict[str, RunView] = {}
    by_host: dict[str, list[RunRecord]] = {}
    for rec in records:
        if rec.state in FINAL_STATES:
            # For a run that ended, `checked` is when it ended (see below).
            views[rec.id] = _view(rec, rec.state, ended=rec.checked)
        else:
            by_host.setdefault(rec.host, []).append(rec)
    if by_host:
        with ThreadPoolExecutor(max_workers=len(by_host)) as pool:
            for result in pool.map(lambda kv: _probe_host(*kv), by_host.items()):
                views.update(result)
    now = time.time()
    for rec in records:
        v = views[rec.id]
        if v.reachable and (v.state, v.step, v.loss, v.error, v.run_dir) != (
            rec.state, rec.step, rec.loss, rec.error, rec.run_dir,
        ):  # fmt: skip
            registry.update(
                rec.id,
                state=v.state,
                step=v.step,
                loss=v.loss,
                error=v.error,
                max_steps=v.max_steps,
                run_dir=v.run_dir,
                checked=v.ended if v.ended is not None else now,
            )
    return [views[r.id] for r in records]


def list_runs(registry: Registry | None = None) -> list[RunView]:
    """Every run, newest first, reconciled with its host (`vlmtui runs`)."""
    registry = registry or Registry()
    return reconcile(registry.all(), registry)


def get_run(run_id: str, registry: Registry | None = None) -> RunView:
    """One run (id or unique prefix), reconciled."""
    registry = registry or Registry()
    return reconcile([registry.get(run_id)], registry)[0]


def read_events_and_eval(
    host: str, run_dir: str
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """events.jsonl and eval.json of a run directory on its host, in one round trip."""
    from vlmtui.core.fleet.hosts import get_host
    from vlmtui.core.fleet.shell import quote_path
    from vlmtui.core.training.progress import EVENTS, parse_events

    mark = "@@vlmtui-eval"
    d = quote_path(run_dir)
    res = get_host(host).run(
        f"cat {d}/{EVENTS} 2>/dev/null; echo {mark}; cat {d}/eval.json 2>/dev/null"
    )
    if res.transport_error:
        raise OSError(f"host {host}: {res.transport_error}")
    events_text, _, eval_text = res.stdout.partition(mark)
    try:
        ev = json.loads(eval_text) if eval_text.strip() else None
    except ValueError:
        ev = None  # still being written
    return parse_events(events_text), ev if isinstance(ev, dict) else None
