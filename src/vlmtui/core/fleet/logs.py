"""A run's output and progress files, read from its host: the log tail and events.

`LogTail` reads only the bytes added since the last read (remote: `tail -c +OFFSET` over the
shared connection), so following eight logs costs eight small reads per refresh.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from vlmtui.core.fleet.hosts import get_host
from vlmtui.core.fleet.registry import Registry, RunRecord
from vlmtui.core.fleet.runs import reconcile
from vlmtui.core.fleet.shell import quote_path
from vlmtui.core.rundir import EVAL_JSON, EVENTS, FINAL_STATES, OUTPUT_LOG, parse_events


class LogTail:
    """Reads a run's output.log incrementally: each `read` returns only the bytes added since
    the previous one (remote: `tail -c +OFFSET` over the shared connection)."""

    def __init__(self, record: RunRecord, offset: int = 0) -> None:
        self.record = record
        self.offset = offset
        self._host = get_host(record.host)
        self._path = f"{record.run_dir}/{OUTPUT_LOG}"
        self._drop_partial_line = False

    def skip_to_tail(self, keep_bytes: int = 256 << 10) -> None:
        """Start the next read `keep_bytes` before the end, at a line start: a view that holds
        a few thousand lines need not fetch a long backlog (one round trip per MiB remotely)."""
        size = self._host.size(self._path)
        if size is not None and size > keep_bytes:
            self.offset = size - keep_bytes
            self._drop_partial_line = True

    def read(self, max_bytes: int = 1 << 20) -> bytes:
        chunk = self._read(max_bytes)
        if self._drop_partial_line and chunk:
            cut = chunk.find(b"\n")
            if cut >= 0:
                self._drop_partial_line = False
                return chunk[cut + 1 :]
            return b""
        return chunk

    def _read(self, max_bytes: int) -> bytes:
        chunk = self._host.read_bytes(self._path, self.offset, max_bytes)
        if not chunk and self.offset == 0 and self.record.jobs:
            # A cluster job whose trainer never started (its batch script creates output.log
            # first thing): Slurm's own output file is all there is.
            fallback = f"{self.record.run_dir}/slurm-{self.record.jobs[-1]}.out"
            if self._host.size(self._path) is None and self._host.size(fallback) is not None:
                self._path = fallback
                chunk = self._host.read_bytes(self._path, self.offset, max_bytes)
        self.offset += len(chunk)
        return chunk


def follow_log(
    run_id: str,
    write: Callable[[bytes], None],
    *,
    follow: bool = False,
    interval_s: float = 0.5,
    registry: Registry | None = None,
) -> str:
    """Copy the run's log to `write`; with `follow`, keep going until the run has ended and
    its log is drained. Returns the run's state at the end."""
    registry = registry or Registry()
    rec = registry.get(run_id)
    tail = LogTail(rec)
    state = reconcile([rec], registry)[0].state
    last_check = time.monotonic()
    while True:
        chunk = tail.read()
        if chunk:
            write(chunk)
            continue
        if not follow or state in FINAL_STATES:
            return state
        time.sleep(interval_s)
        if time.monotonic() - last_check > 2.0:
            state = reconcile([registry.get(rec.id)], registry)[0].state
            last_check = time.monotonic()


def read_events_and_eval(
    host: str, run_dir: str
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """events.jsonl and eval.json of a run directory on its host, in one round trip."""
    mark = "@@vlmtui-eval"
    d = quote_path(run_dir)
    res = get_host(host).run(
        f"cat {d}/{EVENTS} 2>/dev/null; echo {mark}; cat {d}/{EVAL_JSON} 2>/dev/null"
    )
    if res.transport_error:
        raise OSError(f"host {host}: {res.transport_error}")
    events_text, _, eval_text = res.stdout.partition(mark)
    try:
        ev = json.loads(eval_text) if eval_text.strip() else None
    except ValueError:
        ev = None  # still being written
    return parse_events(events_text), ev if isinstance(ev, dict) else None
