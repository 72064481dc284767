"""Long-lived GPU watchers: one per host, each a single stream over the shared connection.

Polling started a remote Python per host per refresh, so 4 hosts cost 2.3x one and a refresh
waited for the slowest host. A watcher instead keeps one `python -m vlmtui.core.gpus --watch`
(or an nvidia-smi loop) running on each host and keeps its latest snapshot; a refresh reads
those under a lock and never waits on a host (nvitop's snapshot-swap). A host whose stream
ends or stalls shows unreachable, and its watcher reconnects by itself with a backoff.
"""

from __future__ import annotations

import atexit
import threading
import time
from collections.abc import Callable, Sequence

from vlmtui.core.fleet.hosts import Host, HostUnreachable
from vlmtui.core.fleet.snapshot import HostGpus

MAX_BACKOFF_S = 10.0


class GpuWatch:
    """Watchers for `hosts`; `latest()` is the newest snapshot of each, in `hosts` order."""

    def __init__(
        self,
        hosts: Sequence[Host],
        interval_s: float = 1.0,
        on_update: Callable[[HostGpus], object] | None = None,
    ) -> None:
        self.hosts = list(hosts)
        self.interval_s = interval_s
        self.on_update = on_update
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._latest: dict[str, HostGpus] = {}
        self._arrived = threading.Condition(self._lock)
        self._threads: list[threading.Thread] = []
        self.snapshots = 0
        """How many snapshots arrived (all hosts): the benchmark's measure of throughput."""

    def start(self) -> GpuWatch:
        for host in self.hosts:
            t = threading.Thread(
                target=self._run, args=(host,), name=f"vlmtui-watch-{host.name}", daemon=True
            )
            t.start()
            self._threads.append(t)
        atexit.register(self.stop)
        return self

    def stop(self) -> None:
        """End every watcher and its stream (the remote side exits on its next write)."""
        self._stop.set()
        for t in self._threads:
            t.join(timeout=2.0)

    def _put(self, snap: HostGpus) -> None:
        with self._arrived:
            self._latest[snap.name] = snap
            self.snapshots += 1
            self._arrived.notify_all()
        if self.on_update is not None:
            self.on_update(snap)

    def _run(self, host: Host) -> None:
        backoff = min(1.0, self.interval_s)
        while not self._stop.is_set():
            start = time.monotonic()
            error = "the GPU stream ended"
            try:
                for snap in host.watch_gpus(self.interval_s, self._stop):
                    self._put(snap)
                    backoff = min(1.0, self.interval_s)
            except HostUnreachable as exc:
                error = exc.why
            except OSError as exc:  # ssh missing, too many processes
                error = str(exc)
            if self._stop.is_set():
                return
            waited = time.monotonic() - start
            self._put(HostGpus(host.name, reachable=False, error=f"{error}; reconnecting"))
            self._stop.wait(max(0.0, backoff - waited))
            backoff = min(MAX_BACKOFF_S, backoff * 2)

    def wait_first(self, timeout: float) -> bool:
        """Wait until every host has sent something (or `timeout`); True when all have."""
        end = time.monotonic() + timeout
        with self._arrived:
            while len(self._latest) < len(self.hosts):
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._arrived.wait(left)
        return True

    def latest(self) -> list[HostGpus]:
        """The newest snapshot per host, in `hosts` order; a host that has not answered yet
        is unreachable with "waiting for the first snapshot"."""
        with self._lock:
            got = dict(self._latest)
        waiting = "waiting for the first snapshot"
        return [
            got.get(h.name) or HostGpus(h.name, reachable=False, error=waiting) for h in self.hosts
        ]
