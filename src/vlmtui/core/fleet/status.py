"""GPU status of many hosts at once, with the registry's reservations applied.

All hosts are queried in parallel; each query is bounded by its host's timeout, and a host
that does not answer comes back `reachable=False` with the error instead of blocking.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from concurrent.futures import TimeoutError as FuturesTimeout
from dataclasses import replace

from vlmtui.core.fleet.hosts import Host, all_hosts, get_host
from vlmtui.core.fleet.registry import Registry
from vlmtui.core.fleet.snapshot import HostGpus
from vlmtui.core.fleet.watch import GpuWatch

_watch: GpuWatch | None = None
_watch_lock = threading.Lock()


def iter_hosts(hosts: Sequence[Host], timeout: float | None = None) -> Iterator[HostGpus]:
    """Every host in parallel, each result as soon as it arrives (completion order), so one
    slow host never holds back the others; each bounded by its own timeout (or `timeout`)."""
    if not hosts:
        return
    limit = timeout or max(h.config.timeout for h in hosts)
    pool = ThreadPoolExecutor(max_workers=len(hosts), thread_name_prefix="vlmtui-gpus")
    futures = {pool.submit(h.query_gpus, timeout): h for h in hosts}
    try:
        for fut in as_completed(futures, timeout=limit + 2.0):
            yield fut.result()
    except FuturesTimeout:
        for fut, host in futures.items():
            if not fut.done():
                fut.cancel()
                yield HostGpus(host.name, reachable=False, error=f"timed out after {limit:g} s")
    finally:
        pool.shutdown(wait=False)


def query_hosts(hosts: Sequence[Host], timeout: float | None = None) -> list[HostGpus]:
    """`iter_hosts`, all of them, in the order of `hosts`."""
    got = {s.name: s for s in iter_hosts(hosts, timeout)}
    return [got[h.name] for h in hosts]


def with_reservations(status: HostGpus, reserved: Mapping[int, str]) -> HostGpus:
    """Mark GPUs taken by active vlmtui runs (index -> run id) as reserved and not free."""
    if not reserved:
        return status
    gpus = tuple(
        replace(g, free=False, reserved_by=reserved[g.index]) if g.index in reserved else g
        for g in status.gpus
    )
    return replace(status, gpus=gpus)


def iter_gpu_status(
    names: Sequence[str] | None = None, timeout: float | None = None
) -> Iterator[HostGpus]:
    """The `vlmtui gpus` view, one host at a time as each answers: named hosts (default all)
    with the registry's reservations applied."""
    hosts = [get_host(n) for n in names] if names else all_hosts()
    reserved = Registry().reservations()
    for s in iter_hosts(hosts, timeout):
        yield with_reservations(s, reserved.get(s.name, {}))


def gpu_status(names: Sequence[str] | None = None, timeout: float | None = None) -> list[HostGpus]:
    """`iter_gpu_status`, all hosts, in hosts.toml order."""
    got = list(iter_gpu_status(names, timeout))
    order = names or [h.name for h in all_hosts()]
    rank = {n: i for i, n in enumerate(order)}
    return sorted(got, key=lambda s: rank.get(s.name, len(rank)))


def watched_gpu_status(interval_s: float = 2.0, first_wait_s: float = 8.0) -> list[HostGpus]:
    """The app's view of every host, from long-lived watchers (`watch.py`): the first call
    starts one per host and waits (at most `first_wait_s`) for their first snapshots; later
    calls return the newest at once, with the registry's reservations applied."""
    global _watch
    with _watch_lock:
        if _watch is None:
            _watch = GpuWatch(all_hosts(), interval_s).start()
            _watch.wait_first(first_wait_s)
        watch = _watch
    reserved = Registry().reservations()
    return [with_reservations(s, reserved.get(s.name, {})) for s in watch.latest()]


def stop_watching() -> None:
    """End the shared watchers (the app calls this when it quits)."""
    global _watch
    with _watch_lock:
        if _watch is not None:
            _watch.stop()
            _watch = None
