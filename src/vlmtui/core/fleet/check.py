"""`vlmtui hosts check NAME`: can we reach the host, which vlmtui it has, its GPUs."""

from __future__ import annotations

from vlmtui.core.fleet.hosts import Host
from vlmtui.core.fleet.shell import join
from vlmtui.core.fleet.snapshot import HostCheck, HostGpus


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
