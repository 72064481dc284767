"""What the registry needs to know on a run's host: liveness, status, last step; and `stop`.

Standard library only, on purpose: for a remote host this file's source is fed to the host's
Python (`python -I - OP JSON`) over the shared SSH connection, one round trip for all the
runs of that host; for `local` the same functions are called in-process. It reads the run
directory's files and /proc, and prints one JSON object.

A run's process group is led by its supervisor (`supervise.py`), whose `supervisor.json`
gives its pid, kernel start time and the host's boot id; the supervisor and everything it
starts carry VLMTUI_RUN_ID=<run id> in their environment. A process counts as the run's only
when all of these agree (see `identify`): a reused pid (another start time, no run id in its
environment) or a restarted host (another boot id) is never taken for the run, and `stop`
signals nothing it cannot prove. Processes that left the group (torchrun's workers) are
the run's by their run id and a start after the supervisor's.
"""

from __future__ import annotations

import contextlib
import errno
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
LAUNCH_JSON = "launch.json"
RUN_JSON = "run.json"
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
    text = (json.dumps(data, indent=1, sort_keys=True) + "\n").encode("utf-8")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(text)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        room = path.stat().st_blocks * 512 if path.is_file() else 0  # allocated bytes
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT) or room < len(text):
            raise
        with open(path, "r+b") as fh:  # in the blocks it already has
            fh.write(text)
            fh.truncate()
        return
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
        with contextlib.suppress(PermissionError):  # another user's, alive
            os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


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


RUN_ID_ENV = "VLMTUI_RUN_ID"
HOST_RESTARTED = "host restarted"
# What `identify` concludes about a run's processes.
ALIVE, GONE, RESTARTED, UNPROVEN = "alive", "gone", "restarted", "unproven"
STARTING, UNSTARTED, FOREGROUND = "starting", "unstarted", "foreground"


def boot_id() -> str | None:
    """This boot of the host (changes at every restart); None without /proc."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip() or None
    except OSError:
        return None


def carries_run_id(pid: int, run_id: str) -> bool | None:
    """Whether process `pid` was started with VLMTUI_RUN_ID=run_id; None when unreadable."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return False
    except OSError:  # another user's process, or no /proc
        return None
    return f"{RUN_ID_ENV}={run_id}".encode() in raw.split(b"\0")


def _members(run_id: str, since: str | None) -> list[int]:
    """Live processes that carry the run id and started no earlier than its supervisor: its
    group, and those outside it (torchrun starts each worker in a session of its own)."""
    found = []
    for entry in Path("/proc").iterdir():
        f = _stat_fields(int(entry.name)) if entry.name.isdigit() else None
        if not f or len(f) <= 19 or f[0] in ("Z", "X"):
            continue
        if since is not None and int(f[19]) < int(since):
            continue
        if carries_run_id(int(entry.name), run_id):
            found.append(int(entry.name))
    return found


def _supervisor_ok(sup: Any) -> bool:
    """supervisor.json as the supervisor writes it (an int pid, a digit-string start time); a
    damaged one proves nothing, and must not take `vlmtui runs` down for every run."""
    pid, start = (sup.get("pid"), sup.get("starttime")) if isinstance(sup, dict) else (0, "")
    pid_ok = isinstance(pid, int) and not isinstance(pid, bool) and pid > 0
    return pid_ok and (start is None or (isinstance(start, str) and start.isdigit()))


def identify(run_dir: Path, run_id: str, pid: int | None) -> dict[str, Any]:
    """Whether the run's processes live, as far as it can be proven: {"proof", "pid", "why"}.

    `pid` (the registry's, from the launch) is used only until supervisor.json exists."""
    sup = read_json(run_dir / SUPERVISOR_JSON)
    sup = sup if _supervisor_ok(sup) else None
    pid = pid if isinstance(pid, int) and not isinstance(pid, bool) else None  # a damaged row
    start = None
    if sup is not None:
        pid, start = sup["pid"], sup.get("starttime")
        now_boot = boot_id()
        if sup.get("boot_id") and now_boot and sup["boot_id"] != now_boot:
            return {"proof": RESTARTED, "pid": pid, "why": HOST_RESTARTED}
    if pid is None or pid <= 0:
        return {"proof": UNSTARTED, "pid": None, "why": "no process recorded yet"}
    if not Path("/proc/self/stat").exists():
        return {"proof": UNPROVEN, "pid": pid, "why": "this host has no /proc"}
    f = _stat_fields(pid)
    if f is not None and f[0] not in ("Z", "X") and (start is None or f[19] == start):
        # A supervisor.json from before run ids were passed on: the start time is all there is.
        legacy = sup is not None and not sup.get("run_id") and start is not None
        carries = True if legacy else carries_run_id(pid, run_id)
        if carries:
            return {"proof": ALIVE, "pid": pid, "why": None, "start": start}
        if carries is None:
            why = f"cannot read the environment of process {pid}"
            return {"proof": UNPROVEN, "pid": pid, "why": why}
    if sup is not None and _members(run_id, start):  # the supervisor died before them
        return {"proof": ALIVE, "pid": pid, "why": None, "start": start}
    if sup is None and f is not None and f[0] not in ("Z", "X"):
        # The launch's own pid before supervisor.json exists: `nohup`/`env` have not yet
        # exec'd the supervisor (which carries the run id), or the pid is a stranger's.
        return {"proof": STARTING, "pid": pid, "why": f"process {pid} is not (yet) the run's"}
    return {"proof": GONE, "pid": pid, "why": None}


def _start_epoch(ticks: str) -> float | None:
    """A process's start as epoch seconds (to within a second: btime is whole seconds)."""
    try:
        lines = Path("/proc/stat").read_text().splitlines()
        btime = next(int(ln.split()[1]) for ln in lines if ln.startswith("btime "))
        return btime + int(ticks) / os.sysconf("SC_CLK_TCK")
    except (OSError, StopIteration, ValueError):
        return None


def foreground_pid(status: dict[str, Any] | None) -> int | None:
    """The process that wrote a non-final status.json and still runs — a foreground
    `train --resume` in the run directory: it started before it wrote the file, which a later
    process given the same pid cannot have. Good for showing the run alive, not for signals
    (the start time is known to a second only)."""
    status = status or {}
    pid, updated = status.get("pid"), status.get("updated")
    if not isinstance(pid, int) or not isinstance(updated, (int, float)) or pid <= 0:
        return None
    f = _stat_fields(pid)
    if f is None or f[0] in ("Z", "X") or len(f) <= 19 or status.get("state") in FINAL:
        return None
    started = _start_epoch(f[19])
    return pid if started is not None and started <= updated else None


def probe_run(
    run_dir: str, id: str = "", pid: int | None = None, known_state: str | None = None
) -> dict[str, Any]:
    """State facts of one run: status.json, exit.json, proven liveness, last step, log tail.

    With `known_state` (a final state the registry holds), only status.json is read while it
    still says so: {"unchanged": true}. That is how a resumed run is noticed cheaply."""
    d = Path(os.path.expanduser(run_dir))
    status = read_json(d / STATUS)
    status = status if isinstance(status, dict) else None
    if known_state is not None and (status or {}).get("state") == known_state:
        return {"unchanged": True}
    ident = identify(d, id, pid)
    if ident["proof"] in (GONE, UNSTARTED) and foreground_pid(status):
        ident = {**ident, "proof": FOREGROUND, "why": f"pid {foreground_pid(status)}"}
    out: dict[str, Any] = {
        "found": d.is_dir(),
        "run_dir": str(d.resolve()) if d.is_dir() else str(d),
        "pid": ident["pid"],
        "proof": ident["proof"],
        "why": ident["why"],
        "alive": ident["proof"] == ALIVE,
        "status": status,
        "exit": read_json(d / EXIT_JSON),
        "last": last_step(d),
        "log_tail": None,
    }
    if ident["proof"] not in (ALIVE, FOREGROUND) and (status or {}).get("state") not in FINAL:
        out["log_tail"] = tail_bytes(d / OUTPUT_LOG).decode("utf-8", errors="replace")
    return out


def probe(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """`probe_run` for each {"id", "run_dir", "pid", "known_state"}; keyed by id. What one
    run directory holds cannot keep the host's other runs from being answered."""
    out: dict[str, Any] = {}
    for r in runs:
        try:
            out[r["id"]] = probe_run(r["run_dir"], r["id"], r.get("pid"), r.get("known_state"))
        except Exception as exc:  # named in that run's answer
            out[r["id"]] = {"error": f"{type(exc).__name__}: {exc}"}
    return {"runs": out, "time": time.time(), "boot_id": boot_id()}


def _signal_run(pid: int, sig: int, run_id: str, since: str | None) -> None:
    """Signal the run's group (a supervisor that does not lead one yet has no child: it
    alone), then each proven process of the run outside it (torchrun's workers)."""
    f = _stat_fields(pid)
    leads = f is None or (len(f) > 2 and f[2] == str(pid))
    with contextlib.suppress(ProcessLookupError):
        (os.killpg if leads else os.kill)(pid, sig)
    for member in _members(run_id, since):
        g = _stat_fields(member)
        if g and g[2] != str(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(member, sig)


def _proven(d: Path, run_id: str, pid: int | None) -> dict[str, Any]:
    """`identify`, waiting up to 3 s for a run that is still starting to prove itself."""
    deadline = time.monotonic() + 3.0
    while True:
        ident = identify(d, run_id, pid)
        if ident["proof"] != STARTING or time.monotonic() > deadline:
            return ident
        time.sleep(0.05)


def stop(
    run_dir: str, id: str = "", pid: int | None = None, grace_s: float = 30.0
) -> dict[str, Any]:
    """SIGTERM to the run's process group, SIGKILL after `grace_s`; the run ends `stopped`.
    Nothing is signalled unless `identify` proves the processes are this run's."""
    d = Path(os.path.expanduser(run_dir))
    ident = _proven(d, id, pid)
    status = read_json(d / STATUS)
    status = status if isinstance(status, dict) else {}
    if ident["proof"] in (GONE, UNSTARTED) and foreground_pid(status):
        why = f"it runs in the foreground (pid {foreground_pid(status)}): stop it there"
        ident = {**ident, "proof": FOREGROUND, "why": why}
    result = {"was_running": False, "killed": False, "proof": ident["proof"], "why": ident["why"]}
    if ident["proof"] != ALIVE:
        return {**result, "status": status, "last": last_step(d)}
    lead = int(ident["pid"])
    since = ident.get("start")

    def alive() -> bool:
        return bool(identify(d, id, lead)["proof"] == ALIVE)

    _signal_run(lead, signal.SIGTERM, id, since)
    deadline = time.monotonic() + grace_s
    while alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    killed = alive()
    if killed:
        _signal_run(lead, signal.SIGKILL, id, since)
        deadline = time.monotonic() + 10
        while alive() and time.monotonic() < deadline:
            time.sleep(0.05)
    status = read_json(d / STATUS)
    status = status if isinstance(status, dict) else {}
    if status.get("state") not in FINAL:
        how = f"killed with SIGKILL after {grace_s:g} s" if killed else "stopped by SIGTERM"
        status.update(state="stopped", error=how, updated=time.time())
        with contextlib.suppress(OSError):  # a vanished dir, a full disk: stopped all the same
            write_json_atomic(d / STATUS, status)
    result.update(was_running=True, killed=killed)
    return {**result, "status": status, "last": last_step(d)}


def _scan_dir(d: Path) -> dict[str, Any] | None:
    launch = read_json(d / LAUNCH_JSON)
    status = read_json(d / STATUS)
    launched = isinstance(launch, dict) and launch.get("id") == d.name
    if not launched and not (isinstance(status, dict) and status.get("run_id") == d.name):
        return None  # not a run `launch` started (a foreground `train --output`, or other)
    info = read_json(d / RUN_JSON)
    info = info if isinstance(info, dict) else {}
    return {
        "id": d.name,
        "run_dir": str(d.resolve()),
        "launch": launch if launched else None,
        "status": status if isinstance(status, dict) else None,
        "run": {k: info.get(k) for k in ("recipe", "model", "data", "gpu", "started")},
        "supervisor": read_json(d / SUPERVISOR_JSON),
        "last": last_step(d),
        "mtime": d.stat().st_mtime,
    }


def scan(runs_dirs: list[str]) -> dict[str, Any]:
    """The facts of every launched run directory under `runs_dirs` (to rebuild a registry)."""
    found: list[dict[str, Any]] = []
    for base in runs_dirs:
        root = Path(os.path.expanduser(base))
        if not root.is_dir():
            continue
        dirs = (d for d in sorted(root.iterdir()) if d.is_dir())
        found += [facts for d in dirs if (facts := _scan_dir(d)) is not None]
    return {"runs": found, "time": time.time()}


OPS: dict[str, Callable[..., dict[str, Any]]] = {"probe": probe, "stop": stop, "scan": scan}

if __name__ == "__main__":
    print(json.dumps(OPS[sys.argv[1]](**json.loads(sys.argv[2]))))
