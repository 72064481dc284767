"""Reading Slurm's answers: squeue, sacct and jobcomp lines, sinfo nodes; the run state.

A run on a cluster is one job per stage. Its state comes from, in order of trust:

1. a final state in the run directory's status.json, with the reason the batch shell noted
   for a SIGTERM (`stop_reason`: a `vlmtui stop`, the time limit, a cancel);
2. the newest job Slurm still remembers: `squeue` (PENDING -> `queued` with Slurm's reason
   and estimated start; RUNNING -> status.json's state), then `sacct` when accounting
   exists, then the jobcomp file; a final Slurm state maps to finished / failed / stopped;
3. the run directory alone when no source remembers the job.

A later stage whose dependency can never be met is `failed` with "stage N failed", never
queued forever.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

FINAL = ("finished", "failed", "stopped")
SLURM_FINAL = {
    "COMPLETED": ("finished", None),
    "FAILED": ("failed", "job failed"),
    "CANCELLED": ("failed", "cancelled (scancel or an administrator)"),
    "TIMEOUT": ("stopped", "time limit"),
    "OUT_OF_MEMORY": ("failed", "out of memory (Slurm OUT_OF_MEMORY)"),
    "NODE_FAIL": ("failed", "node failure (Slurm NODE_FAIL)"),
    "BOOT_FAIL": ("failed", "node boot failure (Slurm BOOT_FAIL)"),
    "DEADLINE": ("failed", "deadline reached (Slurm DEADLINE)"),
    "PREEMPTED": ("stopped", "preempted"),
}
ACTIVE = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED", "RESIZING"}
SQUEUE_FORMAT = "%i|%T|%r|%S|%N|%j"
SINFO_FIELDS = "NodeList:|,StateLong:|,Gres:|,GresUsed:|,Partition:|,CPUsState:"


@dataclass(frozen=True)
class JobInfo:
    """What Slurm says about one job."""

    job_id: str
    state: str
    """Slurm's state word (PENDING, RUNNING, COMPLETED, CANCELLED, ...)."""
    reason: str | None = None
    start: str | None = None
    """Estimated (PENDING) or actual start time, as Slurm prints it."""
    nodes: str | None = None
    exit_code: str | None = None
    source: str = "squeue"

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _clean(value: str) -> str | None:
    value = value.strip()
    return None if value in ("", "N/A", "None", "(null)", "n/a", "Unknown") else value


def parse_squeue(text: str) -> dict[str, JobInfo]:
    """Lines of `squeue -h -o SQUEUE_FORMAT` by job id."""
    out = {}
    for line in text.splitlines():
        parts = line.split("|")
        if len(parts) < 5 or not parts[0].strip():
            continue
        job, state, reason, start, nodes = (p.strip() for p in parts[:5])
        out[job] = JobInfo(job, state.split()[0], _clean(reason), _clean(start), _clean(nodes))
    return out


def parse_sacct(text: str) -> dict[str, JobInfo]:
    """`sacct -n -P -X -o JobIDRaw,State,ExitCode,Start,NodeList` by job id."""
    out = {}
    for line in text.splitlines():
        parts = line.split("|")
        if len(parts) < 3 or not parts[0].strip().isdigit():
            continue
        job = parts[0].strip()
        state = parts[1].split()[0] if parts[1].strip() else "UNKNOWN"
        start = _clean(parts[3]) if len(parts) > 3 else None
        nodes = _clean(parts[4]) if len(parts) > 4 else None
        out[job] = JobInfo(job, state, None, start, nodes, parts[2].strip(), "sacct")
    return out


def parse_jobcomp(text: str, wanted: Iterable[str]) -> dict[str, JobInfo]:
    """`jobcomp/filetxt` lines (`JobId=… JobState=… ExitCode=…`) of the wanted jobs; the last
    line of a job wins (a requeued job has several)."""
    wanted = set(wanted)
    out = {}
    for line in text.splitlines():
        fields = dict(item.split("=", 1) for item in line.split() if "=" in item)
        job = fields.get("JobId", "")
        if job in wanted:
            out[job] = JobInfo(
                job,
                fields.get("JobState", "UNKNOWN"),
                None,
                _clean(fields.get("StartTime", "")),
                _clean(fields.get("NodeList", "")),
                fields.get("ExitCode"),
                "jobcomp",
            )
    return out


@dataclass(frozen=True)
class NodeGpus:
    """One node of the cluster: GPUs configured and allocated, state, partitions."""

    node: str
    state: str
    partitions: tuple[str, ...]
    gpus_total: int
    gpus_used: int
    gres: str
    cpus: str = ""
    """`allocated/idle/other/total`."""

    def to_json(self) -> dict[str, Any]:
        return {**self.__dict__, "partitions": list(self.partitions)}


def gres_count(gres: str, name: str = "gpu") -> int:
    """GPUs in a Gres/GresUsed string: `gpu:4`, `gpu:a100:4(S:0-1)`, `gpu:a100:2(IDX:0-1),...`."""
    total = 0
    for item in gres.split(","):
        item = item.split("(", 1)[0].strip()
        parts = item.split(":")
        if parts[0] != name or len(parts) < 2:
            continue
        count = parts[-1]
        if count.isdigit():
            total += int(count)
    return total


def parse_sinfo_nodes(text: str, gres_name: str = "gpu") -> list[NodeGpus]:
    """`sinfo -h -N -O SINFO_FIELDS`: one line per node and partition; merged per node."""
    nodes: dict[str, NodeGpus] = {}
    for line in text.splitlines():
        parts = [p.strip() for p in line.split("|")]
        if len(parts) < 5 or not parts[0]:
            continue
        name, state, gres, used, part = parts[:5]
        cpus = parts[5] if len(parts) > 5 else ""
        part = part.rstrip("*")
        if name in nodes:
            prev = nodes[name]
            nodes[name] = NodeGpus(
                name, prev.state, (*prev.partitions, part), prev.gpus_total, prev.gpus_used,
                prev.gres, prev.cpus,
            )  # fmt: skip
            continue
        nodes[name] = NodeGpus(
            name, state, (part,), gres_count(gres, gres_name), gres_count(used, gres_name),
            gres, cpus,
        )  # fmt: skip
    return list(nodes.values())


def queue_text(job: JobInfo) -> str:
    """`Priority, est. start 2026-11-29T01:10:00` for a pending job."""
    reason = job.reason or "waiting for the scheduler"
    return f"{reason}, est. start {job.start}" if job.start else reason


def _current(jobs: Sequence[str], known: Mapping[str, JobInfo]) -> tuple[int, JobInfo | None]:
    """(index, info) of the stage the run is at: the first job not COMPLETED (an earlier
    stage Slurm has forgotten counts as done when a later one is known)."""
    for i, job in enumerate(jobs):
        info = known.get(job)
        if info is None:
            if any(known.get(j) for j in jobs[i + 1 :]):
                continue
            return i, None
        if info.state != "COMPLETED" or i == len(jobs) - 1:
            return i, info
    return len(jobs) - 1, known.get(jobs[-1]) if jobs else None


CANCELLED_TEXT = "cancelled outside vlmtui (scancel or an administrator)"


def _stopped(
    info: JobInfo | None, reason: str | None, requested: bool, error: str | None
) -> tuple[str, str | None]:
    """A run that ended on a signal. Only Slurm's final word tells a cancel (failed) from a
    time limit or a `vlmtui stop` (stopped), so while the job is still ending it is `saving`."""
    if requested:
        return "stopped", reason or "stopped by vlmtui stop"
    if info is not None and info.state == "PENDING":  # requeued: it resumes when it runs
        return "queued", f"requeued; {queue_text(info)}"
    if info is not None and info.state in ACTIVE:
        return "saving", None
    if info is not None and info.state == "CANCELLED":
        return "failed", f"{CANCELLED_TEXT} (job {info.job_id} CANCELLED)"
    if info is not None and info.state == "TIMEOUT":
        return "stopped", f"time limit (job {info.job_id} TIMEOUT)"
    return "stopped", reason or error


def _from_status(
    status: Mapping[str, Any], facts: Mapping[str, Any], info: JobInfo | None, stage: int,
    stages: int,
) -> tuple[str, str | None]:  # fmt: skip
    """A final state the run wrote; `stage`: the one Slurm was at (status.json may say)."""
    state, error = status["state"], status.get("error")
    if state == "stopped":
        return _stopped(info, facts.get("stop_reason"), bool(facts.get("stop_requested")), error)
    written = status.get("stage")
    stage = written if isinstance(written, int) else stage
    if state == "failed" and stage < stages:
        return "failed", f"stage {stage} failed: {error}"
    return state, error


def judge_slurm(
    jobs: Sequence[str],
    known: Mapping[str, JobInfo],
    facts: Mapping[str, Any],
) -> tuple[str, str | None]:
    """(state, error or queue reason) of a run with these job ids (one per stage).

    `known`: what squeue/sacct/jobcomp said about them; `facts`: the run directory
    (`status`, `stop_reason`, `stop_requested`, `found`)."""
    status = facts.get("status") or {}
    state = status.get("state")
    index, info = _current(jobs, known)
    if state in FINAL:
        return _from_status(status, facts, info, index + 1, len(jobs))
    if info is None:
        if not facts.get("found"):
            return "unknown", "Slurm does not know the job and the run directory is missing"
        return "unknown", "Slurm no longer knows the job and the run directory has no final state"
    if info.state == "PENDING":
        if info.reason and "DependencyNeverSatisfied" in info.reason:
            return "failed", f"stage {index} failed"
        if index > 0 and info.reason == "Dependency":
            return "queued", f"waiting for stage {index} (job {jobs[index - 1]})"
        return "queued", queue_text(info)
    if info.state in ("SUSPENDED", "REQUEUED"):
        return "queued", info.state.lower()
    if info.state in ACTIVE:
        return (state if state and state != "pending" else "loading"), None
    return _final_from_slurm(jobs, index, info, facts)


def _final_from_slurm(
    jobs: Sequence[str], index: int, info: JobInfo, facts: Mapping[str, Any]
) -> tuple[str, str | None]:
    """A job Slurm lists as ended while the run directory holds no final state."""
    if info.state == "CANCELLED" and index > 0 and info.nodes is None:
        return "failed", f"stage {index} failed"  # cancelled before it ran: its dependency
    mapped, why = SLURM_FINAL.get(info.state, ("failed", f"Slurm state {info.state}"))
    detail = f"job {info.job_id} {info.state}"
    if info.exit_code and info.exit_code != "0:0":
        detail += f", exit {info.exit_code}"
    if mapped == "finished":
        if index < len(jobs) - 1:
            return "failed", f"stage {index + 2} never ran ({detail})"
        return "failed", f"{detail} without a final state in status.json"
    if facts.get("stop_requested"):
        mapped, text = "stopped", f"stopped by vlmtui stop ({detail})"
    elif info.state == "CANCELLED":
        text = f"{CANCELLED_TEXT} ({detail})"
    else:
        text = f"{facts.get('stop_reason') or why} ({detail})"
    if len(jobs) > 1 and index < len(jobs) - 1:
        text = f"stage {index + 1} {'failed' if mapped == 'failed' else 'stopped'}: {text}"
    return mapped, text
