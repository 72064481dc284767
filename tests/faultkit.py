"""Faults for the fleet fault tests and `bench/faults.py`: each does to real processes, files
and SQLite what the fault does in the field, so the code under test meets the real thing.

- `stranger()`: an unrelated session leader (what a reused pid looks like);
- `pretend_reused(run_dir, pid)`: the run's supervisor.json now names that pid, as it would
  after the kernel gave the dead supervisor's pid to the stranger (a pid cannot be forced);
- `pretend_rebooted(run_dir)`: supervisor.json's boot id is another boot's;
- `LostReplyHost`: an SSH host whose `run` executes the script on the host and then loses the
  reply (`drop`), or loses it and runs the script again (`rerun`, a client's retry);
- `corrupt(path, how)`: garbage in place of the registry (`header`) or torn pages (`pages`);
- `KILLED_LAUNCHER`: a `launch` process that SIGKILLs itself once the start script ran,
  before the row learns the pid (argv: stand-in script, model, data).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vlmtui.core.fleet.hosts import CommandResult, SshHost
from vlmtui.core.fleet.onhost import hostprobe
from vlmtui.core.rundir import SUPERVISOR_JSON


def poll(what: Callable[[], Any], timeout: float = 30.0, every: float = 0.1) -> Any:
    """`what()` once it is truthy; AssertionError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = what()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)


def stranger() -> subprocess.Popen[bytes]:
    """An unrelated process leading its own session and group (nothing of any run)."""
    return subprocess.Popen(["sleep", "600"], start_new_session=True)


def alive(pid: int) -> bool:
    f = hostprobe._stat_fields(pid)
    return f is not None and f[0] not in ("Z", "X")


def supervisor(run_dir: str | Path) -> dict[str, Any]:
    return json.loads(Path(run_dir, SUPERVISOR_JSON).read_text())


def kill_group(pgid: int | None) -> None:
    if pgid:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)


def pretend_reused(run_dir: str | Path, pid: int, *, copy_starttime: bool) -> None:
    """Point supervisor.json at `pid`; with `copy_starttime` also at its start time, so only
    the run id in the environment tells the stranger apart."""
    info = supervisor(run_dir)
    info["pid"] = info["pgid"] = pid
    if copy_starttime:
        info["starttime"] = hostprobe.proc_starttime(pid)
    hostprobe.write_json_atomic(Path(run_dir, SUPERVISOR_JSON), info)


def pretend_rebooted(run_dir: str | Path) -> None:
    info = supervisor(run_dir)
    info["boot_id"] = "00000000-0000-4000-8000-000000000000"
    hostprobe.write_json_atomic(Path(run_dir, SUPERVISOR_JSON), info)


def processes_of(run_id: str, marker: bytes = b"vlmtui.core.supervise") -> list[int]:
    """Live processes started with VLMTUI_RUN_ID=run_id whose command line holds `marker`."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or not alive(int(entry.name)):
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if marker in cmdline and _carries(int(entry.name), run_id):
            out.append(int(entry.name))
    return out


def _carries(pid: int, run_id: str) -> bool:
    """Read here, not with the code under test: the check must not share its bugs."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False
    return f"VLMTUI_RUN_ID={run_id}".encode() in environ.split(b"\0")


class LostReplyHost(SshHost):
    """The SSH host, with the launch reply lost on the way back (the script did run).

    Stands in for a link that drops after the request was forwarded: the start script runs
    on the real sshd; only its answer is replaced by a transport error."""

    mode = "drop"

    def run(
        self, script: str, *, timeout: float | None = None, input: bytes | None = None
    ) -> CommandResult:
        res = super().run(script, timeout=timeout, input=input)
        if "vlmtui.core.supervise" not in script or res.transport_error:
            return res
        if self.mode == "rerun":
            return super().run(script, timeout=timeout, input=input)
        return CommandResult(255, b"", "", res.elapsed_s, "ssh: connection reset by peer")


def corrupt(path: Path, how: str) -> None:
    """`header`: not a database at all; `pages`: a valid header over torn pages."""
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    if how == "header":
        path.write_bytes(b"this is no database\n" * 400)
        return
    data = bytearray(path.read_bytes())
    assert len(data) >= 8192, len(data)
    for i in range(100, len(data)):
        data[i] = (data[i] * 7 + 13) % 256
    path.write_bytes(bytes(data))


KILLED_LAUNCHER = r"""
import os, signal, sys
from vlmtui.core.fleet import launch as launch_mod
from vlmtui.core.fleet.registry import Registry
from vlmtui.core.fleet.shell import HomePath

standin, model, data = sys.argv[1:4]

def command(python_argv, targs):
    return [*python_argv, standin, HomePath(targs.run_dir), "ok", "500", "0.1"]

def note(self, run_id, **changes):
    if "pid" in changes:  # the start script ran; die before the row learns the pid
        os.kill(os.getpid(), signal.SIGKILL)
    return original(self, run_id, **changes)

launch_mod.train_command = command
original, Registry.note = Registry.note, note
launch_mod.launch(launch_mod.LaunchRequest(recipe="r1-llm-only", model=model, data=data,
                                           gpu="cpu"))
"""
