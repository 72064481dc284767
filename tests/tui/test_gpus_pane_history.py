"""The GPUs pane shows each GPU's utilisation and memory history over the last 5 minutes and
fits the terminal: at 80×24 the table does not scroll sideways and host ids stay whole; at
160×48 the name and process list come back and the sparklines grow.

The app runs as it does for a user; only `Sources.gpu_status` (the hardware edge: no GPU on
this machine) replays a recorded 5-minute timeline, and `Sources.now` is its clock, so each
refresh goes through the real worker, message and pane."""

from __future__ import annotations

import re

import pytest
from textual.widgets import DataTable
from tui_fakes import StepClock, fake_sources, gpu_timeline, screen_text, wait_for

from vlmtui.tui.app import VlmtuiApp
from vlmtui.tui.widgets.gpus_pane import GpusPane

pytestmark = pytest.mark.anyio
SPARK = "▁▂▃▄▅▆▇█"


def marks(cell: object) -> int:
    """Sparkline characters drawn in a cell (gaps and blanks not counted)."""
    return sum(c in SPARK for c in str(cell))


async def _replay(pilot, app: VlmtuiApp, refreshes: int) -> None:
    pane = app.query_one(GpusPane)
    for n in range(1, refreshes + 1):
        if n > 1:
            app.refresh_gpus()
        await wait_for(pilot, lambda n=n: pane.refreshes == n, what=f"refresh {n}")


async def test_gpu_rows_show_util_and_memory_history_and_fit_80_columns() -> None:
    timeline = iter(gpu_timeline(30))
    sources = fake_sources(gpu_status=lambda: next(timeline), now=StepClock())
    app = VlmtuiApp(sources, model="m", data="d")
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("2")
        await _replay(pilot, app, 30)
        pane = app.query_one(GpusPane)
        table = app.query_one("#gpus-table", DataTable)
        await wait_for(pilot, lambda: app.focused is table, what="focus on the GPU table")
        await pilot.pause(0.1)

        layout = pane.columns_layout
        assert layout is not None and layout.spark >= 8
        assert table.virtual_size.width <= table.scrollable_content_region.width
        util = str(table.get_cell("gpu01:2", "util_hist"))
        mem = str(table.get_cell("gpu01:2", "mem_hist"))
        assert marks(util) == layout.spark and marks(mem) == layout.spark, (util, mem)
        assert len(set(util)) > 1  # the load moved over the 5 minutes
        # gpu03 was unreachable for 50 s in the middle: a hole in both lines, not zeros.
        gap_util = str(table.get_cell("gpu03:0", "util_hist"))
        gap_mem = str(table.get_cell("gpu03:0", "mem_hist"))
        assert "·" in gap_util and "·" in gap_mem, (gap_util, gap_mem)
        assert gap_util.index("·") > 0 and gap_util.rstrip("·")[-1] in SPARK

        text = screen_text(app)
        assert "util 5m" in text and "mem 5m" in text
        for host in ("gpu01", "gpu02", "gpu03"):
            assert re.search(rf"^ {host}  ", text, re.M), f"{host} cut or gone"
        row = next(line for line in text.splitlines() if line.startswith(" gpu01  2 "))
        assert util in row and mem in row

        await pilot.resize_terminal(160, 48)
        await wait_for(pilot, lambda: pane.columns_layout is not layout, what="relayout")
        await pilot.pause(0.1)
        wide = pane.columns_layout
        assert wide is not None and wide.has("name") and wide.bars
        assert wide.spark > layout.spark
        assert table.virtual_size.width <= table.scrollable_content_region.width
        assert marks(table.get_cell("gpu01:2", "util_hist")) == wide.spark
        assert marks(table.get_cell("gpu01:2", "mem_hist")) == wide.spark
        assert "run 20250101-120000-ab12" in str(table.get_cell("gpu01:1", "processes"))


async def test_a_host_rows_note_is_whole_at_80_columns() -> None:
    """The fault: at 80 columns a GPU-less host's note sat in the 7-column processes column,
    cut to `no G…`; it now goes to the widest free column of the row."""
    from vlmtui.core.fleet.snapshot import HostGpus

    hosts = [HostGpus("local", reachable=True), HostGpus("gpu09", reachable=False, error="down")]
    app = VlmtuiApp(fake_sources(gpu_status=lambda: hosts), model="m", data="d")
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("2")
        await wait_for(pilot, lambda: app.query_one(GpusPane).refreshes >= 1)
        await pilot.pause(0.1)
        rows = {line.split()[0]: line for line in screen_text(app).splitlines() if line.strip()}
        assert "no GPU, CPU runs" in rows["local"] and "down" in rows["gpu09"]
