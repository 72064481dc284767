"""Slurm commands on a cluster's login node: submit, probe, nodes, stop, check.

Standard library only, like `hostprobe.py`: for a login node reached over SSH this source
is fed to its Python (`python -I - OP JSON`), one round trip per call; when this machine is
the login node the same functions run in-process. Slurm's answers come back as raw text
(parsed by `slurmstate.py` on the client) with one JSON object on stdout. Every Slurm
command is bounded by `CMD_TIMEOUT_S`: a stopped slurmctld makes squeue retry for its
MessageTimeout, and callers want a one-line answer, not a hang.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

CMD_TIMEOUT_S = 6.0
SQUEUE_FORMAT = "%i|%T|%r|%S|%N|%j"
SACCT_FIELDS = "JobIDRaw,State,ExitCode,Start,NodeList"
SINFO_FIELDS = "NodeList:|,StateLong:|,Gres:|,GresUsed:|,Partition:|,CPUsState:"
FINAL = ("finished", "failed", "stopped")
STOP_REQUESTED = "stop_requested"
STOP_REASON = "stop_reason"


def _run(argv: list[str], timeout: float = CMD_TIMEOUT_S) -> tuple[int, str, str]:
    """(returncode, stdout, first stderr line); 124 on timeout, 127 when not installed."""
    try:
        res = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired:
        return 124, "", f"{argv[0]} timed out after {timeout:g} s"
    except OSError as exc:
        return 127, "", f"{argv[0]}: {exc.strerror or exc}"
    lines = [ln.strip() for ln in res.stderr.splitlines() if ln.strip()]
    return res.returncode, res.stdout, lines[-1] if lines else ""


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _write_json(path: Path, data: Any) -> None:
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


def _text(path: Path, limit: int = 4096) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace")[:limit].strip() or None
    except OSError:
        return None


def submit(
    run_dir: str,
    workdir: str,
    model: str,
    data: str,
    run_id: str,
    jobs: list[dict[str, Any]],
    recipe_files: list[tuple[str, str]] = (),  # type: ignore[assignment]
) -> dict[str, Any]:
    """Check paths, create the run directory (with the user recipe files the job needs in
    `recipes/`), write the job scripts, sbatch them in order
    (each `after_previous` one with afterok on the one before). {"jobs": [...]} or
    {"error": code, "detail": ...}, with any stage already submitted cancelled."""
    wd = Path(os.path.expanduser(workdir))
    if not wd.is_dir():
        return {"error": "workdir", "detail": str(wd)}
    for key, path in (("model", model), ("data", data)):
        if not (wd / os.path.expanduser(path)).exists():
            return {"error": key, "detail": path}
    d = wd / os.path.expanduser(run_dir)
    try:
        d.mkdir(parents=True, exist_ok=False)
    except FileExistsError:
        return {"error": "exists", "detail": str(d)}
    except OSError as exc:
        return {"error": "rundir", "detail": str(exc)}
    _write_json(d / "status.json", {"state": "pending", "run_id": run_id, "updated": time.time()})
    if recipe_files:
        (d / "recipes").mkdir()
        for name, text in recipe_files:
            (d / "recipes" / os.path.basename(name)).write_text(text, encoding="utf-8")
    ids: list[str] = []
    for job in jobs:
        script = d / job["name"]
        script.write_text(job["script"], encoding="utf-8")
        argv = list(job["argv"])
        argv.insert(2, f"--output={d.resolve()}/slurm-%j.out")
        if job.get("after_previous") and ids:
            argv.insert(2, f"--dependency=afterok:{ids[-1]}")
        argv.append(str(script))
        rc, out, err = _run(argv, timeout=30)
        job_id = out.strip().splitlines()[0].split(";")[0] if out.strip() else ""
        if rc != 0 or not job_id.isdigit():
            if ids:  # the stages already in would run untracked: take them back
                _run(["scancel", *ids])
            return {"error": "sbatch", "detail": err or out.strip(), "cancelled": ids}
        ids.append(job_id)
    return {"jobs": ids, "dir": str(d.resolve())}


def _jobcomp_lines(ids: set[str]) -> str:
    rc, out, _ = _run(["scontrol", "show", "config"])
    if rc != 0:
        return ""
    conf = dict(
        (k.strip(), v.strip()) for k, _, v in (ln.partition("=") for ln in out.splitlines())
    )
    if conf.get("JobCompType", "").strip() != "jobcomp/filetxt":
        return ""
    try:
        with open(conf.get("JobCompLoc", ""), "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - (4 << 20)))
            text = fh.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(ln for ln in text.splitlines() if ln.split(" ", 1)[0][6:] in ids)


def _last_step(d: Path) -> dict[str, Any] | None:
    """The newest events.jsonl line with a step and a loss (a copy of hostprobe's: this file
    is shipped to a login node on its own)."""
    try:
        with open(d / "events.jsonl", "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 65536))
            text = fh.read().decode("utf-8", errors="replace")
    except OSError:
        return None
    for line in reversed(text.splitlines()):
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if isinstance(item, dict) and "step" in item and "loss" in item:
            return {k: item.get(k) for k in ("step", "max_steps", "loss")}
    return None


def _run_dir_facts(run_dir: str) -> dict[str, Any]:
    d = Path(os.path.expanduser(run_dir))
    status = _read_json(d / "status.json")
    return {
        "found": d.is_dir(),
        "run_dir": str(d),
        "last": _last_step(d),
        "status": status if isinstance(status, dict) else None,
        "stop_reason": _text(d / STOP_REASON, 300),
        "stop_requested": (d / STOP_REQUESTED).exists(),
    }


def probe(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """squeue for every job of `runs` ({"id", "run_dir", "jobs"}); sacct, then the jobcomp
    file, for the ones squeue no longer lists; and each run directory's state files."""
    ids = {j for r in runs for j in r.get("jobs", [])}
    out: dict[str, Any] = {"squeue": "", "sacct": "", "jobcomp": "", "error": None}
    if ids:
        rc, text, err = _run(
            ["squeue", "-h", "-t", "all", "-o", SQUEUE_FORMAT, "-j", ",".join(ids)]
        )
        if rc != 0 and "Invalid job id" not in err:
            out["error"] = f"squeue failed: {err or f'exit {rc}'}"
        out["squeue"] = text
        listed = {ln.split("|", 1)[0] for ln in text.splitlines()}
        missing = ids - listed
        if missing and out["error"] is None:
            rc, text, err = _run(
                ["sacct", "-n", "-P", "-X", "-o", SACCT_FIELDS, "-j", ",".join(sorted(missing))]
            )
            out["sacct"] = text if rc == 0 else ""
            missing -= {ln.split("|", 1)[0] for ln in out["sacct"].splitlines()}
        if missing and out["error"] is None:
            out["jobcomp"] = _jobcomp_lines(missing)
    out["runs"] = {r["id"]: _run_dir_facts(r["run_dir"]) for r in runs}
    return out


def nodes(partition: str | None = None) -> dict[str, Any]:
    """sinfo per node (GPUs total and used) and the pending jobs per partition."""
    argv = ["sinfo", "-h", "-N", "-O", SINFO_FIELDS]
    rc, text, err = _run([*argv, "-p", partition] if partition else argv)
    if rc != 0:
        return {"error": f"sinfo failed: {err or f'exit {rc}'}"}
    rc2, queue, _ = _run(["squeue", "-h", "-t", "PENDING", "-o", "%P|%j|%i"])
    run_rc, running, _ = _run(["squeue", "-h", "-t", "RUNNING", "-o", "%N|%j|%i|%b"])
    return {
        "sinfo": text,
        "pending": queue if rc2 == 0 else "",
        "running": running if run_rc == 0 else "",
        "error": None,
    }


def _active(ids: list[str]) -> dict[str, str]:
    rc, text, _ = _run(["squeue", "-h", "-o", "%i|%T", "-j", ",".join(ids)])
    if rc != 0:
        return {}
    return dict(ln.split("|", 1) for ln in text.splitlines() if "|" in ln)


def stop(run_dir: str, jobs: list[str], grace_s: float = 30.0) -> dict[str, Any]:
    """Mark the stop as requested, cancel jobs not started yet, SIGTERM the running ones
    (`scancel --signal=TERM --full`: the batch shell and the whole run), and a plain
    `scancel` when they are still there after `grace_s`."""
    d = Path(os.path.expanduser(run_dir))
    if d.is_dir():
        (d / STOP_REQUESTED).write_text(f"{time.time()}\n")
    states = _active(jobs)
    running = [j for j, st in states.items() if st.strip() != "PENDING"]
    pending = [j for j, st in states.items() if st.strip() == "PENDING"]
    if pending:
        _run(["scancel", *pending])
    if running:
        _run(["scancel", "--signal=TERM", "--full", *running])
    killed = False
    deadline = time.monotonic() + grace_s
    while running and time.monotonic() < deadline:
        now = _active(running)
        if not any(st.strip() in ("RUNNING", "CONFIGURING") for st in now.values()):
            break
        time.sleep(0.2)
    else:
        if running:
            killed = True
            _run(["scancel", *running])
    status = _read_json(d / "status.json")
    if running and isinstance(status, dict) and status.get("state") not in FINAL:
        how = f"cancelled after {grace_s:g} s" if killed else "stopped by vlmtui stop"
        status.update(state="stopped", error=how, updated=time.time())
        _write_json(d / "status.json", status)
    return {"was_running": bool(running or pending), "killed": killed, "status": status}


def check(partition: str | None, runs_dir: str, python: str, srun_timeout: float) -> dict[str, Any]:
    """`vlmtui hosts check` for a cluster: commands found, partition, runs dir, srun probe."""
    out: dict[str, Any] = {
        c: shutil.which(c) for c in ("sinfo", "sbatch", "squeue", "scancel", "srun")
    }
    argv = ["sinfo", "-h", "-o", "%P"]
    rc, text, err = _run(argv)
    parts = [p.strip().rstrip("*") for p in text.split()]
    out["partitions"] = parts
    out["sinfo_error"] = None if rc == 0 else (err or f"exit {rc}")
    out["partition_ok"] = rc == 0 and (partition is None or partition in parts)
    d = Path(os.path.expanduser(runs_dir))
    try:
        d.mkdir(parents=True, exist_ok=True)
        probe_file = d / f".vlmtui-check-{os.getpid()}"
        probe_file.write_text("ok")
        probe_file.unlink()
        out["runs_dir_ok"], out["runs_dir_error"] = True, None
    except OSError as exc:
        out["runs_dir_ok"], out["runs_dir_error"] = False, str(exc)
    code = "import vlmtui,sys; print('vlmtui', vlmtui.__version__, sys.executable)"
    srun = ["srun", "--nodes=1", "--ntasks=1", "--time=1", "--quit-on-interrupt"]
    if partition:
        srun.append(f"--partition={partition}")
    rc, text, err = _run([*srun, os.path.expanduser(python), "-c", code], timeout=srun_timeout)
    out["srun_ok"] = rc == 0 and text.startswith("vlmtui ")
    out["srun_output"] = (text.strip() or err)[:300]
    return out


OPS: dict[str, Callable[..., dict[str, Any]]] = {
    "submit": submit,
    "probe": probe,
    "nodes": nodes,
    "stop": stop,
    "check": check,
}

if __name__ == "__main__":
    print(json.dumps(OPS[sys.argv[1]](**json.loads(sys.argv[2]))))
