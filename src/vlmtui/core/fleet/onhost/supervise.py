"""The leader of a detached run's process group: starts the command, records how it ended.

`launch` starts `python -m vlmtui.core.supervise RUN_DIR -- COMMAND...` detached, with stdout
and stderr already sent to RUN_DIR/output.log. This process makes itself a session and
process-group leader (so `stop` can signal the tree; torchrun's workers lead sessions of
their own and are found by the run id), ignores SIGHUP (the SSH connection may drop), writes
`supervisor.json` (pid, kernel start time, the host's boot id, and the run id it was given
in VLMTUI_RUN_ID, which every process of the run inherits: together they prove a process is
the run's, see hostprobe), runs the command as its child and waits. When the child ends it
writes `exit.json` (return code or signal) and, if the command left no final state in
status.json, writes one: `stopped` when a SIGTERM/SIGINT reached the group, else `failed`
with the reason (signal, exit code, CUDA out of memory found in the log). If the whole group
is SIGKILLed nothing is written here; the registry then reports `failed` from liveness. On
a full disk, where no new file can be written, status.json is rewritten in place
(`write_json_atomic`): a supervisor that cannot write supervisor.json records `failed` and
starts nothing.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from vlmtui.core.fleet.onhost.hostprobe import (
    EXIT_JSON,
    FINAL,
    OUTPUT_LOG,
    RUN_ID_ENV,
    STATUS,
    SUPERVISOR_JSON,
    boot_id,
    failure_reason,
    proc_starttime,
    read_json,
    tail_bytes,
    write_json_atomic,
)


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: python -m vlmtui.core.supervise RUN_DIR -- COMMAND...", file=sys.stderr)
        return 2
    run_dir, command = Path(argv[0]), argv[2:]
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    stop_signal: list[int] = []

    def on_stop(signum: int, _frame: object) -> None:
        # The group got it too (stop signals the group): just remember, keep waiting.
        stop_signal.append(signum)

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    if os.getpgrp() != os.getpid():
        os.setsid()
    identity = {
        "pid": os.getpid(),
        "pgid": os.getpgrp(),
        "starttime": proc_starttime(os.getpid()),
        "boot_id": boot_id(),
        "run_id": os.environ.get(RUN_ID_ENV),
        "argv": command,
        "started": time.time(),
    }
    try:
        write_json_atomic(run_dir / SUPERVISOR_JSON, identity)
    except OSError as exc:  # a full disk: a run that cannot prove its processes never starts
        _record_no_start(run_dir, f"cannot start: {exc.strerror} writing {SUPERVISOR_JSON}")
        return 1
    print(f"[vlmtui] {shlex.join(command)}", flush=True)
    if stop_signal:  # stopped before it started
        returncode = -stop_signal[0]
    else:
        try:
            child = subprocess.Popen(command, stdin=subprocess.DEVNULL)
        except OSError as exc:
            returncode = 127
            print(f"[vlmtui] cannot start the command: {exc}", flush=True)
        else:
            returncode = child.wait()
    state = _record_end(run_dir, returncode, stop_signal)
    sig = signal.Signals(-returncode).name if returncode < 0 else None
    how = f"signal {sig}" if sig else f"code {returncode}"
    with contextlib.suppress(OSError):  # output.log on a full disk
        print(f"[vlmtui] command ended with {how}; state {state}", flush=True)
    return 128 + (-returncode) if returncode < 0 else returncode


def _record_no_start(run_dir: Path, error: str) -> None:
    status = read_json(run_dir / STATUS)
    status = status if isinstance(status, dict) else {}
    status.update(state="failed", error=error, exit_code=1, updated=time.time())
    with contextlib.suppress(OSError):  # status.json is rewritten in its own block if need be
        write_json_atomic(run_dir / STATUS, status)


def _record_end(run_dir: Path, returncode: int, stop_signal: list[int]) -> str | None:
    """exit.json, and the final state when the trainer could not write one; returns it."""
    sig = signal.Signals(-returncode).name if returncode < 0 else None
    exit_info = {
        "returncode": returncode,
        "signal": sig,
        "stop_requested": bool(stop_signal),
        "ended": time.time(),
    }
    try:
        write_json_atomic(run_dir / EXIT_JSON, exit_info)
    except OSError as exc:  # a full disk has no block for a new file: status.json has one
        full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
        exit_info["unwritten"] = "no space left on device" if full else str(exc)
    status = read_json(run_dir / STATUS)
    status = status if isinstance(status, dict) else {}
    # A stage of a multi-stage run on a cluster ends `pending` with `stage_done` (the next
    # stage is a job of its own): not a failure.
    if status.get("state") not in FINAL and not (returncode == 0 and status.get("stage_done")):
        if stop_signal:
            name = signal.Signals(stop_signal[0]).name
            status.update(state="stopped", error=f"stopped by {name}")
        else:
            tail = tail_bytes(run_dir / OUTPUT_LOG).decode("utf-8", errors="replace")
            why = failure_reason(exit_info, tail)
            unwritten = exit_info.get("unwritten")
            status.update(state="failed", error=f"{unwritten}; {why}" if unwritten else why)
        status.update(exit_code=returncode, updated=time.time())
        try:
            write_json_atomic(run_dir / STATUS, status)
        except OSError:  # nothing left to write with: the probe reports it from liveness
            return None
    return status.get("state")


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
