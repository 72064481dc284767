"""The host inventory: hosts.toml in the user's config dir, read, validated and written.

hosts.toml (in `config_dir()`):

    [free]                      # the free-GPU rule for every host (optional)
    max_mem_used_mib = 1024
    max_util_pct = 10
    allow_processes = false
    unknown_memory_is_free = false   # a GPU that reports no memory use ([N/A]) is busy

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
    runs_dir = "/data/runs"     # default: WORKDIR/runs, or ~/.local/share/vlmtui/runs
                                # without a workdir (local: the data dir's runs/)
    free = { max_mem_used_mib = 2048 }     # per-host override of [free] (optional)

`[hosts.local]` may set workdir, python, env, runs_dir, timeout and free for this machine.

A Slurm cluster is a host with `kind = "slurm"` (see `slurm.py`): `target` is its login node
(leave it out when this machine is the login node), `runs_dir` must be on storage the
compute nodes share, and these optional keys shape the jobs: partition, account, qos, time,
gres, constraint, cpus_per_gpu, mem_per_gpu, sbatch_extra (a list of `--option=value`).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from vlmtui.core.errors import BadInput
from vlmtui.core.fleet.shell import ENV_NAME_RE, check_name, check_path, check_target
from vlmtui.core.fleet.slurm import SlurmSettings
from vlmtui.core.fleet.snapshot import FreeRule
from vlmtui.core.paths import config_dir
from vlmtui.core.tomlio import check_keys, read_toml, toml_key, toml_value, write_text_atomic

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
_SLURM_STR_KEYS = ("partition", "account", "qos", "time", "gres", "constraint", "mem_per_gpu")
_SLURM_KEYS = {*_SLURM_STR_KEYS, "cpus_per_gpu", "sbatch_extra", "term_before_s"}
KINDS = ("ssh", "slurm")


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
    slurm: SlurmSettings | None = None
    """Set for a `kind = "slurm"` host: runs are submitted as jobs, not started."""

    @property
    def is_local(self) -> bool:
        """Commands run on this machine (for a cluster: this machine is its login node)."""
        return self.target is None


def hosts_file() -> Path:
    return config_dir() / "hosts.toml"


def _free_rule(where: str, data: Any, base: FreeRule) -> FreeRule:
    if not isinstance(data, dict):
        raise BadInput(f"{where}: expected a table")
    check_keys(where, data, (f.name for f in fields(FreeRule)))
    for key, value in data.items():
        if key in ("allow_processes", "unknown_memory_is_free"):
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
    kind = data.get("kind", "ssh")
    if (name == LOCAL and "kind" in data) or kind not in KINDS:
        raise BadInput(f"{where}.kind: expected one of {', '.join(KINDS)}, got {kind!r}")
    allowed = _LOCAL_KEYS if name == LOCAL else _HOST_KEYS | {"kind"}
    check_keys(where, data, allowed | _SLURM_KEYS if kind == "slurm" else allowed)
    if name != LOCAL and kind != "slurm" and "target" not in data:
        raise BadInput(f"{where}: missing 'target' (an ssh alias, host or user@host)")
    kw: dict[str, Any] = {"name": name}
    if kind == "slurm":
        kw["slurm"] = _slurm_settings(where, data)
    for key in ("target", "workdir", "python", "identity", "runs_dir"):
        if key in data:
            if not isinstance(data[key], str):
                raise BadInput(f"{where}.{key}: expected a string")
            value = data[key]
            try:
                kw[key] = check_target(value) if key == "target" else check_path(key, value)
            except BadInput as exc:
                raise BadInput(f"{where}.{key}: {exc}") from None
    if "port" in data:
        port = data["port"]
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise BadInput(f"{where}.port: expected a port number 1-65535, got {port!r}")
        kw["port"] = port
    for key in ("connect_timeout", "timeout"):
        if key in data:
            value = data[key]
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not number or not math.isfinite(value) or value <= 0:
                raise BadInput(f"{where}.{key}: expected a positive number, got {value!r}")
            kw[key] = float(value)
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


def _slurm_settings(where: str, data: dict[str, Any]) -> SlurmSettings:
    kw: dict[str, Any] = {}
    for key in _SLURM_STR_KEYS:
        if key in data:
            if not isinstance(data[key], str):
                raise BadInput(f"{where}.{key}: expected a string")
            kw[key] = data[key]
    for key in ("cpus_per_gpu", "term_before_s"):
        if key in data:
            kw[key] = data[key]
    if "sbatch_extra" in data:
        extra = data["sbatch_extra"]
        if not isinstance(extra, list) or not all(isinstance(x, str) for x in extra):
            raise BadInput(f"{where}.sbatch_extra: expected a list of strings")
        kw["sbatch_extra"] = tuple(extra)
    try:
        return SlurmSettings(**kw).validated()
    except BadInput as exc:
        raise BadInput(f"{where}: {exc}") from None


def _read_hosts_file(path: Path) -> dict[str, Any]:
    """hosts.toml parsed (empty when absent), its `hosts` checked to be a table."""
    data = read_toml(path, "hosts file") if path.exists() else {}
    if not isinstance(data.get("hosts", {}), dict):
        raise BadInput(f"{path}: 'hosts' must be a table of [hosts.NAME] tables")
    return data


def load_hosts(path: Path | None = None) -> dict[str, HostConfig]:
    """Every host by name, `local` first; a bad file is a BadInput naming file, host, field."""
    path = path or hosts_file()
    return _hosts_of(path, _read_hosts_file(path))


def _hosts_of(path: Path, data: dict[str, Any]) -> dict[str, HostConfig]:
    unknown = set(data) - {"hosts", "free"}
    if unknown:
        raise BadInput(f"{path}: unknown top-level key {sorted(unknown)[0]!r} (use [hosts.NAME])")
    rule = _free_rule(f"{path}: free", data["free"], FreeRule()) if "free" in data else FreeRule()
    tables = data.get("hosts", {})
    out = {LOCAL: _host_from(path, LOCAL, tables.get(LOCAL, {}), rule)}
    for name, table in tables.items():
        if name != LOCAL:
            out[name] = _host_from(path, name, table, rule)
    return out


def usable_hosts(path: Path | None = None) -> tuple[dict[str, HostConfig], str | None]:
    """The hosts to work with, and what is wrong with hosts.toml (None when nothing).

    A broken hosts.toml must not take this machine down with it: the local host (with its
    defaults) and the registry keep working, and the caller shows the problem once."""
    try:
        return load_hosts(path), None
    except BadInput as exc:
        return {LOCAL: _host_from(path or hosts_file(), LOCAL, {}, FreeRule())}, str(exc)


def _write_hosts(data: dict[str, Any], path: Path) -> None:
    lines = []
    if data.get("free"):
        lines += ["[free]", *(f"{k} = {toml_value(v)}" for k, v in data["free"].items()), ""]
    for name, table in data.get("hosts", {}).items():
        lines.append(f"[hosts.{toml_key(name)}]")
        lines += [f"{toml_key(k)} = {toml_value(v)}" for k, v in table.items()]
        lines.append("")
    write_text_atomic(path, "\n".join(lines))


def save_host(name: str, **settings: Any) -> HostConfig:
    """Add or replace `[hosts.NAME]` (keys as in hosts.toml); validated before writing."""
    path = hosts_file()
    data = _read_hosts_file(path)
    table = {k: v for k, v in settings.items() if v is not None}
    data.setdefault("hosts", {})[name] = table
    rule = _free_rule(f"{path}: free", data.get("free", {}), FreeRule())
    _host_from(path, name, table, rule)  # the new host's own mistakes first
    # Then the whole file as it would be written: never write one `hosts` would refuse.
    config = _hosts_of(path, data)[name]
    _write_hosts(data, path)
    return config


def remove_host(name: str) -> None:
    path = hosts_file()
    data = _read_hosts_file(path)
    if name == LOCAL or name not in data.get("hosts", {}):
        raise BadInput(f"no host {name!r} in {path}")
    del data["hosts"][name]
    _write_hosts(data, path)
