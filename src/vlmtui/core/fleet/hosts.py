"""The `Host` interface: run a shell script on a machine, this one or one reached over SSH.

`local` always exists; the others come from hosts.toml (see `hostsconfig.py`). They are
reached with the system OpenSSH client (see `sshcmd.py`). Callers — gpus, launch, the
registry, the TUI — only see `Host`: `run` a POSIX sh script, `run_python` a stdlib-only
source on the host's interpreter, and they never ask which kind it is. A host that cannot
be reached gives a `CommandResult` whose `transport_error` says why, within the host's
timeout; nothing raises for it.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from vlmtui.core.errors import BadInput
from vlmtui.core.fleet.gpus import HostGpus
from vlmtui.core.fleet.hostsconfig import (
    LOCAL,
    HostConfig,
    hosts_file,
    load_hosts,
    remove_host,
    save_host,
)
from vlmtui.core.fleet.shell import (
    HomePath,
    check_name,
    env_prefix,
    join,
    ssh_argv,
    ssh_base,
    ssh_control_argv,
)

__all__ = [
    "LOCAL",
    "CommandResult",
    "Host",
    "HostCheck",
    "HostConfig",
    "LocalHost",
    "SshHost",
    "all_hosts",
    "check_host",
    "get_host",
    "hosts_file",
    "load_hosts",
    "make_host",
    "remove_host",
    "save_host",
]


@dataclass(frozen=True)
class CommandResult:
    """What a script run on a host gave back."""

    returncode: int
    stdout_bytes: bytes
    stderr: str
    elapsed_s: float
    transport_error: str | None = None
    """Set when the host could not be reached or the command timed out; then the other
    fields say nothing about the script."""

    @property
    def stdout(self) -> str:
        return self.stdout_bytes.decode("utf-8", errors="replace")

    @property
    def ok(self) -> bool:
        return self.transport_error is None and self.returncode == 0


def run_process(
    argv: Sequence[str], timeout: float, input: bytes | None = None
) -> tuple[int, bytes, bytes, bool]:
    """(returncode, stdout, stderr, timed_out). On timeout the whole process group is killed,
    so a stuck child can neither outlive the call nor keep its pipes open."""
    proc = subprocess.Popen(
        list(argv),
        stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(input, timeout=timeout)
        return proc.returncode, out, err, False
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):  # ended between timeout and kill
            os.killpg(proc.pid, signal.SIGKILL)
        try:
            out, err = proc.communicate(timeout=2)
        except subprocess.TimeoutExpired:
            out, err = b"", b""
        return -9, out or b"", err or b"", True


class Host(ABC):
    """A machine vlmtui can run commands on. Use `get_host(name)`; never construct by kind."""

    def __init__(self, config: HostConfig) -> None:
        self.config = config

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def is_local(self) -> bool:
        """For display only; behaviour must not depend on it outside this module."""
        return self.config.is_local

    @abstractmethod
    def describe(self) -> str:
        """Where the host is, for people: `this machine` or `user@host:port`."""

    @abstractmethod
    def _argv(self, script: str) -> list[str]: ...

    def run(
        self, script: str, *, timeout: float | None = None, input: bytes | None = None
    ) -> CommandResult:
        """Run a POSIX sh script (the host's env exported first) and wait for it."""
        full = env_prefix(self.config.env) + script
        limit = timeout or self.config.timeout
        start = time.perf_counter()
        try:
            rc, out, err, timed_out = run_process(self._argv(full), limit, input)
        except OSError as exc:  # ssh or sh missing
            return CommandResult(-1, b"", str(exc), time.perf_counter() - start, str(exc))
        elapsed = time.perf_counter() - start
        stderr = err.decode("utf-8", errors="replace")
        error = f"timed out after {limit:g} s" if timed_out else self._transport_error(rc, stderr)
        return CommandResult(rc, out, stderr, elapsed, error)

    def _transport_error(self, returncode: int, stderr: str) -> str | None:
        return None

    def python_argv(self) -> list[str]:
        return [HomePath(self.config.python)]

    def vlmtui_argv(self, *args: str) -> list[str]:
        """The command line that runs `vlmtui ARGS` on this host."""
        return [*self.python_argv(), "-m", "vlmtui", *args]

    def run_python(
        self, source: str, args: Sequence[str] = (), *, timeout: float | None = None
    ) -> CommandResult:
        """Run stdlib-only Python `source` (fed on stdin) with the host's interpreter."""
        script = join([*self.python_argv(), "-I", "-", *args])
        return self.run(script, timeout=timeout, input=source.encode())

    def close(self) -> None:  # noqa: B027 - optional hook, a no-op for local
        """Drop the shared connection (no-op for local)."""

    def master_pid(self) -> int | None:
        """Pid of the shared SSH connection's master, if one runs (None for local)."""
        return None


class LocalHost(Host):
    """This machine: scripts run under /bin/sh."""

    def describe(self) -> str:
        return "this machine"

    def _argv(self, script: str) -> list[str]:
        return ["/bin/sh", "-c", script]


class SshHost(Host):
    """A machine reached with the system ssh client over one shared connection."""

    def describe(self) -> str:
        port = f":{self.config.port}" if self.config.port else ""
        return f"{self.config.target}{port}"

    def _base(self) -> list[str]:
        c = self.config
        return ssh_base(
            c.target or "",
            port=c.port,
            identity=c.identity,
            options=c.ssh_options,
            connect_timeout=c.connect_timeout,
        )

    def _argv(self, script: str) -> list[str]:
        return ssh_argv(self._base(), self.config.target or "", script)

    def _transport_error(self, returncode: int, stderr: str) -> str | None:
        if returncode != 255:
            return None
        lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
        return f"ssh: {lines[-1]}" if lines else "ssh exited with 255 (connection failed)"

    def _control(self, op: str) -> tuple[int, str]:
        argv = ssh_control_argv(self._base(), self.config.target or "", op)
        rc, out, err, _ = run_process(argv, timeout=10)
        return rc, (out + err).decode(errors="replace")

    def close(self) -> None:
        self._control("exit")

    def master_pid(self) -> int | None:
        rc, text = self._control("check")
        m = re.search(r"pid=(\d+)", text)
        return int(m.group(1)) if rc == 0 and m else None


def make_host(config: HostConfig) -> Host:
    return LocalHost(config) if config.is_local else SshHost(config)


def get_host(name: str) -> Host:
    """The host called `name`; BadInput when the name is invalid or not in hosts.toml."""
    check_name("host", name)
    hosts = load_hosts()
    if name not in hosts:
        raise BadInput(f"unknown host {name!r} (known: {', '.join(hosts)}; see {hosts_file()})")
    return make_host(hosts[name])


def all_hosts() -> list[Host]:
    return [make_host(c) for c in load_hosts().values()]


# --- check ------------------------------------------------------------------------------------


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
        }


def check_host(host: Host) -> HostCheck:
    from vlmtui.core.fleet.gpus import query_host

    res = host.run(join(host.vlmtui_argv("--version")) + " 2>&1")
    if res.transport_error:
        gpus = HostGpus(host.name, reachable=False, error=res.transport_error)
        return HostCheck(
            host.name, host.describe(), False, res.transport_error, None, None,
            host.config.python, gpus,
        )  # fmt: skip
    version = res.stdout.strip().removeprefix("vlmtui ") if res.returncode == 0 else None
    ping = host.run("true")
    gpus = query_host(host)
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
