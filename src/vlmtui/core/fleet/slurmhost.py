"""A Slurm cluster as the third kind of `Host`: runs are submitted, Slurm places them.

Commands reach the login node like any host: in-process when this machine is the login
node (no `target`), else over the shared SSH connection. The Slurm side lives in
`onhost/slurmprobe.py` (submit, probe, nodes, stop, check), which `call_probe` runs there;
the hostprobe operations the registry uses (`probe`, `stop`) are answered from Slurm: a
run's probe facts carry a `decided` state (queued with Slurm's reason, running with
status.json's state, or a final one mapped from the job's end, see `slurmstate.py`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

from vlmtui.core.errors import BadInput, WorkFailed
from vlmtui.core.fleet import slurmstate
from vlmtui.core.fleet.host import Host, HostUnreachable, LocalHost, SshHost
from vlmtui.core.fleet.onhost import slurmprobe
from vlmtui.core.fleet.slurm import SlurmSettings
from vlmtui.core.fleet.snapshot import Gpu, HostGpus

WATCH_MIN_S = 10.0


class SlurmHost(Host):
    """A cluster reached through its login node (this machine, or over SSH)."""

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self._via: Host = LocalHost(config) if config.is_local else SshHost(config)

    @property
    def kind(self) -> str:
        return "slurm"

    @property
    def settings(self) -> SlurmSettings:
        return self.config.slurm or SlurmSettings()

    def describe(self) -> str:
        where = "this machine" if self.config.is_local else self._via.describe()
        return f"Slurm via {where}"

    def _argv(self, script: str) -> list[str]:
        return self._via._argv(script)

    def _transport_error(self, returncode: int, stderr: str) -> str | None:
        return self._via._transport_error(returncode, stderr)

    def close(self) -> None:
        self._via.close()

    def master_pid(self) -> int | None:
        return self._via.master_pid()

    def read_bytes(self, path: str, offset: int, n: int) -> bytes:
        return self._via.read_bytes(path, offset, n)

    def size(self, path: str) -> int | None:
        return self._via.size(path)

    def launch_paths(self, model: str, data: str, run_id: str) -> tuple[str, str, str, str]:
        return self._via.launch_paths(model, data, run_id)

    @property
    def needs_recipe_files(self) -> bool:
        return self._via.needs_recipe_files

    def slurm_call(self, op: str, payload: dict[str, Any], timeout: float | None = None) -> Any:
        """`slurmprobe.OPS[op](**payload)` on the login node."""
        if self.config.is_local:
            return slurmprobe.OPS[op](**payload)
        return self.run_shipped(slurmprobe, op, payload, timeout)

    def call_probe(self, op: str, payload: dict[str, Any], timeout: float | None = None) -> Any:
        if op == "probe":
            return self._probe(payload["runs"], timeout)
        if op == "scan":  # run directories on the shared storage, read from the login node
            return self._via.call_probe(op, payload, timeout)
        if op == "stop":
            jobs = [j for j in (payload.get("job") or "").split(",") if j]
            out = self.slurm_call(
                "stop",
                {"run_dir": payload["run_dir"], "jobs": jobs, "grace_s": payload["grace_s"]},
                timeout,
            )
            status = out.get("status") or {}
            if status.get("state") == "stopped":
                # the trainer says which signal; the user wants to know who sent it
                out["status"] = {**status, "error": "stopped by vlmtui stop"}
            return {**out, "last": None}
        raise WorkFailed(f"{op} is not available on the Slurm host {self.name}")

    def _probe(self, runs: list[dict[str, Any]], timeout: float | None) -> dict[str, Any]:
        payload = [
            {"id": r["id"], "run_dir": r["run_dir"], "jobs": (r.get("job") or "").split(",")}
            for r in runs
        ]
        for p in payload:
            p["jobs"] = [j for j in p["jobs"] if j]
        raw = self.slurm_call("probe", {"runs": payload}, timeout)
        if raw.get("error"):
            raise HostUnreachable(self.name, raw["error"])
        wanted = {j for p in payload for j in p["jobs"]}
        known = {
            **slurmstate.parse_jobcomp(raw.get("jobcomp", ""), wanted),
            **slurmstate.parse_sacct(raw.get("sacct", "")),
            **slurmstate.parse_squeue(raw.get("squeue", "")),
        }
        out: dict[str, Any] = {}
        for p in payload:
            facts = raw["runs"].get(p["id"], {})
            state, why = slurmstate.judge_slurm(p["jobs"], known, facts)
            facts["decided"] = {"state": state, "error": why}
            out[p["id"]] = facts
        return {"runs": out, "time": time.time()}

    def watch_gpus(self, interval_s: float, stop: threading.Event) -> Iterator[HostGpus]:
        # One sinfo + squeue per refresh, no faster than every WATCH_MIN_S: on a shared
        # cluster every query lands on slurmctld, which serves everyone.
        while not stop.is_set():
            yield self.query_gpus()
            stop.wait(max(interval_s, WATCH_MIN_S))

    def query_gpus(self, timeout: float | None = None) -> HostGpus:
        start = time.perf_counter()
        try:
            raw = self.slurm_call("nodes", {"partition": self.settings.partition}, timeout)
        except (HostUnreachable, WorkFailed) as exc:
            why = exc.why if isinstance(exc, HostUnreachable) else str(exc)
            return HostGpus(self.name, reachable=False, error=why)
        if raw.get("error"):
            return HostGpus(self.name, reachable=False, error=raw["error"])
        status = cluster_gpus(self.name, raw, self.settings.gres.split(":")[0])
        return HostGpus(
            name=status.name, reachable=True, error=None, gpus=status.gpus, note=status.note,
            source="slurm", elapsed_s=time.perf_counter() - start, devices=(),
        )  # fmt: skip


def _vlmtui_gpus_per_node(running: str) -> dict[str, int]:
    """GPUs that running vlmtui jobs hold, per node (from `squeue -o %N|%j|%i|%b`)."""
    out: dict[str, int] = {}
    for line in running.splitlines():
        parts = line.split("|")
        if len(parts) < 4 or not parts[1].startswith("vlmtui-"):
            continue
        count = slurmstate.gres_count(parts[3].replace("gres/", "").replace("gres:", ""))
        for node in parts[0].split(","):
            out[node] = out.get(node, 0) + count
    return out


def cluster_gpus(name: str, raw: dict[str, Any], gres_name: str = "gpu") -> HostGpus:
    """The cluster's GPUs, one `Gpu` per GPU of each node (named after the node), and a
    note per node: state, allocated/total, how many vlmtui holds; plus pending jobs."""
    nodes = slurmstate.parse_sinfo_nodes(raw.get("sinfo", ""), gres_name)
    ours = _vlmtui_gpus_per_node(raw.get("running", ""))
    pending: dict[str, int] = {}
    for line in raw.get("pending", "").splitlines():
        part = line.split("|", 1)[0].strip()
        if part:
            pending[part] = pending.get(part, 0) + 1
    gpus: list[Gpu] = []
    notes = []
    for node in nodes:
        for i in range(node.gpus_total):
            used = i < node.gpus_used
            mine = i < ours.get(node.node, 0)
            gpus.append(
                Gpu(
                    index=len(gpus),
                    name=f"{node.node} {gres_name}{i}",
                    free=not used and node.state in ("idle", "mixed"),
                    reserved_by="vlmtui job" if mine else ("slurm job" if used else None),
                )
            )
        notes.append(
            f"{node.node} {node.state} {node.gpus_used}/{node.gpus_total} GPUs allocated"
            f" ({ours.get(node.node, 0)} by vlmtui) [{','.join(node.partitions)}]"
        )
    queue = ", ".join(f"{p}: {n} pending" for p, n in sorted(pending.items())) or "no pending jobs"
    note = "; ".join([*notes, queue])
    return HostGpus(name=name, reachable=True, gpus=tuple(gpus), note=note, source="slurm")


def require_slurm(host: Host) -> SlurmHost:
    if not isinstance(host, SlurmHost):
        raise BadInput(f'host {host.name} is not a Slurm host (kind = "slurm" in hosts.toml)')
    return host
