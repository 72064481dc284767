"""8 runs each appending 20,000 lines/s to their logs while the app follows the selected one:
lines shown per second, key-press latency, and memory (the view keeps a fixed number of
lines). A separate writer process produces the logs so the app competes only for the CPU."""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "tui"))

from tui_fakes import fake_sources

from vlmtui.core.fleet.runs import RunView
from vlmtui.tui.app import VlmtuiApp
from vlmtui.tui.widgets.log_view import LogView
from vlmtui.tui.widgets.runs_pane import RunsPane

RUNS = 8
LINES_PER_S = 20_000
SECONDS = 8.0
TICK = 0.01


def writer(folder: str, stop_at: float) -> None:
    files = [open(Path(folder) / f"run{i}.log", "a", buffering=1 << 16) for i in range(RUNS)]  # noqa: SIM115
    n = 0
    per_tick = int(LINES_PER_S * TICK)
    next_t = time.monotonic()
    while time.monotonic() < stop_at:
        for i, fh in enumerate(files):
            fh.write(
                "".join(
                    f"run{i} step {n + k} loss 0.{(n + k) % 9973:04d} lr 2e-4 grad 1.0\n"
                    for k in range(per_tick)
                )
            )
            fh.flush()
        n += per_tick
        next_t += TICK
        time.sleep(max(0.0, next_t - time.monotonic()))


class FileLog:
    def __init__(self, path: Path) -> None:
        self.path, self.offset = path, 0

    def read(self, max_bytes: int = 1 << 20) -> bytes:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.offset)
                chunk = fh.read(max_bytes)
        except FileNotFoundError:
            return b""
        self.offset += len(chunk)
        return chunk


def runs() -> list[RunView]:
    return [
        RunView(
            id=f"20250101-1200{i:02d}-bench",
            recipe="r1-llm-only",
            host="local",
            gpu=str(i),
            state="training",
            step=1,
            max_steps=100,
            loss=1.0,
            run_dir=f"/runs/{i}",
            error=None,
            pid=1,
            created=0.0,
            model="m",
            data="d",
            nproc=1,
            reachable=True,
        )
        for i in range(RUNS)
    ]


def watcher_offset(watcher) -> int:
    return watcher.reader.offset if getattr(watcher, "reader", None) else 0


async def run(folder: str) -> None:
    by_id = {r.id: Path(folder) / f"run{i}.log" for i, r in enumerate(runs())}
    sources = fake_sources(list_runs=runs, open_log=lambda rid: FileLog(by_id[rid]))
    sources.run_files = lambda host, run_dir: ([], None)
    app = VlmtuiApp(sources)
    stop_at = time.monotonic() + SECONDS + 2
    proc = mp.get_context("spawn").Process(target=writer, args=(folder, stop_at))
    proc.start()
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("4")
        pane = app.query_one(RunsPane)
        while pane.table.row_count < RUNS:
            await pilot.pause(0.05)
        log = app.query_one(LogView)
        # Phase 1: follow run 0; how many lines per second does its watcher take in?
        watcher = pane.watcher
        await asyncio.sleep(1.0)
        log0 = Path(folder) / "run0.log"
        read0, size0, t0 = watcher.lines_read, log0.stat().st_size, time.monotonic()
        await asyncio.sleep(SECONDS / 2)
        took = time.monotonic() - t0
        rate = (watcher.lines_read - read0) / took
        line_bytes = len("run0 step 100000 loss 0.1234 lr 2e-4 grad 1.0\n")
        written = (log0.stat().st_size - size0) / line_bytes / took
        reader_lag = (Path(folder) / "run0.log").stat().st_size - watcher_offset(watcher)
        # Phase 2: key presses that switch the followed run while all 8 logs grow.
        table = pane.table
        latencies = []
        t0 = time.monotonic()
        while time.monotonic() - t0 < SECONDS / 2:
            before = table.cursor_row
            t = time.perf_counter()
            app.simulate_key("down" if before == 0 else "up")
            while table.cursor_row == before:  # answered: the cursor moved
                await asyncio.sleep(0.0005)
            latencies.append(time.perf_counter() - t)
            await asyncio.sleep(0.25)
        kept = log.line_count
    proc.join()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    lat = sorted(latencies)
    print(f"{RUNS} runs × {LINES_PER_S} lines/s for {SECONDS:g} s; following one of them")
    print(
        f"lines taken in by the followed run's watcher: {rate:,.0f}/s "
        f"(written: {written:,.0f}/s, target {LINES_PER_S:,}/s)"
    )
    print(f"unread bytes of the followed log at the end: {reader_lag:,}")
    print(f"lines kept in the view: {kept} (max {log.max_lines})")
    print(
        f"key press latency: median {statistics.median(lat) * 1000:.1f} ms, "
        f"p95 {lat[int(len(lat) * 0.95)] * 1000:.1f} ms, max {lat[-1] * 1000:.1f} ms "
        f"({len(lat)} presses)"
    )
    print(f"peak RSS of the app process: {rss:.0f} MiB")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as home:
        os.environ["VLMTUI_HOME"] = home
        asyncio.run(run(home))
