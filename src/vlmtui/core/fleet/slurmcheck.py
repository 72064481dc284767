"""`vlmtui hosts check CLUSTER`: Slurm's commands, the partition, the runs dir, a compute node.

One call on the login node: `sinfo`/`sbatch`/`squeue`/`scancel`/`srun` on PATH, the
partition exists, the runs directory is writable, and a one-task `srun` imports vlmtui with
the host's Python on a compute node (the check that matters: jobs run there, not on the
login node). The result is `reachable` only when all of them pass.
"""

from __future__ import annotations

import time
from typing import Any

from vlmtui.core.fleet.hosts import Host, HostUnreachable
from vlmtui.core.fleet.slurmhost import require_slurm
from vlmtui.core.fleet.snapshot import HostCheck, HostGpus

SRUN_TIMEOUT_S = 60.0
COMMANDS = ("sinfo", "sbatch", "squeue", "scancel", "srun")


def _problems(raw: dict[str, Any], partition: str | None) -> list[str]:
    out = [f"{c} not found on PATH" for c in COMMANDS if not raw[c]]
    if raw["sinfo_error"]:
        out.append(f"sinfo failed: {raw['sinfo_error']}")
    elif not raw["partition_ok"]:
        have = ", ".join(raw["partitions"]) or "none"
        out.append(f"partition {partition!r} does not exist (partitions: {have})")
    if not raw["runs_dir_ok"]:
        out.append(f"runs dir is not writable: {raw['runs_dir_error']}")
    if not raw["srun_ok"]:
        out.append(f"vlmtui not importable on a compute node: {raw['srun_output']}")
    return out


def check_cluster(host: Host) -> HostCheck:
    cluster = require_slurm(host)
    partition = cluster.settings.partition
    runs_dir = cluster.launch_paths(".", ".", "x")[3].rsplit("/", 1)[0]
    payload = {
        "partition": partition,
        "runs_dir": runs_dir,
        "python": host.config.python,
        "srun_timeout": SRUN_TIMEOUT_S,
    }
    start = time.perf_counter()
    try:
        raw = cluster.slurm_call("check", payload, timeout=SRUN_TIMEOUT_S + 30)
    except HostUnreachable as exc:
        gpus = HostGpus(host.name, reachable=False, error=exc.why)
        return HostCheck(
            host.name, host.describe(), False, exc.why, None, None, host.config.python, gpus
        )
    latency = time.perf_counter() - start
    problems = _problems(raw, partition)
    version = None
    if raw["srun_ok"]:
        version = raw["srun_output"].split()[1] if len(raw["srun_output"].split()) > 1 else None
    details = (
        ("commands", ", ".join(f"{c} {'ok' if raw[c] else 'MISSING'}" for c in COMMANDS)),
        ("partition", f"{partition or '(default)'} {'ok' if raw['partition_ok'] else 'MISSING'}"),
        ("runs dir", f"{runs_dir} {'writable' if raw['runs_dir_ok'] else 'NOT writable'}"),
        ("compute node", raw["srun_output"] or "-"),
    )
    return HostCheck(
        name=host.name,
        where=host.describe(),
        reachable=not problems,
        error="; ".join(problems) or None,
        latency_s=latency,
        vlmtui_version=version,
        python=host.config.python,
        gpus=cluster.query_gpus(),
        details=details,
    )
