"""4 hosts × 8 GPUs of recorded snapshots refreshing every 0.1 s: how long each refresh holds
the UI thread, and how fast key presses are answered meanwhile. The pane starts with 5
minutes of history at the default 2 s refresh, so every sparkline is full."""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "tui"))

from tui_fakes import fake_sources, recorded_gpus

from vlmtui.tui.app import VlmtuiApp
from vlmtui.tui.widgets.gpus_pane import GpusPane

SECONDS = 5.0


async def run() -> None:
    ticks = iter(range(10**9))
    sources = fake_sources(
        gpu_status=lambda: recorded_gpus(4, 8, tick=next(ticks), unreachable=False),
        gpu_interval_s=0.1,
    )
    app = VlmtuiApp(sources)
    show_times: list[float] = []
    original = GpusPane.show

    def timed(self, hosts, at=None):
        t = time.perf_counter()
        original(self, hosts, at)
        show_times.append(time.perf_counter() - t)

    GpusPane.show = timed  # type: ignore[method-assign]
    async with app.run_test(size=(160, 48)) as pilot:
        pane = app.query_one(GpusPane)
        start = time.time() - pane.history.window_s
        for i in range(int(pane.history.window_s / 2)):
            pane.history.record(recorded_gpus(4, 8, tick=i, unreachable=False), start + 2 * i)
        await pilot.press("2")
        table = app.query_one("#gpus-table")
        latencies = []
        end = time.monotonic() + SECONDS
        while time.monotonic() < end:
            before = table.cursor_row
            t = time.perf_counter()
            app.simulate_key("down" if len(latencies) % 40 < 20 else "up")
            while table.cursor_row == before:  # answered: the cursor moved
                await asyncio.sleep(0.0005)
            latencies.append(time.perf_counter() - t)
            await asyncio.sleep(0.02)
    rows = 4 * 8
    samples = len(pane.history.samples(("gpu01", 0)))
    print(f"GPU rows: {rows}, refreshes in {SECONDS:g} s: {len(show_times)}, {samples} samples/GPU")
    print(
        f"UI time per refresh: median {statistics.median(show_times) * 1000:.1f} ms, "
        f"max {max(show_times) * 1000:.1f} ms"
    )
    print(
        f"key press latency: median {statistics.median(latencies) * 1000:.1f} ms, "
        f"p99 {sorted(latencies)[int(len(latencies) * 0.99)] * 1000:.1f} ms, "
        f"max {max(latencies) * 1000:.1f} ms ({len(latencies)} presses)"
    )


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as home:
        os.environ["VLMTUI_HOME"] = home
        asyncio.run(run())
