"""The `Host` interface: run a shell script on a machine, this one or one reached over SSH.

`local` always exists; the others come from hosts.toml (see `hostsconfig.py`). They are
reached with the system OpenSSH client (see `shell.py`). Callers — launch, the registry, the
TUI — only see `Host`: `run` a POSIX sh script, `call_probe` an operation of
`onhost/hostprobe.py`, `read_bytes`/`size` of a file, `query_gpus`, `launch_paths`. Only this
module and `host.py` (the classes) know whether a host is this machine: the local kind
answers in-process, the SSH kind ships the same stdlib-only code over the shared connection.
A host that cannot be reached
gives a `CommandResult` whose `transport_error` says why (or `HostUnreachable` from the
higher-level calls), within the host's timeout.
"""

from __future__ import annotations

from vlmtui.core.errors import BadInput
from vlmtui.core.fleet.host import (
    REMOTE_RUNS_DIR,
    CommandResult,
    Host,
    HostUnreachable,
    LocalHost,
    SshHost,
)
from vlmtui.core.fleet.hostsconfig import (
    LOCAL,
    HostConfig,
    hosts_file,
    load_hosts,
    remove_host,
    save_host,
    usable_hosts,
)
from vlmtui.core.fleet.shell import check_name

__all__ = [
    "LOCAL",
    "REMOTE_RUNS_DIR",
    "CommandResult",
    "Host",
    "HostConfig",
    "HostUnreachable",
    "LocalHost",
    "SshHost",
    "all_hosts",
    "get_host",
    "hosts_file",
    "hosts_problem",
    "load_hosts",
    "make_host",
    "remove_host",
    "save_host",
]


def make_host(config: HostConfig) -> Host:
    if config.slurm is not None:
        from vlmtui.core.fleet.slurmhost import SlurmHost  # it builds on this module

        return SlurmHost(config)
    return LocalHost(config) if config.is_local else SshHost(config)


def get_host(name: str) -> Host:
    """The host called `name`; BadInput when the name is invalid or not in hosts.toml (or
    hosts.toml is broken and the host is not `local`, which always works)."""
    check_name("host", name)
    hosts, problem = usable_hosts()
    if name not in hosts:
        if problem:
            raise BadInput(problem)
        raise BadInput(f"unknown host {name!r} (known: {', '.join(hosts)}; see {hosts_file()})")
    return make_host(hosts[name])


def all_hosts() -> list[Host]:
    """Every usable host: only `local` while hosts.toml is broken (see `hosts_problem`)."""
    return [make_host(c) for c in usable_hosts()[0].values()]


def hosts_problem() -> str | None:
    """What is wrong with hosts.toml, for front ends to show once; None when it is fine."""
    return usable_hosts()[1]
