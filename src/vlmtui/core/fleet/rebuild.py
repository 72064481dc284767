"""Rebuilding the run registry from the run directories of every configured host.

The run directories are the truth and the registry their index, so a lost or corrupt
registry loses nothing: each host's runs dir is listed in one round trip (`hostprobe.scan`),
and every run `launch` started there (it holds launch.json, or a status.json naming the
directory's run id) becomes a row again: recipe, host, GPUs, pid and created time come from
launch.json, run.json and supervisor.json. A row that already exists is kept. The states are
then settled by the usual reconciliation (`runs.py`), as for any row.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from vlmtui.core.errors import BadInput, WorkFailed
from vlmtui.core.fleet.hosts import Host, LocalHost, all_hosts
from vlmtui.core.fleet.hostsconfig import LOCAL, HostConfig
from vlmtui.core.fleet.runrecord import RunRecord
from vlmtui.core.rundir import RunState


class RowSink(Protocol):
    """Where rebuilt rows go: the registry (which calls the rebuild, so it is not imported)."""

    def add_missing(self, records: Sequence[RunRecord]) -> int: ...


@dataclass
class RebuildResult:
    found: int = 0
    """Run directories found on the hosts that answered."""
    added: int = 0
    """Of those, rows that were missing from the registry."""
    hosts: int = 0
    unreachable: list[str] = field(default_factory=list)
    """`host: why` for each host that could not be listed (its runs are not back yet)."""

    def summary(self) -> str:
        text = (
            f"registry rebuilt: {self.found} run(s) found on {self.hosts} host(s), "
            f"{self.added} added"
        )
        if self.unreachable:
            text += f"; not listed: {'; '.join(self.unreachable)}"
        return text


def runs_dir_of(host: Host) -> str:
    """The directory `launch` puts this host's run directories in."""
    return os.path.dirname(host.launch_paths(".", ".", "x")[3])


def _recipe_from_argv(argv: Any) -> str:
    if isinstance(argv, list) and "--recipe" in argv[:-1]:
        return str(argv[argv.index("--recipe") + 1])
    return "?"


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _first(kind: type | tuple[type, ...], *values: Any) -> Any:
    """The first of `values` of type `kind` (a file edited by hand, or damaged, may hold
    anything: it must not cost the rebuild of every other run)."""
    fits = (v for v in values if isinstance(v, kind) and not isinstance(v, bool) and v != "")
    return next(fits, None)


def record_from_scan(host: str, facts: dict[str, Any]) -> RunRecord:
    """A registry row from one run directory's facts (see `hostprobe.scan`)."""
    launch, status, info = (
        _dict(facts.get("launch")),
        _dict(facts.get("status")),
        _dict(facts.get("run")),
    )
    sup, last = _dict(facts.get("supervisor")), _dict(facts.get("last"))
    number = (int, float)
    created = _first(number, launch.get("created"), info.get("started"), sup.get("started"))
    command = _first(list, launch.get("command"), sup.get("argv")) or []
    return RunRecord(
        id=facts["id"],
        recipe=_first(str, launch.get("recipe"), info.get("recipe")) or _recipe_from_argv(command),
        host=host,
        gpus=_first(str, launch.get("gpus"), info.get("gpu")) or "cpu",
        run_dir=facts["run_dir"],
        created=float(created if created is not None else facts["mtime"]),
        state=_first(str, status.get("state")) or RunState.UNKNOWN.value,
        nproc=_first(int, launch.get("nproc")) or 1,
        model=_first(str, launch.get("model"), info.get("model")) or "",
        data=_first(str, launch.get("data"), info.get("data")) or "",
        max_steps=_first(int, launch.get("max_steps"), last.get("max_steps")),
        pid=_first(int, sup.get("pid")),
        step=_first(int, last.get("step")),
        loss=_first(number, last.get("loss")),
        error=_first(str, status.get("error")),
        command=json.dumps(command),
    )


def scan_host(host: Host, timeout: float | None = None) -> list[RunRecord]:
    """Rows for every launched run directory on `host` (one round trip); HostUnreachable."""
    facts = host.call_probe("scan", {"runs_dirs": [runs_dir_of(host)]}, timeout=timeout)
    return [record_from_scan(host.name, f) for f in facts["runs"]]


def _configured_hosts() -> list[Host]:
    try:
        return all_hosts()
    except BadInput:
        # A broken hosts.toml still leaves this machine's runs to rebuild.
        return [LocalHost(HostConfig(name=LOCAL))]


def rebuild(
    registry: RowSink, hosts: Sequence[Host] | None = None, timeout: float | None = None
) -> RebuildResult:
    """Add a row for every run directory on `hosts` (default: all configured) that has none;
    each host is given `timeout` seconds (default: its own timeout)."""
    hosts = list(hosts) if hosts is not None else _configured_hosts()
    result = RebuildResult()

    def scan(host: Host) -> list[RunRecord] | str:
        try:
            return scan_host(host, timeout)
        except WorkFailed as exc:  # HostUnreachable included
            return f"{host.name}: {getattr(exc, 'why', exc)}"

    with ThreadPoolExecutor(max_workers=max(1, len(hosts))) as pool:
        answers = list(pool.map(scan, hosts))
    records: list[RunRecord] = []
    for answer in answers:
        if isinstance(answer, str):
            result.unreachable.append(answer)
        else:
            result.hosts += 1
            records.extend(answer)
    result.found = len(records)
    result.added = registry.add_missing(records)
    return result
