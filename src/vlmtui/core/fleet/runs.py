"""Reconciling the registry with the hosts: the state of each run, and stopping one.

The run's state is never trusted from the registry row alone: `list_runs` asks each host (in
parallel, one round trip per host) for the run's status.json and whether its processes are
alive — provably the run's: pid, start time, boot id and run id agree (`hostprobe.identify`)
— and derives the state:

- status.json has a final state (finished / failed / stopped) → that state;
- the process is alive → the state status.json gives (pending / loading / training / saving);
- the host restarted since the run started → `failed`, "host restarted";
- the process is gone without a final state → `failed`, with the reason (signal, exit code,
  "CUDA out of memory" found in the log tail);
- a process holds the pid that cannot be proven the run's or not → `unknown`, with why;
- the host cannot be reached → `unknown` (not failed: the run may be fine).

Conclusive results are cached in the row — the pid too, once supervisor.json gives it (a
launcher killed mid-launch never wrote it) — so finished runs are not probed again. Stopped
and failed rows are, cheaply (status.json only), because `train --resume` brings them back.
The cache is written only while the registry is free: when another process holds its write
lock, the views are still the hosts' and the next reconciliation writes them.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from typing import Any

from vlmtui.core.errors import BadInput, WorkFailed
from vlmtui.core.fleet.hosts import HostUnreachable, get_host
from vlmtui.core.fleet.onhost import hostprobe
from vlmtui.core.fleet.onhost.hostprobe import (
    ALIVE,
    FOREGROUND,
    RESTARTED,
    STARTING,
    UNPROVEN,
    UNSTARTED,
)
from vlmtui.core.fleet.registry import Registry, RunRecord
from vlmtui.core.rundir import FINAL_STATES, RunState

RESUMABLE = (RunState.STOPPED.value, RunState.FAILED.value)
"""Final states that `train --resume` may lift again: their rows are re-checked."""

LAUNCH_GRACE_S = 120.0
"""A row still without a pid this long after it was created (or, resumed, last written) is a
launch that never completed."""


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
    job: str | None = None
    """Slurm job ids (one per stage) of a run on a cluster."""
    ended: float | None = None
    """When a finished / failed / stopped run ended (its status.json's last update)."""

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


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
        pid=kw.get("pid", rec.pid),
        created=rec.created,
        model=rec.model,
        data=rec.data,
        nproc=rec.nproc,
        reachable=reachable,
        job=rec.job,
        ended=kw.get("ended"),
    )


def judge(rec: RunRecord, facts: dict[str, Any], now: float | None = None) -> RunView:
    """The state of one run from its host's probe facts (see `hostprobe.probe_run`)."""
    if facts.get("unchanged"):
        return _view(rec, rec.state)
    if facts.get("error"):  # the host could not read this run's directory
        return _view(rec, "unknown", error=f"cannot probe the run: {facts['error']}")
    now = time.time() if now is None else now
    status = facts.get("status") or {}
    last = facts.get("last") or {}
    state = status.get("state")
    kw: dict[str, Any] = {"run_dir": facts.get("run_dir") or rec.run_dir}
    kw["pid"] = facts.get("pid") or rec.pid
    if last:
        kw.update(step=last.get("step"), loss=last.get("loss"))
        if last.get("max_steps"):
            kw["max_steps"] = last["max_steps"]
    decided = facts.get("decided")
    if decided:  # a scheduler host (Slurm) judged the state from its own records
        return _view(rec, decided["state"], error=decided.get("error"), **kw)
    proof = facts.get("proof") or (ALIVE if facts.get("alive") else None)
    young = now - max(rec.created, rec.checked or 0.0) < LAUNCH_GRACE_S
    if rec.state == RunState.LAUNCHING.value and young and proof not in (ALIVE, FOREGROUND):
        # Its start has not run, or its supervisor is not up: a resumed run's directory still
        # holds the last start's state and pid, which are not this start's.
        return _view(rec, "pending", run_dir=kw["run_dir"])
    if state in FINAL_STATES:
        ended = status.get("updated")
        kw["ended"] = float(ended) if isinstance(ended, (int, float)) else None
        return _view(rec, state, error=status.get("error"), **kw)
    if proof in (ALIVE, FOREGROUND):  # foreground: a `train --resume` in the run dir
        # An unreadable status.json (damaged: it is replaced whole) of a run that logs steps.
        guess = RunState.TRAINING.value if last else RunState.PENDING.value
        return _view(rec, state or guess, error=None, **kw)
    if proof == RESTARTED:
        return _view(rec, "failed", error=hostprobe.HOST_RESTARTED, **kw)
    if proof == UNPROVEN:
        return _view(rec, "unknown", error=f"cannot prove the run's process: {facts['why']}", **kw)
    if not facts.get("found"):
        if young:
            return _view(rec, "pending", **kw)
        return _view(rec, "failed", error=f"run directory {rec.run_dir} is missing", **kw)
    if proof in (STARTING, UNSTARTED) and young and state in (None, RunState.PENDING.value):
        # Still launching; not a run whose trainer already wrote its phase (its
        # supervisor.json, written before the trainer starts, is then damaged, not late).
        return _view(rec, "pending", **kw)
    if proof == STARTING:
        return _view(rec, "failed", error=f"never started ({facts['why']})", **kw)
    reason = hostprobe.failure_reason(facts.get("exit"), facts.get("log_tail") or "")
    return _view(rec, "failed", error=reason, **kw)


def _probe_host(host_name: str, recs: list[RunRecord]) -> dict[str, RunView]:
    """One round trip to `host_name` for all of `recs`; unreachable → every run `unknown`."""
    try:
        host = get_host(host_name)
    except BadInput as exc:
        return {r.id: _view(r, "unknown", reachable=False, error=str(exc)) for r in recs}
    args = [
        {
            "id": r.id,
            "run_dir": r.run_dir,
            "pid": r.pid,
            "known_state": r.state if r.state in FINAL_STATES else None,
            "job": r.job,
        }
        for r in recs
    ]
    try:
        facts = host.call_probe("probe", {"runs": args})
    except WorkFailed as exc:  # HostUnreachable included
        why = getattr(exc, "why", str(exc))
        return {r.id: _unasked(r, why) for r in recs}
    return {r.id: judge(r, facts["runs"].get(r.id, {})) for r in recs}


def _unasked(rec: RunRecord, why: str) -> RunView:
    """A run whose host could not be asked: `unknown`, unless it had already ended."""
    if rec.state in FINAL_STATES:
        return _view(rec, rec.state, reachable=False)
    return _view(rec, "unknown", reachable=False, error=why)


def reconcile(records: Iterable[RunRecord], registry: Registry | None = None) -> list[RunView]:
    """Views of `records` in order; active ones probed on their hosts (in parallel) and the
    conclusive results written back to the registry."""
    registry = registry or Registry()
    records = list(records)
    views: dict[str, RunView] = {}
    by_host: dict[str, list[RunRecord]] = {}
    for rec in records:
        if rec.state in FINAL_STATES and rec.state not in RESUMABLE:
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
        if v.reachable and (v.state, v.step, v.loss, v.error, v.run_dir, v.pid) != (
            rec.state, rec.step, rec.loss, rec.error, rec.run_dir, rec.pid,
        ):  # fmt: skip
            written = registry.note(
                rec.id,
                state=v.state,
                step=v.step,
                loss=v.loss,
                error=v.error,
                max_steps=v.max_steps,
                run_dir=v.run_dir,
                pid=v.pid,
                checked=v.ended if v.ended is not None else now,
            )
            if not written:
                break  # another process holds the registry: the next reconciliation writes
    return [views[r.id] for r in records]


def list_runs(registry: Registry | None = None) -> list[RunView]:
    """Every run, newest first, reconciled with its host (`vlmtui runs`)."""
    registry = registry or Registry()
    return reconcile(registry.all(), registry)


def reconcile_hosts(hosts: Iterable[str], registry: Registry | None = None) -> None:
    """Settle the rows that hold GPUs on `hosts` (one round trip per host with any), so that
    reservations are read from current states (`gpus`, `launch --gpu auto`)."""
    registry = registry or Registry()
    wanted = set(hosts)
    reconcile([r for r in registry.active() if r.host in wanted], registry)


def get_run(run_id: str, registry: Registry | None = None) -> RunView:
    """One run (id or unique prefix), reconciled."""
    registry = registry or Registry()
    return reconcile([registry.get(run_id)], registry)[0]


@dataclass(frozen=True)
class StopResult:
    run_id: str
    was_running: bool
    """False when the run had already ended (its state is then unchanged)."""
    killed: bool
    """True when the grace period ran out and the group got SIGKILL."""
    state: str
    """The run's state afterwards (`stopped`, or the final state it already had)."""
    error: str | None = None
    """Why it ended, when it had already ended (e.g. "killed by SIGKILL")."""


def stop_run(run_id: str, grace_s: float = 30.0, registry: Registry | None = None) -> StopResult:
    """SIGTERM to the run's process group; SIGKILL after `grace_s`; the run ends `stopped`.
    Nothing is signalled unless the host proves the processes are the run's."""
    registry = registry or Registry()
    rec = registry.get(run_id)
    host = get_host(rec.host)
    payload: dict[str, Any] = {
        "run_dir": rec.run_dir, "id": rec.id, "pid": rec.pid, "grace_s": grace_s,
    }  # fmt: skip
    if rec.job:
        payload["job"] = rec.job  # a Slurm run: its host cancels the jobs
    try:
        result = host.call_probe("stop", payload, timeout=grace_s + host.config.timeout + 15)
    except HostUnreachable as exc:
        # The link may have dropped after the request got there: the stop then runs on (it
        # does not need the link), so "cannot stop" would be a claim it cannot make.
        raise WorkFailed(
            f"no answer from {host.name} to the stop of {rec.id} ({exc.why}); if the request "
            "got there, the run is being stopped: `vlmtui runs` shows its state"
        ) from None
    proof = result.get("proof")
    if proof == FOREGROUND:
        raise WorkFailed(f"run {rec.id}: nothing signalled on {host.name}: {result.get('why')}")
    if proof in (UNPROVEN, STARTING) and not result.get("was_running"):
        raise WorkFailed(
            f"run {rec.id}: nothing signalled on {host.name}: {result.get('why')}; "
            "its process cannot be proven to be this run's"
        )
    if not result.get("was_running"):
        view = reconcile([registry.get(rec.id)], registry)[0]
        if proof == UNSTARTED and view.state not in FINAL_STATES:
            raise WorkFailed(f"run {rec.id} has no process yet (still launching); try again")
        return StopResult(rec.id, False, False, view.state, view.error)
    status = result.get("status") or {}
    state = status.get("state") or rec.state
    changes: dict[str, Any] = {"state": state, "error": status.get("error"), "checked": time.time()}
    if result.get("last"):
        changes.update(step=result["last"].get("step"), loss=result["last"].get("loss"))
    if state in FINAL_STATES:
        registry.note(rec.id, **changes)  # status.json says it too, if the registry is busy
    return StopResult(rec.id, True, bool(result.get("killed")), state)
