"""GPU status of many hosts at once, with the registry's reservations applied.

All hosts are queried in parallel; each query is bounded by its host's timeout, and a host
that does not answer comes back `reachable=False` with the error instead of blocking.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import replace

from vlmtui.core.fleet.hosts import Host, all_hosts, get_host
from vlmtui.core.fleet.registry import Registry
from vlmtui.core.fleet.runs import reconcile_hosts
from vlmtui.core.fleet.snapshot import HostGpus


def query_hosts(hosts: Sequence[Host], timeout: float | None = None) -> list[HostGpus]:
    """Every host in parallel; each bounded by its own timeout (or `timeout`). Input order."""
    if not hosts:
        return []
    limit = timeout or max(h.config.timeout for h in hosts)
    pool = ThreadPoolExecutor(max_workers=len(hosts), thread_name_prefix="vlmtui-gpus")
    futures = [pool.submit(h.query_gpus, timeout) for h in hosts]
    wait_futures(futures, timeout=limit + 2.0)
    pool.shutdown(wait=False)
    out = []
    for host, fut in zip(hosts, futures, strict=True):
        if fut.done():
            out.append(fut.result())
        else:
            fut.cancel()
            out.append(HostGpus(host.name, reachable=False, error=f"timed out after {limit:g} s"))
    return out


def with_reservations(status: HostGpus, reserved: Mapping[int, str]) -> HostGpus:
    """Mark GPUs taken by active vlmtui runs (index -> run id) as reserved and not free."""
    if not reserved:
        return status
    gpus = tuple(
        replace(g, free=False, reserved_by=reserved[g.index]) if g.index in reserved else g
        for g in status.gpus
    )
    return replace(status, gpus=gpus)


def gpu_status(names: Sequence[str] | None = None, timeout: float | None = None) -> list[HostGpus]:
    """The `vlmtui gpus` view: named hosts (default all), queried in parallel, with the
    registry's reservations applied — read after the reserving rows of those hosts were
    settled (concurrently with the GPU query), so a run that ended no longer holds its GPU."""
    hosts = [get_host(n) for n in names] if names else all_hosts()
    registry = Registry()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="vlmtui-settle") as pool:
        settled = pool.submit(reconcile_hosts, [h.name for h in hosts], registry)
        statuses = query_hosts(hosts, timeout)
        settled.result()
    reserved = registry.reservations()
    return [with_reservations(s, reserved.get(s.name, {})) for s in statuses]
