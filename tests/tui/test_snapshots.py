"""Snapshots of every pane at 80×24 and 160×48 from recorded data (no clocks, no hosts).

Update after an intended change: `pytest tests/tui/test_snapshots.py --snapshot-update`,
then look at the SVGs in `__snapshots__/`.
"""

from __future__ import annotations

import pytest
from tui_fakes import StepClock, fake_sources, gpu_timeline, wait_for

from vlmtui.tui.app import VlmtuiApp
from vlmtui.tui.messages import Preflight
from vlmtui.tui.screens.confirm import ConfirmScreen
from vlmtui.tui.widgets.gpus_pane import GpusPane
from vlmtui.tui.widgets.log_view import LogView
from vlmtui.tui.widgets.preflight import preflight_body
from vlmtui.tui.widgets.recipes_pane import RecipesPane
from vlmtui.tui.widgets.runs_pane import RunsPane
from vlmtui.tui.widgets.tree_pane import TreePane

SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((160, 48), id="160x48")]
SHIPPED = "Qwen/Qwen2-VL-2B-Instruct"


def _app() -> VlmtuiApp:
    return VlmtuiApp(fake_sources(), model=SHIPPED, data="/data/shapes")


@pytest.mark.parametrize("size", SIZES)
def test_recipes_pane(snap_compare, size) -> None:
    async def before(pilot) -> None:
        await wait_for(pilot, lambda: pilot.app.query_one(RecipesPane).table.row_count == 4)
        await pilot.press("down", "space")

    assert snap_compare(_app(), terminal_size=size, run_before=before)


@pytest.mark.parametrize("size", SIZES)
def test_gpus_pane(snap_compare, size) -> None:
    """After 5 minutes of recorded refreshes: util and memory history on every GPU row, with
    the 50 s gpu03 was unreachable as a hole."""
    timeline = iter(gpu_timeline(30))
    sources = fake_sources(gpu_status=lambda: next(timeline), now=StepClock())
    app = VlmtuiApp(sources, model=SHIPPED, data="/data/shapes")

    async def before(pilot) -> None:
        pane = pilot.app.query_one(GpusPane)
        for n in range(1, 31):
            if n > 1:
                pilot.app.refresh_gpus()
            await wait_for(pilot, lambda n=n: pane.refreshes == n)
        await pilot.press("2")

    assert snap_compare(app, terminal_size=size, run_before=before)


@pytest.mark.parametrize("size", SIZES)
def test_tree_pane(snap_compare, size) -> None:
    async def before(pilot) -> None:
        await wait_for(pilot, lambda: pilot.app.query_one(RecipesPane).table.row_count == 4)
        await pilot.press("down", "t")
        tree = pilot.app.query_one(TreePane)
        await wait_for(pilot, lambda: tree.view is not None, timeout=120, what="the tree")

    assert snap_compare(_app(), terminal_size=size, run_before=before)


@pytest.mark.parametrize("size", SIZES)
def test_runs_pane(snap_compare, size) -> None:
    async def before(pilot) -> None:
        await wait_for(pilot, lambda: pilot.app.query_one(RecipesPane).table.row_count == 4)
        await pilot.press("4")
        pane = pilot.app.query_one(RunsPane)
        await wait_for(pilot, lambda: pane.table.row_count == 3)
        log = pilot.app.query_one(LogView)
        await wait_for(pilot, lambda: log.line_count == 30)
        await pilot.pause(0.2)

    assert snap_compare(_app(), terminal_size=size, run_before=before)


@pytest.mark.parametrize("size", SIZES)
def test_dispatch_dialog(snap_compare, size) -> None:
    async def before(pilot) -> None:
        await wait_for(pilot, lambda: pilot.app.query_one(GpusPane).refreshes == 1)
        await wait_for(pilot, lambda: pilot.app.query_one(RecipesPane).table.row_count == 4)
        await pilot.press("d")
        await pilot.pause(0.2)

    assert snap_compare(_app(), terminal_size=size, run_before=before)


@pytest.mark.parametrize("size", SIZES)
def test_help_screen(snap_compare, size) -> None:
    async def before(pilot) -> None:
        await wait_for(pilot, lambda: pilot.app.query_one(RecipesPane).table.row_count == 4)
        await pilot.press("question_mark", "pagedown")
        await pilot.pause(0.2)

    assert snap_compare(_app(), terminal_size=size, run_before=before)


PREFLIGHT = [
    Preflight("r1-llm-only", "0", {"vision": (0, 665_000_000), "projector": (0, 45_000_000),
              "llm": (9_200_000, 1_540_000_000)}, 2_250_000_000, 9_200_000, 6.3, 79.6),
    Preflight("r2-vision-only", "3", {"vision": (665_000_000, 665_000_000),
              "projector": (45_000_000, 45_000_000), "llm": (0, 1_540_000_000)},
              2_250_000_000, 710_000_000, 96.2, 79.6),
    Preflight("r3-two-stage-copy", "cpu", problem="quantization 4bit needs a CUDA GPU"),
]  # fmt: skip


@pytest.mark.parametrize("size", SIZES)
def test_preflight_dialog(snap_compare, size) -> None:
    async def before(pilot) -> None:
        await wait_for(pilot, lambda: pilot.app.query_one(RecipesPane).table.row_count == 4)
        dialog = ConfirmScreen("Launch on gpu01, 50 steps", preflight_body(PREFLIGHT), "Launch 2")
        pilot.app.push_screen(dialog)
        await pilot.pause(0.2)

    assert snap_compare(_app(), terminal_size=size, run_before=before)


@pytest.mark.parametrize("size", SIZES)
def test_stop_dialog(snap_compare, size) -> None:
    async def before(pilot) -> None:
        # the pane behind the dialog settled first (recipes, rows, log), as in test_runs_pane:
        # under load the dialog could otherwise open over a half-loaded pane
        await wait_for(pilot, lambda: pilot.app.query_one(RecipesPane).table.row_count == 4)
        await pilot.press("4")
        pane = pilot.app.query_one(RunsPane)
        await wait_for(pilot, lambda: pane.table.row_count == 3)
        log = pilot.app.query_one(LogView)
        await wait_for(pilot, lambda: log.line_count == 30)
        pane.action_stop_run()  # `s` on the training run (the first row)
        await wait_for(pilot, lambda: isinstance(pilot.app.screen, ConfirmScreen))
        await pilot.pause(0.2)

    assert snap_compare(_app(), terminal_size=size, run_before=before)
