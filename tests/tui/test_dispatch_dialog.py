"""The dispatch dialog's device choice: "next free" stands alone, GPUs may be several, and
only the chosen options show a mark (also in a plain-text capture); the fsdp strategy gives
each recipe a group of GPUs, and the pre-flight suggests it when a whole model does not fit."""

from __future__ import annotations

import pytest
from textual.widgets import Select
from tui_fakes import fake_sources, local_cpu_host, wait_for

from vlmtui.tui.app import VlmtuiApp
from vlmtui.tui.screens.dispatch import (
    AUTO,
    CPU,
    DeviceList,
    DispatchScreen,
    assign_sharded,
    exclusive,
)
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


def test_fsdp_splits_the_chosen_gpus_into_a_group_per_recipe() -> None:
    assert assign_sharded(["r2"], ["0", "3"]) == ("0,3",)
    assert assign_sharded(["r2", "r3"], ["0", "1", "2", "3"]) == ("0,1", "2,3")
    assert assign_sharded(["r2", "r3"], ["0", "1", "2", "3", "5"]) == ("0,1", "2,3")
    assert assign_sharded(["r2", "r3"], ["0", "3", CPU]) is None  # one GPU each: no sharding
    assert assign_sharded(["r2"], [AUTO]) is None


async def test_fsdp_choice_makes_a_sharded_plan_or_says_what_is_missing() -> None:
    plans = []
    app = VlmtuiApp(fake_sources(), model="m", data="d")
    async with app.run_test(size=(120, 40)) as pilot:
        sl = await open_dialog(app, pilot)  # r2 and r3 are marked
        app.screen.dismiss = plans.append
        app.screen.query_one("#dispatch-strategy", Select).value = "fsdp"
        await toggle(pilot, sl, "0")
        await toggle(pilot, sl, "3")
        app.screen.submit()
        assert plans == []  # two recipes need four GPUs
        await wait_for(
            pilot, lambda: any("choose at least 4 GPUs" in n.message for n in app._notifications)
        )
        await toggle(pilot, sl, "1")
        await toggle(pilot, sl, "2")
        app.screen.submit()
        assert (plans[-1].devices, plans[-1].strategy) == (("0,3", "1,2"), "fsdp")


def test_preflight_suggests_fsdp_when_a_whole_model_does_not_fit() -> None:
    from vlmtui.tui.messages import Preflight
    from vlmtui.tui.widgets.preflight import preflight_table

    def memory_cell(**kw) -> str:
        check = Preflight(recipe="r4-joint", device="0", memory_gib=150.0, **kw)
        return str(preflight_table([check]).columns[-1]._cells[0])

    assert memory_cell(gpu_mem_gib=80.0) == "≈150.0 / 80 GiB TOO BIG (try fsdp)"
    assert memory_cell(gpu_mem_gib=160.0) == "≈150.0 / 160 GiB fits"
    assert memory_cell(gpu_mem_gib=80.0, strategy="fsdp") == "≈150.0 GiB unsharded"


@pytest.mark.parametrize("size", [(80, 24), (100, 30), (160, 48)])
async def test_preflight_numbers_and_refusals_are_never_cut(size) -> None:
    """At 80 columns the dialog showed `210.5M/7…` for a 72B model's LLM, `0/665.…` for a
    frozen vision tower, and a refusal squeezed into a column as `quanti…`."""
    from tui_fakes import screen_text

    from vlmtui.tui.messages import Preflight
    from vlmtui.tui.screens.confirm import ConfirmScreen
    from vlmtui.tui.widgets.preflight import preflight_body

    checks = [
        Preflight("r1-llm-only", "auto", {"vision": (0, 631_200_000),
                  "projector": (0, 68_200_000), "llm": (210_500_000, 72_700_000_000)},
                  73_400_000_000, 210_500_000, 49.6, 80.0),
        Preflight("r2-vision-only", "3", {"vision": (631_200_000, 631_200_000),
                  "projector": (68_200_000, 68_200_000), "llm": (0, 72_700_000_000)},
                  73_400_000_000, 699_400_000, 180.6, 80.0),
        Preflight("r3-two-stage", "cpu", problem="quantization 4bit needs a CUDA GPU"),
    ]  # fmt: skip
    app = VlmtuiApp(fake_sources(), model="m", data="d")
    async with app.run_test(size=size) as pilot:
        await wait_for(pilot, lambda: app.query_one(RecipesPane).table.row_count == 4)
        app.push_screen(ConfirmScreen("Launch on local", preflight_body(checks), "Launch 2"))
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the dialog")
        await pilot.pause(0.1)
        text = screen_text(app)
    rows = [ln for ln in text.splitlines() if "█ r1-llm-only " in ln or "█ r2-vision-only " in ln]
    assert len(rows) == 2 and "…" not in "".join(rows), text
    assert all(n in rows[0] for n in ("auto", "frozen", "210.5M/72.7B", "≈49.6")), rows[0]
    assert all(n in rows[1] for n in ("631.2M", "68.2M", "699.4M", "≈180.6")), rows[1]
    assert "r3-two-stage: quantization 4bit needs a CUDA GPU" in text
