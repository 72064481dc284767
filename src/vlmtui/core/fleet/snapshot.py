"""GPU snapshots: frozen values of one query, with units in their names.

A UI renders the latest snapshot while the next query runs in a thread, so these types are
plain values with no I/O. `Gpu.state` is the one place that turns the numbers into the word
people see (free, busy, reserved), for the CLI and the app alike.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

GpuState = Literal["free", "busy", "reserved"]

CPU = "cpu"
"""The device name of "no GPU": every host can run on its CPU."""


@dataclass(frozen=True)
class FreeRule:
    """When a GPU counts as free for a new run (hosts.toml `[free]`, per host `[hosts.X.free]`)."""

    max_mem_used_mib: float = 1024.0
    """Memory in use must be below this (MiB)."""
    max_util_pct: float = 10.0
    """Utilisation must be below this (%)."""
    allow_processes: bool = False
    """False: any compute process (anyone's) makes the GPU busy."""
    unknown_memory_is_free: bool = False
    """False: a GPU whose memory use is not reported (`[N/A]`, as on a GB10) is not free:
    unknown is not free. A host whose GPUs never report it can opt in."""

    def is_free(self, gpu: Gpu) -> bool:
        """Unreported memory counts against the GPU (unless the host opts in); unreported
        utilisation does not; the reported values must pass."""
        if gpu.processes and not self.allow_processes:
            return False
        if gpu.mem_used_mib is None and not self.unknown_memory_is_free:
            return False
        if gpu.mem_used_mib is not None and gpu.mem_used_mib >= self.max_mem_used_mib:
            return False
        return not (gpu.util_pct is not None and gpu.util_pct >= self.max_util_pct)


@dataclass(frozen=True)
class GpuProcess:
    """A compute process on a GPU."""

    pid: int
    name: str | None = None
    """Command (process name or its command line); None when unknown."""
    user: str | None = None
    """Owner; None when unknown (nvidia-smi does not report it)."""
    gpu_mem_mib: float | None = None
    """GPU memory it uses (MiB)."""


@dataclass(frozen=True)
class Gpu:
    """One GPU at the moment of the query."""

    index: int
    """NVML / nvidia-smi index (PCI bus order; launches set CUDA_DEVICE_ORDER=PCI_BUS_ID)."""
    name: str
    uuid: str | None = None
    util_pct: float | None = None
    mem_used_mib: float | None = None
    mem_total_mib: float | None = None
    temp_c: float | None = None
    power_w: float | None = None
    processes: tuple[GpuProcess, ...] = ()
    free: bool = False
    """Free by the host's rule and not reserved by a run vlmtui just launched."""
    reserved_by: str | None = None
    """Id of the active vlmtui run placed on this GPU, if any."""

    @property
    def state(self) -> GpuState:
        """What a person is told: reserved by a vlmtui run, free by the host's rule, or busy."""
        if self.reserved_by:
            return "reserved"
        return "free" if self.free else "busy"

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "name": self.name,
            "uuid": self.uuid,
            "util": self.util_pct,
            "mem_used_mib": self.mem_used_mib,
            "mem_total_mib": self.mem_total_mib,
            "temp_c": self.temp_c,
            "power_w": self.power_w,
            "processes": [
                {"pid": p.pid, "name": p.name, "user": p.user, "gpu_mem_mib": p.gpu_mem_mib}
                for p in self.processes
            ],
            "free": self.free,
            "reserved_by": self.reserved_by,
        }


@dataclass(frozen=True)
class HostGpus:
    """GPU status of one host."""

    name: str
    """Host name (`local` or a hosts.toml name)."""
    reachable: bool
    error: str | None = None
    """Why the host could not be queried (ssh error, timeout); None when reachable."""
    gpus: tuple[Gpu, ...] = ()
    note: str | None = None
    """E.g. "no NVIDIA driver (…): runs use the CPU"."""
    source: str = ""
    """Where the numbers came from: `nvml`, `nvidia-smi`, `vlmtui` (remote), or `none`."""
    elapsed_s: float = 0.0
    """How long the query took."""
    devices: tuple[str, ...] = field(default=(CPU,))
    """What a run can be dispatched to: GPU indices as strings, then `cpu`."""

    def first_free(self, taken: Collection[int] = ()) -> Gpu | None:
        """What `--gpu auto` picks: the first free GPU not in `taken` (indices of GPUs other
        runs hold), or None when there is none (the run then goes to the CPU)."""
        return next((g for g in self.gpus if g.free and g.index not in taken), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "reachable": self.reachable,
            "error": self.error,
            "note": self.note,
            "source": self.source,
            "elapsed_s": round(self.elapsed_s, 3),
            "devices": list(self.devices),
            "gpus": [g.to_json() for g in self.gpus],
        }


def host_result(name: str, gpus: Sequence[Gpu], **kw: Any) -> HostGpus:
    return HostGpus(
        name=name,
        reachable=True,
        gpus=tuple(gpus),
        devices=(*(str(g.index) for g in gpus), CPU),
        **kw,
    )


def judge_free(gpus: Sequence[Gpu], rule: FreeRule) -> list[Gpu]:
    return [replace(g, free=rule.is_free(g)) for g in gpus]


def gpu_from_dict(d: Mapping[str, Any]) -> Gpu:
    """A Gpu from `to_json()`-shaped data (NVML snapshot or a remote vlmtui's JSON)."""
    return Gpu(
        index=int(d["index"]),
        name=str(d.get("name") or f"GPU {d['index']}"),
        uuid=d.get("uuid"),
        util_pct=d.get("util"),
        mem_used_mib=d.get("mem_used_mib"),
        mem_total_mib=d.get("mem_total_mib"),
        temp_c=d.get("temp_c"),
        power_w=d.get("power_w"),
        processes=tuple(
            GpuProcess(
                pid=int(p["pid"]),
                name=p.get("name"),
                user=p.get("user"),
                gpu_mem_mib=p.get("gpu_mem_mib"),
            )
            for p in d.get("processes") or ()
        ),
    )


@dataclass(frozen=True)
class HostCheck:
    """`vlmtui hosts check NAME`: can we reach it, which vlmtui it has, its GPUs."""

    name: str
    where: str
    """`this machine` or the ssh destination."""
    reachable: bool
    error: str | None
    latency_s: float | None
    """One round trip (`true`) over the shared connection, in seconds."""
    vlmtui_version: str | None
    """`vlmtui --version` there; None when the configured python lacks vlmtui."""
    python: str
    gpus: HostGpus
    details: tuple[tuple[str, str], ...] = ()
    """Kind-specific findings as (label, text): a cluster's commands, partition, runs dir,
    and the `srun` probe of vlmtui on a compute node."""

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "where": self.where,
            "reachable": self.reachable,
            "error": self.error,
            "latency_s": None if self.latency_s is None else round(self.latency_s, 4),
            "vlmtui_version": self.vlmtui_version,
            "python": self.python,
            "gpus": self.gpus.to_json(),
            "details": dict(self.details),
        }
