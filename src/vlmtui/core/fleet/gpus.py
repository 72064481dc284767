"""GPU status of every host: local NVML, remote `vlmtui gpus --local --json` or nvidia-smi CSV.

The values are frozen snapshots (units in the field names) so a UI can render the latest one
while the next refresh runs in a thread. Fields a GPU does not report (`[N/A]`,
`[Not Supported]`, an NVML "not supported" error) are None, never an exception. A host
without an NVIDIA driver is listed with no GPUs, a note and the `cpu` device, so runs can
still be dispatched there.

All hosts are queried in parallel; each query is bounded by its host's timeout, and a host
that does not answer comes back `reachable=False` with the error instead of blocking.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from vlmtui.core.fleet import nvml

# subprocess and concurrent.futures are imported where used: a remote host runs this module
# on every refresh (`python -m vlmtui.core.gpus`), so its start-up time counts.

if TYPE_CHECKING:
    from vlmtui.core.fleet.hosts import Host

QUERY_GPU = "index,name,utilization.gpu,memory.used,memory.total,temperature.gpu,power.draw,uuid"
QUERY_APPS = "gpu_uuid,pid,process_name,used_memory"
SMI_FORMAT = "--format=csv,noheader,nounits"
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

    def is_free(self, gpu: Gpu) -> bool:
        """Unreported values (None) do not count against the GPU; the others must pass."""
        if gpu.processes and not self.allow_processes:
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


def _host_result(name: str, gpus: Sequence[Gpu], **kw: Any) -> HostGpus:
    return HostGpus(
        name=name,
        reachable=True,
        gpus=tuple(gpus),
        devices=(*(str(g.index) for g in gpus), CPU),
        **kw,
    )


def _judge(gpus: Sequence[Gpu], rule: FreeRule) -> list[Gpu]:
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


# --- nvidia-smi CSV -------------------------------------------------------------------------


def _num(text: str) -> float | None:
    """A CSV number; `[N/A]`, `[Not Supported]`, `N/A` and blanks are None."""
    text = text.strip()
    if not text or text.startswith("[") or text.upper() in ("N/A", "NA"):
        return None
    try:
        return float(text)
    except ValueError:
        return None


def parse_smi(gpu_csv: str, apps_csv: str = "") -> list[Gpu]:
    """GPUs from `--query-gpu=QUERY_GPU` and `--query-compute-apps=QUERY_APPS` CSV output."""
    procs: dict[str, list[GpuProcess]] = {}
    for line in apps_csv.splitlines():
        raw = line.split(",")
        parts = [p.strip() for p in raw]
        if len(parts) < 4 or not parts[1].isdigit():
            continue  # "No running processes found" and other chatter
        name = ",".join(raw[2:-1]).strip() or None  # a process name may hold commas
        procs.setdefault(parts[0], []).append(
            GpuProcess(pid=int(parts[1]), name=name, gpu_mem_mib=_num(parts[-1]))
        )
    gpus = []
    for line in gpu_csv.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 8 or not parts[0].isdigit():
            continue
        uuid = parts[-1] if parts[-1].startswith(("GPU-", "MIG-")) else None
        gpus.append(
            Gpu(
                index=int(parts[0]),
                name=",".join(line.split(",")[1:-6]).strip(),
                uuid=uuid,
                util_pct=_num(parts[-6]),
                mem_used_mib=_num(parts[-5]),
                mem_total_mib=_num(parts[-4]),
                temp_c=_num(parts[-3]),
                power_w=_num(parts[-2]),
                processes=tuple(procs.get(uuid or "", ())),
            )
        )
    return gpus


def _smi_argv(smi: str) -> tuple[list[str], list[str]]:
    return (
        [smi, f"--query-gpu={QUERY_GPU}", SMI_FORMAT],
        [smi, f"--query-compute-apps={QUERY_APPS}", SMI_FORMAT],
    )


# --- queries ----------------------------------------------------------------------------------


def local_gpus(rule: FreeRule | None = None, name: str = "local") -> HostGpus:
    """This machine: NVML, else an `nvidia-smi` on PATH, else no GPUs + a note + `cpu`."""
    rule = rule or FreeRule()
    start = time.perf_counter()
    devices, why = nvml.NVML.snapshot()
    if devices is not None:
        gpus = _judge([gpu_from_dict(d) for d in devices], rule)
        return _host_result(name, gpus, source="nvml", elapsed_s=time.perf_counter() - start)
    smi = shutil.which("nvidia-smi")
    if smi:
        import subprocess

        q_gpu, q_apps = _smi_argv(smi)
        try:
            g = subprocess.run(q_gpu, capture_output=True, text=True, timeout=15)
            a = subprocess.run(q_apps, capture_output=True, text=True, timeout=15)
        except (OSError, subprocess.TimeoutExpired) as exc:
            why = f"{why}; nvidia-smi: {exc}"
        else:
            if g.returncode == 0:
                gpus = _judge(parse_smi(g.stdout, a.stdout if a.returncode == 0 else ""), rule)
                elapsed = time.perf_counter() - start
                return _host_result(name, gpus, source="nvidia-smi", elapsed_s=elapsed)
            why = f"{why}; nvidia-smi: {(g.stdout + g.stderr).strip()[:200]}"
    return _host_result(
        name,
        [],
        source="none",
        note=f"no NVIDIA GPU ({why}): runs use the CPU",
        elapsed_s=time.perf_counter() - start,
    )


_REMOTE_MARK = "@@vlmtui-gpus-fallback"


def remote_query_script(host: Host) -> str:
    """One round trip: the remote vlmtui's JSON if it has one, else nvidia-smi's CSV.

    The remote side runs `python -m vlmtui.core.gpus`, which prints what
    `vlmtui gpus --local --json` prints without building the whole CLI first."""
    from vlmtui.core.fleet.shell import join

    q_gpu, q_apps = _smi_argv("nvidia-smi")
    return (
        f"out=$({join([*host.python_argv(), '-I', '-m', 'vlmtui.core.gpus'])} 2>/dev/null)"
        """ && [ -n "$out" ] && { printf '%s\\n' "$out"; exit 0; }\n"""
        f"echo {_REMOTE_MARK}\n"
        "command -v nvidia-smi >/dev/null 2>&1 || { echo '@@no-nvidia-smi'; exit 0; }\n"
        f'{join(q_gpu)} 2>&1; echo "@@rc $?"\n'
        f"{join(q_apps)} 2>/dev/null; echo '@@end'\n"
    )


def parse_remote_output(name: str, text: str, rule: FreeRule) -> HostGpus:
    """Turn `remote_query_script`'s output into a HostGpus (reachable)."""
    if _REMOTE_MARK not in text:
        try:
            data = json.loads(text)
            host = data["hosts"][0]
            gpus = _judge([gpu_from_dict(g) for g in host.get("gpus", [])], rule)
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            return _host_result(name, [], source="none", note=f"unreadable GPU status ({exc})")
        note = host.get("note")
        return _host_result(name, gpus, source="vlmtui", note=note)
    rest = text.split(_REMOTE_MARK, 1)[1]
    if "@@no-nvidia-smi" in rest:
        return _host_result(
            name, [], source="none", note="no vlmtui and no nvidia-smi there: runs use the CPU"
        )
    gpu_part, _, after = rest.partition("@@rc ")
    rc, _, apps_part = after.partition("\n")
    apps_part = apps_part.split("@@end", 1)[0]
    if rc.strip() != "0":
        why = gpu_part.strip().splitlines()[-1:] or ["no output"]
        return _host_result(
            name, [], source="none", note=f"nvidia-smi failed ({why[0][:200]}): runs use the CPU"
        )
    return _host_result(name, _judge(parse_smi(gpu_part, apps_part), rule), source="nvidia-smi")


def query_host(host: Host, timeout: float | None = None) -> HostGpus:
    """GPU status of one host (local or SSH), bounded by `timeout` (default: the host's)."""
    start = time.perf_counter()
    rule = host.config.free_rule
    if host.is_local:
        result = local_gpus(rule, host.name)
    else:
        res = host.run(remote_query_script(host), timeout=timeout or host.config.timeout)
        if res.transport_error:
            result = HostGpus(name=host.name, reachable=False, error=res.transport_error)
        else:
            result = parse_remote_output(host.name, res.stdout, rule)
    return replace(result, elapsed_s=time.perf_counter() - start)


def query_hosts(hosts: Sequence[Host], timeout: float | None = None) -> list[HostGpus]:
    """Every host in parallel; each bounded by its own timeout (or `timeout`). Input order."""
    if not hosts:
        return []
    from concurrent.futures import ThreadPoolExecutor
    from concurrent.futures import wait as wait_futures

    limit = timeout or max(h.config.timeout for h in hosts)
    pool = ThreadPoolExecutor(max_workers=len(hosts), thread_name_prefix="vlmtui-gpus")
    futures = [pool.submit(query_host, h, timeout) for h in hosts]
    wait_futures(futures, timeout=limit + 2.0)
    pool.shutdown(wait=False)
    out = []
    for host, fut in zip(hosts, futures, strict=True):
        if fut.done():
            out.append(fut.result())
        else:
            fut.cancel()
            out.append(HostGpus(host.name, reachable=False, error=f"timed out after {limit:g} s"))
    return out


def with_reservations(status: HostGpus, reserved: Mapping[int, str]) -> HostGpus:
    """Mark GPUs taken by active vlmtui runs (index -> run id) as reserved and not free."""
    if not reserved:
        return status
    gpus = tuple(
        replace(g, free=False, reserved_by=reserved[g.index]) if g.index in reserved else g
        for g in status.gpus
    )
    return replace(status, gpus=gpus)


def gpu_status(names: Sequence[str] | None = None, timeout: float | None = None) -> list[HostGpus]:
    """The `vlmtui gpus` view: named hosts (default all), queried in parallel, with the
    registry's reservations applied."""
    from vlmtui.core.fleet.hosts import all_hosts, get_host
    from vlmtui.core.fleet.runs import Registry

    hosts = [get_host(n) for n in names] if names else all_hosts()
    reserved = Registry().reservations()
    return [with_reservations(s, reserved.get(s.name, {})) for s in query_hosts(hosts, timeout)]


def main() -> None:
    """`python -m vlmtui.core.gpus`: this machine's status as `vlmtui gpus --local --json`
    prints it; remote queries use it because it skips building the whole CLI (~3x faster)."""
    print(json.dumps({"hosts": [local_gpus().to_json()]}))


if __name__ == "__main__":
    main()
