"""Recorded data for the TUI tests, snapshots and benchmarks: GPU snapshots of 4 hosts × 8
GPUs (one host unreachable in the default set), a fixed run list with events and eval
metrics, and a log reader. Everything is deterministic: no clocks, no hosts, no threads."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from vlmtui.core.fleet.runs import RunView
from vlmtui.core.fleet.snapshot import CPU, Gpu, GpuProcess, HostGpus
from vlmtui.tui.sources import Sources

H100_MIB = 81559.0


def recorded_gpus(hosts: int = 4, per_host: int = 8, tick: int = 0, unreachable: bool = True):
    """`hosts` × `per_host` GPUs with fixed, varied load; `tick` shifts the utilisation."""
    out = []
    for h in range(hosts):
        name = f"gpu{h + 1:02d}"
        if unreachable and h == hosts - 1:
            out.append(
                HostGpus(name, reachable=False, error="ssh: connect to host gpu04: timed out")
            )
            continue
        gpus = []
        for i in range(per_host):
            load = ((h * 37 + i * 23 + tick * 11) % 100) if (h + i) % 3 else 0
            busy = load > 0
            procs = (GpuProcess(pid=4000 + i, name="python train.py", gpu_mem_mib=30000.0),)
            gpus.append(
                Gpu(
                    index=i,
                    name="NVIDIA H100 80GB HBM3",
                    util_pct=float(load),
                    mem_used_mib=30500.0 + 100 * i if busy else 3.0,
                    mem_total_mib=H100_MIB,
                    processes=procs if busy else (),
                    free=not busy,
                    reserved_by="20250101-120000-ab12" if (h, i) == (0, 1) else None,
                )
            )
        gpus[1] = replace(gpus[1], free=False)
        devices = (*(str(g.index) for g in gpus), CPU)
        out.append(HostGpus(name, reachable=True, gpus=tuple(gpus), source="nvml", devices=devices))
    return out


GPU_T0 = 1735732800.0
"""When the recorded GPU timeline starts; refreshes follow every 10 s."""


def gpu_timeline(refreshes: int = 30) -> list[list[HostGpus]]:
    """`refreshes` snapshots 10 s apart (5 minutes for 30): the load of `recorded_gpus` moving
    by tick, the memory of busy GPUs filling up and emptying (a sawtooth, each GPU its own
    phase), gpu03 unreachable for refreshes 10–14 (a hole in its history), gpu04 always."""
    out = []
    for tick in range(refreshes):
        hosts = [
            replace(h, gpus=tuple(_filling(g, tick) for g in h.gpus))
            for h in recorded_gpus(tick=tick)
        ]
        if 10 <= tick < 15:
            hosts[2] = HostGpus(
                "gpu03", reachable=False, error="ssh: connect to host gpu03: timed out"
            )
        out.append(hosts)
    return out


def _filling(gpu: Gpu, tick: int) -> Gpu:
    if gpu.free:
        return gpu
    phase = (tick + 4 * gpu.index) % 15 / 14
    return replace(gpu, mem_used_mib=round(H100_MIB * (0.1 + 0.85 * phase)))


class StepClock:
    """`Sources.now` for a recorded timeline: each call is `step` seconds after the last."""

    def __init__(self, start: float = GPU_T0, step: float = 10.0) -> None:
        self.next, self.step = start, step

    def __call__(self) -> float:
        now, self.next = self.next, self.next + self.step
        return now


def local_cpu_host() -> HostGpus:
    return HostGpus("local", reachable=True, source="none", note="no NVIDIA GPU: runs use the CPU")


def _run(i: str, recipe: str, state: str, step, loss, where=("gpu01", "1"), error=None):
    return RunView(
        id=f"20250101-12000{i}-ab1{i}", recipe=recipe, host=where[0], gpu=where[1], state=state,
        step=step, max_steps=100, loss=loss, run_dir=f"/runs/20250101-12000{i}-ab1{i}",
        error=error, pid=1000 + int(i), created=1735732800.0 + int(i),
        model="Qwen/Qwen2-VL-2B-Instruct", data="/data/shapes", nproc=1, reachable=True,
    )  # fmt: skip


def recorded_runs() -> list[RunView]:
    return [
        _run("3", "r4-joint", "training", 40, 1.2345),
        _run("2", "r2-vision-only", "failed", 12, 2.5, ("gpu02", "3"), "CUDA out of memory"),
        _run("1", "r1-llm-only", "finished", 100, 0.4321, ("local", "cpu")),
    ]


def _events(run_id: str) -> list[dict[str, Any]]:
    n = 40 if run_id.endswith("3") else 100 if run_id.endswith("1") else 12
    return [
        {"step": s, "max_steps": 100, "loss": 3.0 / (1 + s / 10), "elapsed_s": 1.5 * s}
        for s in range(1, n + 1)
    ]


def _run_files(host: str, run_dir: str):
    ev = {"metrics": {"map": 0.4123, "map50": 0.6789, "recall": 0.55, "mean_iou": 0.61}}
    return _events(run_dir), ev if run_dir.endswith("1") else None


class FakeLog:
    """Returns `lines` once, then nothing (a finished run's log)."""

    def __init__(self, run_id: str, n: int = 30) -> None:
        self.data = "".join(
            f"[{run_id[-4:]}] step {i:3d} loss {3.0 / (1 + i):.4f}\n" for i in range(n)
        )
        self.done = False

    def read(self, max_bytes: int = 1 << 20) -> bytes:
        if self.done:
            return b""
        self.done = True
        return self.data.encode()


class Recorder:
    """Counts what the app asked of its sources (stop calls, launches)."""

    def __init__(self) -> None:
        self.stopped: list[str] = []
        self.launched: list[Any] = []
        self.lock = threading.Lock()


def fake_sources(recorder: Recorder | None = None, **overrides: Any) -> Sources:
    rec = recorder or Recorder()

    def stop(run_id: str):
        rec.stopped.append(run_id)
        return type("R", (), {"state": "stopped"})()

    base = dict(
        gpu_status=lambda: recorded_gpus(),
        list_runs=recorded_runs,
        run_files=_run_files,
        open_log=lambda run_id: FakeLog(run_id),
        stop=stop,
        demo_ready=lambda: None,
        gpu_interval_s=3600.0,
        runs_interval_s=3600.0,
        inspection_worker=False,
    )
    base.update(overrides)
    return Sources(**base)


async def wait_for(pilot, cond: Callable[[], bool], timeout: float = 30.0, what: str = "") -> None:
    """Let the app run until `cond()` holds; fail after `timeout` seconds (generous: CI runs
    two workers next to training subprocesses, and a 10 s bound once timed out there)."""
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            pytest.fail(f"timed out waiting for {what or cond}")
        await pilot.pause(0.05)


def screen_text(app) -> str:
    """The screen as plain text, the way a terminal shows it (dialogs over their pane)."""
    import io

    from rich.console import Console

    width, height = app.size
    console = Console(
        width=width, height=height, file=io.StringIO(), force_terminal=True,
        color_system="truecolor", record=True, legacy_windows=False, safe_box=False,
    )  # fmt: skip
    console.print(
        app.screen._compositor.render_update(full=True, screen_stack=app._background_screens)
    )
    return console.export_text()
