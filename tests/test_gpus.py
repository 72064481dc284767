"""GPU status: NVML (faked: this machine has no NVIDIA GPU), nvidia-smi CSV parsing of the
recorded outputs in fixtures/nvidia-smi, the free rule, reservations, parallel queries."""

from __future__ import annotations

import json
import os
import sys
import time
from types import SimpleNamespace

import pynvml
import pytest

from sshd import NVIDIA_SMI_DIR
from vlmtui.cli import main
from vlmtui.core.fleet import nvml as nvml_mod
from vlmtui.core.fleet.gpus import local_gpus, parse_smi
from vlmtui.core.fleet.hosts import HostConfig, SshHost, get_host, save_host
from vlmtui.core.fleet.registry import Registry, RunRecord
from vlmtui.core.fleet.snapshot import FreeRule, Gpu, GpuProcess
from vlmtui.core.fleet.status import query_hosts


def recorded(scenario: str) -> tuple[str, str]:
    return (
        (NVIDIA_SMI_DIR / f"{scenario}.gpu.csv").read_text(),
        (NVIDIA_SMI_DIR / f"{scenario}.apps.csv").read_text(),
    )


def test_parse_recorded_a100x4():
    gpus = parse_smi(*recorded("a100x4"))
    assert [g.index for g in gpus] == [0, 1, 2, 3]
    g0, g1, g2, g3 = gpus
    assert g0.name == "NVIDIA A100-SXM4-80GB" and g0.uuid.startswith("GPU-5b2e")
    assert (g0.util_pct, g0.mem_used_mib, g0.mem_total_mib, g0.temp_c, g0.power_w) == (
        0.0, 4.0, 81920.0, 31.0, 61.08,
    )  # fmt: skip
    assert g1.processes == (GpuProcess(48213, "/opt/conda/bin/python", None, 71208.0),)
    assert g2.processes[0].pid == 50977 and not g0.processes and not g3.processes
    assert g3.power_w is None  # [N/A]
    rule = FreeRule()
    assert [rule.is_free(g) for g in gpus] == [True, False, False, True]


def test_parse_recorded_not_available_fields():
    g0, g1 = parse_smi(*recorded("mixed"))
    assert g0.util_pct is None and g0.power_w is None and g0.mem_used_mib == 312
    assert g1.util_pct is None and g1.mem_used_mib is None and g1.temp_c is None
    assert g1.mem_total_mib == 40960
    xorg, py = g0.processes
    assert xorg.gpu_mem_mib is None  # [N/A]
    assert py.name == "/home/ann/venv, with comma/bin/python" and py.gpu_mem_mib == 288
    assert not FreeRule().is_free(g0)  # someone's processes
    assert FreeRule(allow_processes=True).is_free(g0)
    # Memory not reported (as on a GB10): unknown is not free, unless the host opts in.
    assert not FreeRule().is_free(g1)
    assert FreeRule(unknown_memory_is_free=True).is_free(g1)


# Lines in the shape real machines print them. The lost-GPU line is the one quoted in
# NVIDIA/open-gpu-kernel-modules#387 and NVIDIA/nvidia-docker#1553 ("Unable to determine the
# device handle for GPU 0000:0B:00.0: Unknown Error"), printed among the rows of the GPUs
# nvidia-smi could still read; `[Not Found]` is what --query-compute-apps prints for a
# process name it cannot read (another container's process).
LOST_GPU_CSV = (
    "0, NVIDIA GeForce RTX 2080 Ti, 3, 10, 11264, 35, 21.50, GPU-67a571b1-79ee-1016-8ea3-c1ff\n"
    "Unable to determine the device handle for GPU 0000:0B:00.0: Unknown Error\n"
    "2, NVIDIA GeForce RTX 2080 Ti, 0, 10, 11264, 33, 9.80, GPU-2d540dd6-583b-cf11-80dd-cc28\n"
)
NOT_FOUND_APPS = "GPU-67a571b1-79ee-1016-8ea3-c1ff, 4242, [Not Found], 512\n"


def test_a_lost_gpu_keeps_the_good_rows_and_is_reported() -> None:
    from vlmtui.core.fleet.gpus import smi_result

    status = smi_result("box", LOST_GPU_CSV, NOT_FOUND_APPS, FreeRule())
    assert [g.index for g in status.gpus] == [0, 2]
    assert status.note and "lost 1 GPU(s)" in status.note and "0000:0B:00.0" in status.note
    (proc,) = status.gpus[0].processes
    assert proc.pid == 4242 and proc.name is None  # [Not Found] is unknown, not a name


def test_remote_output_with_a_failed_gpu_keeps_the_others() -> None:
    from vlmtui.core.fleet.gpus import parse_remote_output

    text = f"@@vlmtui-gpus-fallback\n{LOST_GPU_CSV}@@rc 15\n{NOT_FOUND_APPS}@@end\n"
    status = parse_remote_output("box", text, FreeRule())
    assert status.reachable and [g.index for g in status.gpus] == [0, 2]
    assert "Unable to determine the device handle" in (status.note or "")


def test_parse_ignores_chatter():
    assert parse_smi("No devices were found\n", "No running processes found\n") == []


def test_free_rule_thresholds():
    g = Gpu(index=0, name="x", util_pct=9.0, mem_used_mib=1000.0)
    assert FreeRule().is_free(g)
    assert not FreeRule(max_util_pct=5).is_free(g)
    assert not FreeRule(max_mem_used_mib=512).is_free(g)


@pytest.fixture
def fresh_nvml(monkeypatch):
    nvml = nvml_mod._Nvml()
    monkeypatch.setattr(nvml_mod, "NVML", nvml)
    monkeypatch.delenv("VLMTUI_NVML", raising=False)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # no nvidia-smi
    return nvml


def test_no_driver_lists_host_without_gpus_and_with_cpu(fresh_nvml, monkeypatch):
    def no_library():
        raise pynvml.NVMLError(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)

    monkeypatch.setattr(pynvml, "nvmlInit", no_library)
    status = local_gpus()
    assert status.reachable and status.gpus == () and status.devices == ("cpu",)
    assert status.source == "none" and "runs use the CPU" in status.note
    assert "Not Found" in status.note


def test_nvml_module_missing(fresh_nvml, monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)
    status = local_gpus()
    assert status.gpus == () and "nvidia-ml-py is not installed" in status.note


def _fake_nvml(n_gpus: int) -> SimpleNamespace:
    """A pynvml stand-in: device 1 does not support power readings."""
    unsupported = pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
    calls = {"init": 0}

    def init():
        calls["init"] += 1

    def power(h):
        if h == 1:
            raise unsupported
        return 61500

    mib = 2**20
    return SimpleNamespace(
        NVMLError=pynvml.NVMLError,
        NVML_TEMPERATURE_GPU=0,
        calls=calls,
        nvmlInit=init,
        nvmlShutdown=lambda: None,
        nvmlDeviceGetCount=lambda: n_gpus,
        nvmlDeviceGetHandleByIndex=lambda i: i,
        nvmlDeviceGetName=lambda h: b"NVIDIA H100 80GB HBM3",
        nvmlDeviceGetUUID=lambda h: f"GPU-{h}",
        nvmlDeviceGetUtilizationRates=lambda h: SimpleNamespace(gpu=50 * h, memory=0),
        nvmlDeviceGetMemoryInfo=lambda h: SimpleNamespace(
            used=(3 + 5000 * h) * mib, total=81559 * mib
        ),
        nvmlDeviceGetTemperature=lambda h, kind: 40 + h,
        nvmlDeviceGetPowerUsage=power,
        nvmlDeviceGetComputeRunningProcesses=lambda h: (
            [SimpleNamespace(pid=os.getpid(), usedGpuMemory=4096 * mib)] if h == 1 else []
        ),
    )


def test_nvml_snapshot_through_one_choke_point(fresh_nvml, monkeypatch):
    fake = _fake_nvml(2)
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    status = local_gpus()
    local_gpus()
    assert fake.calls["init"] == 1  # lazy, once
    assert status.source == "nvml" and status.devices == ("0", "1", "cpu")
    g0, g1 = status.gpus
    assert g0.name == "NVIDIA H100 80GB HBM3" and g0.power_w == 61.5 and g0.free
    assert g1.power_w is None  # NotSupported -> None, not an exception
    assert g1.util_pct == 50 and round(g1.mem_used_mib) == 5003 and not g1.free
    (proc,) = g1.processes
    assert proc.pid == os.getpid() and proc.gpu_mem_mib == 4096 and "python" in proc.name
    assert proc.user  # read from /proc


def test_local_falls_back_to_nvidia_smi_on_path(fake_local_gpus):
    fake_local_gpus("a100x4")
    status = local_gpus()
    assert status.source == "nvidia-smi" and len(status.gpus) == 4
    assert [g.free for g in status.gpus] == [True, False, False, True]


def test_local_nvidia_smi_without_driver(fake_local_gpus):
    fake_local_gpus("nodriver")
    status = local_gpus()
    assert status.gpus == () and "couldn't communicate with the NVIDIA driver" in status.note


def test_cli_gpus_json_shape_and_reservations(fake_local_gpus, capsys):
    fake_local_gpus("a100x4")
    Registry().add(
        RunRecord(id="r-1", recipe="r1-llm-only", host="local", gpus="3", run_dir="/x",
                  created=time.time(), state="training")
    )  # fmt: skip
    assert main(["gpus", "--json"]) == 0
    (host,) = json.loads(capsys.readouterr().out)["hosts"]
    assert {"name", "reachable", "error", "gpus"} <= set(host)
    assert host["name"] == "local" and host["reachable"] and host["error"] is None
    g = host["gpus"][0]
    assert {"index", "name", "util", "mem_used_mib", "mem_total_mib", "processes", "free"} <= set(g)
    assert [g["free"] for g in host["gpus"]] == [True, False, False, False]
    assert host["gpus"][3]["reserved_by"] == "r-1"
    assert host["gpus"][1]["processes"][0]["pid"] == 48213


class SlowScriptHost(SshHost):
    """The SSH kind's query path with its transport swapped for a local sh that first sleeps:
    a slow remote host, without an sshd per host."""

    def __init__(self, name: str, delay_s: float, timeout: float = 10.0) -> None:
        config = HostConfig(name=name, target="slow", python=sys.executable, timeout=timeout)
        super().__init__(config)
        self.delay_s = delay_s

    def _argv(self, script: str) -> list[str]:
        return ["/bin/sh", "-c", f"sleep {self.delay_s}\n{script}"]


def test_hosts_are_queried_in_parallel_each_bounded_by_its_timeout(fake_local_gpus):
    fake_local_gpus("a100x4")
    hosts = [SlowScriptHost(f"h{i}", 1.0) for i in range(4)]
    hosts.append(SlowScriptHost("hung", 60.0, timeout=1.5))
    start = time.monotonic()
    results = query_hosts(hosts)
    elapsed = time.monotonic() - start
    assert elapsed < 4.0  # in series: > 4 s for the first four alone, plus the hung one
    assert [r.name for r in results] == ["h0", "h1", "h2", "h3", "hung"]
    assert all(r.reachable and len(r.gpus) == 4 and r.source == "vlmtui" for r in results[:4])
    assert not results[4].reachable and "timed out after 1.5 s" in results[4].error


@pytest.mark.ssh
def test_remote_gpus_through_remote_vlmtui(ssh_host, capsys):
    assert main(["gpus", "--host", ssh_host.name, "--json"]) == 0
    (host,) = json.loads(capsys.readouterr().out)["hosts"]
    assert host["reachable"] and host["source"] == "vlmtui"
    assert [g["free"] for g in host["gpus"]] == [True, False, False, True]


@pytest.mark.ssh
@pytest.mark.parametrize("scenario", ["a100x4", "mixed", "nodriver"])
def test_remote_gpus_through_nvidia_smi_when_no_vlmtui_there(ssh_host, sshd_server, scenario):
    # The host's python has no vlmtui, so the query falls back to nvidia-smi's CSV (the
    # stand-in on that host's PATH: this machine has no GPU).
    table = sshd_server.host_table(ssh_host.workdir, python="/usr/bin/python3")
    table["env"] = {**table["env"], "NVIDIA_SMI_SCENARIO": scenario}
    save_host("plain", **table)
    status = get_host("plain").query_gpus()
    assert status.reachable
    if scenario == "nodriver":
        assert status.gpus == () and "couldn't communicate" in status.note
        assert status.devices == ("cpu",)
        return
    assert status.source == "nvidia-smi"
    expected = parse_smi(*recorded(scenario))
    assert [g.index for g in status.gpus] == [g.index for g in expected]
    assert [(g.util_pct, g.mem_used_mib, g.power_w) for g in status.gpus] == [
        (g.util_pct, g.mem_used_mib, g.power_w) for g in expected
    ]


@pytest.mark.ssh
def test_remote_without_vlmtui_or_nvidia_smi(ssh_host, sshd_server):
    table = sshd_server.host_table(ssh_host.workdir, python="/usr/bin/python3")
    table["env"] = {"PATH": "/usr/bin:/bin"}
    save_host("bare", **table)
    status = get_host("bare").query_gpus()
    assert status.reachable and status.gpus == () and "no nvidia-smi" in status.note
