"""The `Host` interface and its two plain kinds: this machine, and one reached over SSH.

Only these classes know whether a host is this machine: the local kind answers in-process,
the SSH kind ships the same stdlib-only code over the shared connection. `hosts.py` picks
the kind for a hosts.toml entry (the Slurm kind builds on these, in `slurmhost.py`).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import tempfile
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import ModuleType
from typing import Any

from vlmtui.core.errors import WorkFailed
from vlmtui.core.fleet import gpus
from vlmtui.core.fleet.hostsconfig import (
    HostConfig,
)
from vlmtui.core.fleet.onhost import hostprobe
from vlmtui.core.fleet.shell import (
    HomePath,
    env_prefix,
    join,
    quote_path,
    run_process,
    ssh_argv,
    ssh_base,
    ssh_control_argv,
)

REMOTE_RUNS_DIR = "~/.local/share/vlmtui/runs"
"""Run directories on a remote host without `runs_dir` or `workdir` in hosts.toml."""


class HostUnreachable(WorkFailed):
    """The host could not be asked (ssh failed, timed out): the answer is unknown, not no."""

    def __init__(self, host: str, why: str) -> None:
        super().__init__(f"host {host} is unreachable: {why}")
        self.host = host
        self.why = why


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


class Host(ABC):
    """A machine vlmtui can run commands on. Use `get_host(name)`; never construct by kind."""

    def __init__(self, config: HostConfig) -> None:
        self.config = config

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def kind(self) -> str:
        """`local` or `ssh`, for display (hosts list); behaviour never branches on it."""
        return "local" if self.config.is_local else "ssh"

    @abstractmethod
    def describe(self) -> str:
        """Where the host is, for people: `this machine` or `user@host:port`."""

    @abstractmethod
    def call_probe(self, op: str, payload: dict[str, Any], timeout: float | None = None) -> Any:
        """Run `hostprobe.OPS[op](**payload)` on the host; HostUnreachable when it can't."""

    @abstractmethod
    def read_bytes(self, path: str, offset: int, n: int) -> bytes:
        """Up to `n` bytes of `path` from `offset`; b"" when the file does not exist (yet)."""

    @abstractmethod
    def size(self, path: str) -> int | None:
        """Size of `path` in bytes; None when it does not exist."""

    @abstractmethod
    def query_gpus(self, timeout: float | None = None) -> gpus.HostGpus:
        """This host's GPUs judged by its free rule (unreachable: `reachable=False`)."""

    @abstractmethod
    def launch_paths(self, model: str, data: str, run_id: str) -> tuple[str, str, str, str]:
        """(workdir, model, data, run_dir) as the host should see them."""

    @abstractmethod
    def watch_gpus(self, interval_s: float, stop: threading.Event) -> Iterator[gpus.HostGpus]:
        """Snapshots every `interval_s` from one long-lived query (no process per refresh),
        until `stop` is set or the link drops (the iterator then ends; see `fleet/watch.py`)."""

    @property
    def needs_recipe_files(self) -> bool:
        """Whether user recipe files must be copied into the run directory (the host does
        not share this machine's config dir)."""
        return True

    @property
    def cpu_count(self) -> int | None:
        """CPUs a CPU run may spread its processes over; None when not known without asking
        the host."""
        return None

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

    def run_shipped(
        self, module: ModuleType, op: str, payload: dict[str, Any], timeout: float | None = None
    ) -> Any:
        """`module.OPS[op](**payload)` on the host, its JSON result back. The module is
        stdlib-only and self-contained (`onhost/`), so its source is sent and runs on the
        host's Python whatever vlmtui version (if any) is installed there."""
        src = Path(str(module.__file__)).read_text(encoding="utf-8")
        res = self.run_python(src, [op, json.dumps(payload)], timeout=timeout)
        if res.transport_error:
            raise HostUnreachable(self.name, res.transport_error)
        if res.returncode != 0:
            raise WorkFailed(f"{op} on {self.name} failed: {res.stderr.strip()[-300:]}")
        return json.loads(res.stdout)

    def close(self) -> None:  # noqa: B027 - optional hook, a no-op for local
        """Drop the shared connection (no-op for local)."""

    def master_pid(self) -> int | None:
        """Pid of the shared SSH connection's master, if one runs (None for local)."""
        return None


class LocalHost(Host):
    """This machine: scripts run under /bin/sh, probes and file reads in-process."""

    def describe(self) -> str:
        return "this machine"

    def _argv(self, script: str) -> list[str]:
        return ["/bin/sh", "-c", script]

    def call_probe(self, op: str, payload: dict[str, Any], timeout: float | None = None) -> Any:
        return hostprobe.OPS[op](**payload)

    def read_bytes(self, path: str, offset: int, n: int) -> bytes:
        try:
            with open(os.path.expanduser(path), "rb") as fh:
                fh.seek(offset)
                return fh.read(n)
        except FileNotFoundError:
            return b""
        except OSError as exc:  # a directory in its place: a damaged run directory
            raise WorkFailed(f"{path}: cannot read ({exc.strerror})") from None

    def size(self, path: str) -> int | None:
        try:
            return os.path.getsize(os.path.expanduser(path))
        except FileNotFoundError:
            return None

    def query_gpus(self, timeout: float | None = None) -> gpus.HostGpus:
        return gpus.local_gpus(self.config.free_rule, self.name)

    def launch_paths(self, model: str, data: str, run_id: str) -> tuple[str, str, str, str]:
        from vlmtui.core.paths import runs_dir

        c = self.config
        workdir = os.path.expanduser(c.workdir) if c.workdir else os.getcwd()

        def absolute(p: str) -> str:
            return os.path.normpath(os.path.join(workdir, os.path.expanduser(p)))

        base = absolute(c.runs_dir) if c.runs_dir else str(runs_dir())
        return workdir, absolute(model), absolute(data), os.path.join(base, run_id)

    @property
    def needs_recipe_files(self) -> bool:
        return False

    @property
    def cpu_count(self) -> int | None:
        return os.cpu_count() or 1

    def watch_gpus(self, interval_s: float, stop: threading.Event) -> Iterator[gpus.HostGpus]:
        while not stop.is_set():
            yield self.query_gpus()
            stop.wait(interval_s)


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
        if not lines:
            return "ssh exited with 255 (connection failed)"
        return "ssh: " + lines[-1].removeprefix("ssh: ")  # ssh prefixes some lines itself

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

    def call_probe(self, op: str, payload: dict[str, Any], timeout: float | None = None) -> Any:
        return self.run_shipped(hostprobe, op, payload, timeout)

    def read_bytes(self, path: str, offset: int, n: int) -> bytes:
        script = f"tail -c +{int(offset) + 1} {quote_path(path)} 2>/dev/null | head -c {int(n)}"
        res = self.run(script)
        if res.transport_error:
            raise HostUnreachable(self.name, res.transport_error)
        return res.stdout_bytes

    def size(self, path: str) -> int | None:
        res = self.run(f"wc -c < {quote_path(path)} 2>/dev/null")
        if res.transport_error:
            raise HostUnreachable(self.name, res.transport_error)
        text = res.stdout.strip()
        return int(text) if res.returncode == 0 and text.isdigit() else None

    def query_gpus(self, timeout: float | None = None) -> gpus.HostGpus:
        start = time.perf_counter()
        script = gpus.remote_query_script(self.python_argv())
        res = self.run(script, timeout=timeout or self.config.timeout)
        if res.transport_error:
            result = gpus.HostGpus(name=self.name, reachable=False, error=res.transport_error)
        else:
            result = gpus.parse_remote_output(self.name, res.stdout, self.config.free_rule)
        return replace(result, elapsed_s=time.perf_counter() - start)

    def watch_gpus(self, interval_s: float, stop: threading.Event) -> Iterator[gpus.HostGpus]:
        script = env_prefix(self.config.env) + gpus.remote_watch_script(
            self.python_argv(), interval_s
        )
        # ssh's complaint goes to a file (a pipe nobody reads could fill and stall the stream):
        # when the stream ends, it says why (the GPU pane read "the GPU stream ended" for a
        # host that never answered).
        with tempfile.TemporaryFile() as err:
            proc = subprocess.Popen(
                self._argv(script),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=err,
                start_new_session=True,
            )
            assert proc.stdout is not None
            # A snapshot overdue by this much means a stalled link, even if ssh has not noticed.
            patience = max(3 * interval_s, self.config.connect_timeout + 1)
            try:
                yield from gpus.read_snapshots(
                    proc.stdout, self.name, self.config.free_rule, patience, stop
                )
            finally:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            err.seek(max(0, err.seek(0, os.SEEK_END) - 4096))
            why = self._transport_error(proc.returncode, err.read().decode(errors="replace"))
        if why:
            raise HostUnreachable(self.name, why)

    def launch_paths(self, model: str, data: str, run_id: str) -> tuple[str, str, str, str]:
        c = self.config
        workdir = c.workdir or "~"
        base = c.runs_dir or (f"{workdir.rstrip('/')}/runs" if c.workdir else REMOTE_RUNS_DIR)
        if not base.startswith(("/", "~")):
            base = f"{workdir.rstrip('/')}/{base}"
        return workdir, model, data, f"{base.rstrip('/')}/{run_id}"
