"""The dispatch dialog's device choice: "next free" stands alone, GPUs may be several, and
only the chosen options show a mark (also in a plain-text capture)."""

from __future__ import annotations

import pytest
from tui_fakes import fake_sources, local_cpu_host, wait_for

from vlmtui.tui.app import VlmtuiApp
from vlmtui.tui.screens.dispatch import AUTO, CPU, DeviceList, DispatchScreen, exclusive
from vlmtui.tui.widgets.gpus_pane import GpusPane
from vlmtui.tui.widgets.recipes_pane import RecipesPane

pytestmark = pytest.mark.anyio


def test_exclusive_rule() -> None:
    assert exclusive([AUTO, "0"], "0") == ["0"]
    assert exclusive(["0", "3", AUTO], AUTO) == [AUTO]
    assert exclusive([], AUTO) == [AUTO]  # nothing chosen: back to "next free"
    assert exclusive([AUTO, CPU], CPU) == [CPU]
    assert exclusive(["0", "3"], "3") == ["0", "3"]


def marks(sl: DeviceList) -> list[str]:
    """The text of each option's box, as a plain-text terminal capture shows it."""
    return [sl.render_line(y).text[:3] for y in range(sl.option_count)]


async def open_dialog(app: VlmtuiApp, pilot) -> DeviceList:
    await wait_for(pilot, lambda: app.query_one(GpusPane).refreshes == 1, what="GPUs")
    await wait_for(pilot, lambda: app.query_one(RecipesPane).table.row_count == 4, what="recipes")
    await pilot.press("down", "space", "down", "space")  # r2 and r3
    await pilot.press("d")
    await wait_for(pilot, lambda: isinstance(app.screen, DispatchScreen), what="the dialog")
    sl = app.screen.query_one(DeviceList)
    sl.focus()
    await pilot.pause()
    return sl


async def toggle(pilot, sl: DeviceList, value: str) -> None:
    sl.highlighted = [o.value for o in sl.options].index(value)
    await pilot.press("space")


async def test_cpu_host_shows_one_chosen_device() -> None:
    app = VlmtuiApp(fake_sources(gpu_status=lambda: [local_cpu_host()]), model="m", data="d")
    async with app.run_test(size=(120, 40)) as pilot:
        sl = await open_dialog(app, pilot)
        assert sl.selected == [AUTO]
        assert marks(sl) == ["▐X▌", "▐ ▌"]
        await toggle(pilot, sl, CPU)
        assert sl.selected == [CPU]
        assert marks(sl) == ["▐ ▌", "▐X▌"]
        await toggle(pilot, sl, CPU)  # unchoosing the only choice: back to "next free"
        assert sl.selected == [AUTO]
        assert marks(sl) == ["▐X▌", "▐ ▌"]


async def test_several_gpus_drop_next_free_and_make_the_plan() -> None:
    plans = []
    app = VlmtuiApp(fake_sources(), model="m", data="d")
    async with app.run_test(size=(120, 40)) as pilot:
        sl = await open_dialog(app, pilot)
        app.screen.dismiss = plans.append  # keep the plan, skip the pre-flight
        await toggle(pilot, sl, "0")
        await toggle(pilot, sl, "3")
        assert sl.selected == ["0", "3"]
        assert [m == "▐X▌" for m in marks(sl)].count(True) == 2
        app.screen.submit()
        assert plans[-1].devices == ("0", "3")
        await toggle(pilot, sl, AUTO)
        assert sl.selected == [AUTO]
        assert [m == "▐X▌" for m in marks(sl)].count(True) == 1
        app.screen.submit()
        assert plans[-1].devices == (AUTO, AUTO)
