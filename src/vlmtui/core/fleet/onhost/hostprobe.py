"""What the registry needs to know on a run's host: liveness, status, last step; and `stop`.

Standard library only, on purpose: for a remote host this file's source is fed to the host's
Python (`python -I - OP JSON`) over the shared SSH connection, one round trip for all the
runs of that host; for `local` the same functions are called in-process. It reads the run
directory's files and /proc, and prints one JSON object.

A run's process group is led by its supervisor (`supervise.py`), whose `supervisor.json`
gives its pid and kernel start time; the start time guards against a reused pid.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# A standalone copy of the run-directory contract (`vlmtui.core.rundir`): this file is sent to
# hosts as one source and runs there on the standard library alone. tests/test_rundir.py
# pins the copy equal to the original.
STATUS = "status.json"
EXIT_JSON = "exit.json"
SUPERVISOR_JSON = "supervisor.json"
EVENTS = "events.jsonl"
OUTPUT_LOG = "output.log"
FINAL = ("finished", "failed", "stopped")
OOM_MARKERS = ("CUDA out of memory", "torch.OutOfMemoryError", "CUDA error: out of memory")
TAIL_BYTES = 8192


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def tail_bytes(path: Path, n: int = TAIL_BYTES) -> bytes:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - n))
            return fh.read()
    except OSError:
        return b""


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/PID/stat fields from field 3 (state) on; None when the process does not exist."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # gone (or never there)
        return None
    return raw.rsplit(")", 1)[1].split()


def proc_starttime(pid: int) -> str | None:
    """Kernel start time of a process (clock ticks since boot), or None without /proc."""
    f = _stat_fields(pid)
    return f[19] if f and len(f) > 19 else None


def pid_alive(pid: int, starttime: str | None = None) -> bool:
    """Running (not a zombie) and, when `starttime` is given, the same process as then."""
    if pid <= 0:
        return False
    if Path("/proc/self/stat").exists():
        f = _stat_fields(pid)
        if f is None or f[0] in ("Z", "X"):
            return False
        return starttime is None or len(f) <= 19 or f[19] == starttime
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def group_alive(pgid: int) -> bool:
    """Whether any live (non-zombie) process is in process group `pgid`."""
    if pgid <= 0:
        return False
    proc = Path("/proc")
    if not (proc / "self/stat").exists():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    for entry in proc.iterdir():
        if entry.name.isdigit():
            f = _stat_fields(int(entry.name))
            if f and len(f) > 2 and f[2] == str(pgid) and f[0] not in ("Z", "X"):
                return True
    return False


def last_step(run_dir: Path) -> dict[str, Any] | None:
    """The newest events.jsonl entry with a step and a loss (read from the file's end)."""
    text = tail_bytes(run_dir / EVENTS, 65536).decode("utf-8", errors="replace")
    for line in reversed(text.splitlines()):
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if isinstance(item, dict) and "step" in item and "loss" in item:
            return {k: item.get(k) for k in ("step", "max_steps", "loss", "epoch", "elapsed_s")}
    return None


def failure_reason(exit_info: dict[str, Any] | None, log_tail: str) -> str:
    """Why a run died without writing a final state: OOM, signal, exit code, last error line."""
    parts = []
    if any(m in log_tail for m in OOM_MARKERS):
        parts.append("CUDA out of memory")
    if exit_info and exit_info.get("signal"):
        parts.append(f"killed by {exit_info['signal']}")
    elif exit_info and exit_info.get("returncode") is not None:
        parts.append(f"exited with code {exit_info['returncode']}")
    else:
        parts.append("ended without a final state (killed with SIGKILL, or the host restarted)")
    lines = [ln.strip() for ln in log_tail.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.split(":", 1)[0].endswith(("Error", "Exception"))]
    if errors and "CUDA out of memory" not in parts:
        parts.append(errors[-1][:300])
    return "; ".join(parts)


def _identity(run_dir: Path, pid: int | None) -> tuple[int | None, str | None]:
    sup = read_json(run_dir / SUPERVISOR_JSON) or {}
    return (sup.get("pid") or pid), sup.get("starttime")


def probe_run(run_dir: str, pid: int | None = None) -> dict[str, Any]:
    """State facts of one run: status.json, exit.json, liveness, last step, log tail."""
    d = Path(os.path.expanduser(run_dir))
    pid, start = _identity(d, pid)
    alive = pid is not None and pid > 0 and (pid_alive(pid, start) or group_alive(pid))
    status = read_json(d / STATUS)
    out: dict[str, Any] = {
        "found": d.is_dir(),
        "run_dir": str(d.resolve()) if d.is_dir() else str(d),
        "pid": pid,
        "alive": alive,
        "status": status if isinstance(status, dict) else None,
        "exit": read_json(d / EXIT_JSON),
        "last": last_step(d),
        "log_tail": None,
    }
    state = (out["status"] or {}).get("state")
    if not alive and state not in FINAL:
        out["log_tail"] = tail_bytes(d / OUTPUT_LOG).decode("utf-8", errors="replace")
    return out


def probe(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """`probe_run` for each {"id", "run_dir", "pid"}; keyed by id."""
    return {
        "runs": {r["id"]: probe_run(r["run_dir"], r.get("pid")) for r in runs},
        "time": time.time(),
    }


def _signal_run(pid: int, sig: int) -> None:
    """Signal the run's group; right after launch the supervisor may not lead one yet."""
    deadline = time.monotonic() + 2.0
    while True:
        f = _stat_fields(pid)
        if f is None or f[0] in ("Z", "X") or (len(f) > 2 and f[2] == str(pid)):
            break  # gone, or leads its group (no /proc: assume it does)
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)  # still starting: it has no child yet, signal it alone
            return
        time.sleep(0.02)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)


def stop(run_dir: str, pid: int | None = None, grace_s: float = 30.0) -> dict[str, Any]:
    """SIGTERM to the run's process group, SIGKILL after `grace_s`; the run ends `stopped`."""
    d = Path(os.path.expanduser(run_dir))
    pid, start = _identity(d, pid)

    def alive() -> bool:
        return pid is not None and pid > 0 and (pid_alive(pid, start) or group_alive(pid))

    running = alive()
    killed = False
    if running and pid is not None:
        _signal_run(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        if alive():
            killed = True
            _signal_run(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while alive() and time.monotonic() < deadline:
                time.sleep(0.05)
    status = read_json(d / STATUS)
    status = status if isinstance(status, dict) else {}
    if running and status.get("state") not in FINAL:
        how = f"killed with SIGKILL after {grace_s:g} s" if killed else "stopped by SIGTERM"
        status.update(state="stopped", error=how, updated=time.time())
        if d.is_dir():
            write_json_atomic(d / STATUS, status)
    return {"was_running": running, "killed": killed, "status": status, "last": last_step(d)}


OPS: dict[str, Callable[..., dict[str, Any]]] = {"probe": probe, "stop": stop}

if __name__ == "__main__":
    print(json.dumps(OPS[sys.argv[1]](**json.loads(sys.argv[2]))))
