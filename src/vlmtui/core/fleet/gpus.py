"""Reading one machine's GPUs: local NVML, a remote `vlmtui gpus` JSON, or nvidia-smi CSV.

Fields a GPU does not report (`[N/A]`, `[Not Supported]`, an NVML "not supported" error) are
None, never an exception. A host without an NVIDIA driver is listed with no GPUs, a note and
the `cpu` device, so runs can still be dispatched there. Which of these paths a host takes is
the host's business (`hosts.Host.query_gpus`); querying many hosts at once is `status.py`.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Iterator, Sequence
from typing import IO, Any

from vlmtui.core.fleet import nvml
from vlmtui.core.fleet.snapshot import (
    FreeRule,
    Gpu,
    GpuProcess,
    HostGpus,
    gpu_from_dict,
    host_result,
    judge_free,
)

# subprocess and concurrent.futures are imported where used: a remote host runs this module
# on every refresh (`python -m vlmtui.core.gpus`), so its start-up time counts.

QUERY_GPU = "index,name,utilization.gpu,memory.used,memory.total,temperature.gpu,power.draw,uuid"
QUERY_APPS = "gpu_uuid,pid,process_name,used_memory"
SMI_FORMAT = "--format=csv,noheader,nounits"


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
        if name is not None and name.startswith("["):
            name = None  # `[Not Found]`, `[Insufficient Permissions]`: unknown, not a name
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


def smi_lost_gpus(gpu_csv: str) -> list[str]:
    """The lines of a `--query-gpu` output that are not GPU rows: nvidia-smi prints e.g.
    "Unable to determine the device handle for GPU 0000:0B:00.0: Unknown Error" for a GPU
    that fell off the bus, among the rows of the GPUs it could still read."""
    out = []
    for line in gpu_csv.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if line.strip() and not (len(parts) >= 8 and parts[0].isdigit()):
            out.append(line.strip()[:200])
    return out


def smi_result(name: str, gpu_csv: str, apps_csv: str, rule: FreeRule, **kw: Any) -> HostGpus:
    """A reachable host's GPUs from nvidia-smi output: the rows it could read, and a note
    naming every GPU it could not (the good rows are kept, whatever the exit code)."""
    gpus = judge_free(parse_smi(gpu_csv, apps_csv), rule)
    lost = smi_lost_gpus(gpu_csv)
    note = f"nvidia-smi lost {len(lost)} GPU(s): " + "; ".join(lost) if lost else None
    return host_result(name, gpus, source="nvidia-smi", note=note, **kw)


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
        gpus = judge_free([gpu_from_dict(d) for d in devices], rule)
        return host_result(name, gpus, source="nvml", elapsed_s=time.perf_counter() - start)
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
            if g.returncode == 0 or parse_smi(g.stdout):
                apps = a.stdout if a.returncode == 0 else ""
                elapsed = time.perf_counter() - start
                return smi_result(name, g.stdout, apps, rule, elapsed_s=elapsed)
            why = f"{why}; nvidia-smi: {(g.stdout + g.stderr).strip()[:200]}"
    return host_result(
        name,
        [],
        source="none",
        note=f"no NVIDIA GPU ({why}): runs use the CPU",
        elapsed_s=time.perf_counter() - start,
    )


_REMOTE_MARK = "@@vlmtui-gpus-fallback"


def remote_query_script(python_argv: Sequence[str]) -> str:
    """One round trip: the remote vlmtui's JSON if it has one, else nvidia-smi's CSV.

    The remote side runs `python -m vlmtui.core.gpus`, which prints what
    `vlmtui gpus --local --json` prints without building the whole CLI first."""
    from vlmtui.core.fleet.shell import join

    q_gpu, q_apps = _smi_argv("nvidia-smi")
    return (
        f"out=$({join([*python_argv, '-I', '-m', 'vlmtui.core.gpus'])} 2>/dev/null)"
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
            gpus = judge_free([gpu_from_dict(g) for g in host.get("gpus", [])], rule)
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            return host_result(name, [], source="none", note=f"unreadable GPU status ({exc})")
        note = host.get("note")
        return host_result(name, gpus, source="vlmtui", note=note)
    rest = text.split(_REMOTE_MARK, 1)[1]
    if "@@no-nvidia-smi" in rest:
        return host_result(
            name, [], source="none", note="no vlmtui and no nvidia-smi there: runs use the CPU"
        )
    gpu_part, _, after = rest.partition("@@rc ")
    rc, _, apps_part = after.partition("\n")
    apps_part = apps_part.split("@@end", 1)[0]
    if rc.strip() != "0" and not parse_smi(gpu_part):
        why = gpu_part.strip().splitlines()[-1:] or ["no output"]
        return host_result(
            name, [], source="none", note=f"nvidia-smi failed ({why[0][:200]}): runs use the CPU"
        )
    return smi_result(name, gpu_part, apps_part, rule)


def remote_watch_script(python_argv: Sequence[str], interval_s: float) -> str:
    """A stream of snapshots over one connection: the remote vlmtui's JSON lines if it has
    one, else nvidia-smi's CSV blocks ending in `@@end`, one every `interval_s`. It ends by
    itself on the first write after the client hangs up (SIGPIPE / BrokenPipeError)."""
    from vlmtui.core.fleet.shell import join

    py = [*python_argv, "-I"]
    q_gpu, q_apps = _smi_argv("nvidia-smi")
    every = f"{max(0.1, interval_s):g}"
    return (
        f"if {join([*py, '-c', 'import vlmtui.core.gpus'])} >/dev/null 2>&1; then\n"
        f"  exec {join([*py, '-m', 'vlmtui.core.gpus', '--watch', every])} 2>/dev/null\n"
        "fi\n"
        "while :; do\n"
        f"  echo {_REMOTE_MARK}\n"
        "  if command -v nvidia-smi >/dev/null 2>&1; then\n"
        f'    {join(q_gpu)} 2>&1; echo "@@rc $?"; {join(q_apps)} 2>/dev/null\n'
        "  else echo '@@no-nvidia-smi'; fi\n"
        f"  echo '@@end' || exit 0; sleep {every}\n"
        "done\n"
    )


def read_snapshots(
    stream: IO[bytes], name: str, rule: FreeRule, patience_s: float, stop: threading.Event
) -> Iterator[HostGpus]:
    """HostGpus from a `remote_watch_script` stream: one per JSON line, or one per
    nvidia-smi block ending in `@@end`. Ends at EOF, on `stop`, or after `patience_s`
    without a complete snapshot."""
    import os
    import selectors

    with selectors.DefaultSelector() as sel:
        sel.register(stream, selectors.EVENT_READ)
        buf, block = b"", b""
        deadline = time.monotonic() + patience_s
        while not stop.is_set():
            if not sel.select(timeout=min(0.5, max(0.0, deadline - time.monotonic()))):
                if time.monotonic() > deadline:
                    return
                continue
            chunk = os.read(stream.fileno(), 1 << 16)
            if not chunk:
                return
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                if not block and line.startswith(b"{"):
                    yield parse_remote_output(name, line.decode(errors="replace"), rule)
                elif line.strip() == b"@@end":
                    yield parse_remote_output(name, (block + line).decode(errors="replace"), rule)
                    block = b""
                else:
                    block += line + b"\n"
                    continue
                deadline = time.monotonic() + patience_s


def watch_local(interval_s: float) -> None:
    """`python -m vlmtui.core.gpus --watch S`: one JSON line per snapshot, every S seconds,
    until the reader goes away. NVML is initialised once, so a snapshot costs ~1 ms."""
    try:
        while True:
            print(json.dumps({"hosts": [local_gpus().to_json()]}), flush=True)
            time.sleep(interval_s)
    except (BrokenPipeError, KeyboardInterrupt):
        pass


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m vlmtui.core.gpus`: this machine's status as `vlmtui gpus --local --json`
    prints it; remote queries use it because it skips building the whole CLI (~3x faster).
    With `--watch S`, a stream of them (see `watch_local`)."""
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--watch"]:
        watch_local(float(args[1]) if len(args) > 1 else 1.0)
        return
    print(json.dumps({"hosts": [local_gpus().to_json()]}))


if __name__ == "__main__":
    main()
