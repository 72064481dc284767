"""The dispatch flow end to end against the local host with the tiny model: recipe → device
→ pre-flight confirm → launch → the runs pane shows the run finished with its loss."""

from __future__ import annotations

import io
import shutil

import pytest
from rich.console import Console
from tui_fakes import wait_for

from vlmtui.tui.app import VlmtuiApp
from vlmtui.tui.screens.confirm import ConfirmScreen
from vlmtui.tui.screens.dispatch import DispatchScreen
from vlmtui.tui.sources import Sources
from vlmtui.tui.widgets.recipes_pane import RecipesPane
from vlmtui.tui.widgets.runs_pane import RunsPane

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


async def test_dispatch_a_cpu_run_and_watch_it_finish(qwen2_vl_dir, shapes_data_dir, tmp_path):
    model = shutil.copytree(qwen2_vl_dir, tmp_path / "model")
    sources = Sources(gpu_interval_s=3600.0, runs_interval_s=0.5)
    app = VlmtuiApp(sources, model=str(model), data=str(shapes_data_dir))
    async with app.run_test(size=(160, 48)) as pilot:
        recipes = app.query_one(RecipesPane)
        await wait_for(pilot, lambda: recipes.table.row_count >= 4, what="recipes")
        await wait_for(pilot, lambda: app.query_one("GpusPane").refreshes >= 1, what="GPUs")
        await pilot.press("down", "down", "down")  # r4-joint: LoRA on both towers
        assert recipes.highlighted == "r4-joint"
        await pilot.press("d")
        await wait_for(pilot, lambda: isinstance(app.screen, DispatchScreen), what="dialog")
        app.screen.query_one("#dispatch-steps").value = "2"
        app.screen.query_one("#next").press()
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), 120, "pre-flight")
        console = Console(width=150, record=True, file=io.StringIO())
        console.print(app.screen.body)
        body = console.export_text()
        assert "r4-joint" in body and "GiB" in body
        await pilot.press("y")  # the dialog's confirm key (a toast may cover the button)
        runs = app.query_one(RunsPane)
        await wait_for(
            pilot,
            lambda: runs.table.row_count == 1,
            60,
            f"the run ({[n.message for n in app._notifications]})",
        )
        run_id = next(iter(runs.runs))

        def finished() -> bool:
            run = runs.runs[run_id]
            assert run.state not in ("failed", "stopped"), run.error
            return run.state == "finished"

        await wait_for(pilot, finished, 240, "the run to finish")
        await wait_for(pilot, lambda: runs.runs[run_id].loss is not None, 30, "its loss")
        assert str(runs.table.get_cell(run_id, "state")) == "finished"
        assert runs.table.get_cell(run_id, "step") == "2/2"
        assert runs.table.get_cell(run_id, "loss") != "–"
        await wait_for(pilot, lambda: runs.log_view.line_count > 0, 30, "its output")
