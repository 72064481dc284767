"""`vlmtui hosts check NAME`: can we reach the host, which vlmtui it has, its GPUs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vlmtui.core.fleet.hosts import Host
from vlmtui.core.fleet.shell import join
from vlmtui.core.fleet.snapshot import HostGpus


@dataclass(frozen=True)
class HostCheck:
    """`vlmtui hosts check NAME`: can we reach it, which vlmtui it has, its GPUs."""

    name: str
    where: str
    """`this machine` or the ssh destination."""
    reachable: bool
    error: str | None
    latency_s: float | None
    """One round trip (`true`) over the shared connection, in seconds."""
    vlmtui_version: str | None
    """`vlmtui --version` there; None when the configured python lacks vlmtui."""
    python: str
    gpus: HostGpus
    details: tuple[tuple[str, str], ...] = ()
    """Kind-specific findings as (label, text): a cluster's commands, partition, runs dir,
    and the `srun` probe of vlmtui on a compute node."""

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "where": self.where,
            "reachable": self.reachable,
            "error": self.error,
            "latency_s": None if self.latency_s is None else round(self.latency_s, 4),
            "vlmtui_version": self.vlmtui_version,
            "python": self.python,
            "gpus": self.gpus.to_json(),
            "details": dict(self.details),
        }


def check_host(host: Host) -> HostCheck:
    if host.kind == "slurm":
        from vlmtui.core.fleet.slurmcheck import check_cluster

        return check_cluster(host)
    res = host.run(join(host.vlmtui_argv("--version")) + " 2>&1")
    if res.transport_error:
        gpus = HostGpus(host.name, reachable=False, error=res.transport_error)
        return HostCheck(
            host.name, host.describe(), False, res.transport_error, None, None,
            host.config.python, gpus,
        )  # fmt: skip
    version = res.stdout.strip().removeprefix("vlmtui ") if res.returncode == 0 else None
    ping = host.run("true")
    gpus = host.query_gpus()
    return HostCheck(
        name=host.name,
        where=host.describe(),
        reachable=gpus.reachable,
        error=gpus.error,
        latency_s=ping.elapsed_s,
        vlmtui_version=version,
        python=host.config.python,
        gpus=gpus,
    )
