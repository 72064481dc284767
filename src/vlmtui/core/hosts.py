"""Host inventory (hosts.toml) and the `Host` interface: run a shell script on a machine.

`local` always exists. Other hosts are reached with the system OpenSSH client (see
`sshcmd.py`). Callers — gpus, launch, the registry, the TUI — only see `Host`: `run` a POSIX
sh script, `run_python` a stdlib-only source on the host's interpreter, and they never ask
which kind it is. A host that cannot be reached gives a `CommandResult` whose
`transport_error` says why, within the host's timeout; nothing raises for it.

hosts.toml (in `config_dir()`):

    [free]                      # the free-GPU rule for every host (optional)
    max_mem_used_mib = 1024
    max_util_pct = 10
    allow_processes = false

    [hosts.gpubox]
    target = "gpubox"           # an ~/.ssh/config alias, host or user@host
    port = 22                   # optional
    workdir = "~/vlmtui"        # where runs start; relative data paths resolve here
    python = "~/venvs/vlmtui/bin/python"   # interpreter of the env with vlmtui installed
    identity = "~/.ssh/id_ed25519"         # optional
    env = { HF_HOME = "/data/hf" }         # exported before every command (optional)
    ssh_options = { StrictHostKeyChecking = "accept-new" }  # extra `ssh -o` (optional)
    connect_timeout = 5         # seconds (optional)
    timeout = 20                # seconds a whole command may take (optional)
    runs_dir = "/data/runs"     # default: WORKDIR/runs (local: the data dir's runs/)
    free = { max_mem_used_mib = 2048 }     # per-host override of [free] (optional)

`[hosts.local]` may set workdir, python, env, runs_dir, timeout and free for this machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import tomllib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from vlmtui.core.errors import BadInput
from vlmtui.core.gpus import FreeRule, HostGpus
from vlmtui.core.paths import config_dir
from vlmtui.core.sshcmd import (
    ENV_NAME_RE,
    HomePath,
    check_name,
    check_path,
    check_target,
    env_prefix,
    join,
    ssh_argv,
    ssh_base,
    ssh_control_argv,
)

LOCAL = "local"
_HOST_KEYS = {
    "target",
    "port",
    "workdir",
    "python",
    "identity",
    "env",
    "ssh_options",
    "connect_timeout",
    "timeout",
    "runs_dir",
    "free",
}
_LOCAL_KEYS = _HOST_KEYS - {"target", "port", "identity", "ssh_options", "connect_timeout"}


@dataclass(frozen=True)
class HostConfig:
    """One host of hosts.toml (or the built-in `local`)."""

    name: str
    target: str | None = None
    """ssh destination (alias, host, user@host); None for `local`."""
    port: int | None = None
    workdir: str | None = None
    """Working directory of runs (`~` allowed). None: the ssh login dir / the launcher's cwd."""
    python: str = "python3"
    """Interpreter that has vlmtui installed; vlmtui runs as `PYTHON -m vlmtui`."""
    identity: str | None = None
    env: tuple[tuple[str, str], ...] = ()
    """Environment variables exported before every command on the host."""
    ssh_options: tuple[tuple[str, str], ...] = ()
    connect_timeout: float = 5.0
    timeout: float = 20.0
    """Upper bound of one command (query, launch, probe) on this host, in seconds."""
    runs_dir: str | None = None
    """Parent folder of run directories; None: WORKDIR/runs (local: `paths.runs_dir()`)."""
    free_rule: FreeRule = field(default_factory=FreeRule)

    @property
    def is_local(self) -> bool:
        return self.target is None


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


# --- hosts.toml -------------------------------------------------------------------------------


def hosts_file() -> Path:
    return config_dir() / "hosts.toml"


def _free_rule(where: str, data: Any, base: FreeRule) -> FreeRule:
    if not isinstance(data, dict):
        raise BadInput(f"{where}: expected a table")
    known = {f.name for f in fields(FreeRule)}
    for key, value in data.items():
        if key not in known:
            raise BadInput(f"{where}: unknown key {key!r} (known: {', '.join(sorted(known))})")
        if key == "allow_processes":
            ok = isinstance(value, bool)
        else:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0
        if not ok:
            raise BadInput(f"{where}.{key}: unexpected value {value!r}")
    return replace(base, **data)


def _str_table(where: str, value: Any) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise BadInput(f"{where}: expected a table of strings")
    return tuple(value.items())


def _host_from(path: Path, name: str, data: Any, rule: FreeRule) -> HostConfig:
    where = f"{path}: hosts.{name}"
    try:
        check_name("host", name)
    except BadInput as exc:
        raise BadInput(f"{path}: {exc}") from None
    if not isinstance(data, dict):
        raise BadInput(f"{where}: expected a table")
    allowed = _LOCAL_KEYS if name == LOCAL else _HOST_KEYS
    for key in data:
        if key not in allowed:
            raise BadInput(f"{where}: unknown key {key!r} (known: {', '.join(sorted(allowed))})")
    if name != LOCAL and "target" not in data:
        raise BadInput(f"{where}: missing 'target' (an ssh alias, host or user@host)")
    kw: dict[str, Any] = {"name": name}
    for key in ("target", "workdir", "python", "identity", "runs_dir"):
        if key in data:
            if not isinstance(data[key], str):
                raise BadInput(f"{where}.{key}: expected a string")
            value = data[key]
            try:
                kw[key] = check_target(value) if key == "target" else check_path(key, value)
            except BadInput as exc:
                raise BadInput(f"{where}.{key}: {exc}") from None
    for key in ("port", "connect_timeout", "timeout"):
        if key in data:
            value = data[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise BadInput(f"{where}.{key}: expected a positive number")
            kw[key] = int(value) if key == "port" else float(value)
    for key in ("env", "ssh_options"):
        if key in data:
            kw[key] = _str_table(f"{where}.{key}", data[key])
    for key, _ in kw.get("env", ()):
        if not ENV_NAME_RE.match(key):
            raise BadInput(f"{where}.env: invalid variable name {key!r}")
    kw["free_rule"] = _free_rule(f"{where}.free", data["free"], rule) if "free" in data else rule
    if name == LOCAL:
        kw.setdefault("python", sys.executable)
    return HostConfig(**kw)


def load_hosts(path: Path | None = None) -> dict[str, HostConfig]:
    """Every host by name, `local` first; a bad file is a BadInput naming file, host, field."""
    path = path or hosts_file()
    data: dict[str, Any] = {}
    if path.exists():
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise BadInput(f"{path}: cannot read hosts file ({exc})") from None
    unknown = set(data) - {"hosts", "free"}
    if unknown:
        raise BadInput(f"{path}: unknown top-level key {sorted(unknown)[0]!r} (use [hosts.NAME])")
    rule = _free_rule(f"{path}: free", data["free"], FreeRule()) if "free" in data else FreeRule()
    tables = data.get("hosts", {})
    if not isinstance(tables, dict):
        raise BadInput(f"{path}: 'hosts' must be a table of [hosts.NAME] tables")
    out = {LOCAL: _host_from(path, LOCAL, tables.get(LOCAL, {}), rule)}
    for name, table in tables.items():
        if name != LOCAL:
            out[name] = _host_from(path, name, table, rule)
    return out


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


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, dict):
        items = ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items())
        return "{ " + items + " }"
    raise TypeError(f"cannot write {value!r} to TOML")


def _toml_key(key: str) -> str:
    return key if re.match(r"^[A-Za-z0-9_-]+$", key) else json.dumps(key)


def _write_hosts(data: dict[str, Any], path: Path) -> None:
    lines = []
    if data.get("free"):
        lines += ["[free]", *(f"{k} = {_toml_value(v)}" for k, v in data["free"].items()), ""]
    for name, table in data.get("hosts", {}).items():
        lines.append(f"[hosts.{_toml_key(name)}]")
        lines += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in table.items()]
        lines.append("")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text("\n".join(lines), encoding="utf-8")
    os.replace(tmp, path)


def save_host(name: str, **settings: Any) -> HostConfig:
    """Add or replace `[hosts.NAME]` (keys as in hosts.toml); validated before writing."""
    path = hosts_file()
    data = tomllib.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    table = {k: v for k, v in settings.items() if v is not None}
    data.setdefault("hosts", {})[name] = table
    rule = _free_rule(f"{path}: free", data.get("free", {}), FreeRule())
    config = _host_from(path, name, table, rule)
    _write_hosts(data, path)
    return config


def remove_host(name: str) -> None:
    path = hosts_file()
    data = tomllib.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    if name == LOCAL or name not in data.get("hosts", {}):
        raise BadInput(f"no host {name!r} in {path}")
    del data["hosts"][name]
    _write_hosts(data, path)


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
    from vlmtui.core.gpus import query_host

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
