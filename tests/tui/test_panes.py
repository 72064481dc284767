"""Pilot tests, one group per pane, against recorded sources (no hosts, no runs)."""

from __future__ import annotations

import pytest
from textual.widgets import DataTable, Static
from tui_fakes import Recorder, fake_sources, recorded_gpus, wait_for

from vlmtui.core.paths import config_dir
from vlmtui.tui.app import VlmtuiApp
from vlmtui.tui.screens.confirm import ConfirmScreen
from vlmtui.tui.screens.help import HelpScreen
from vlmtui.tui.widgets.gpus_pane import GpusPane
from vlmtui.tui.widgets.log_view import LogView
from vlmtui.tui.widgets.recipes_pane import RecipesPane
from vlmtui.tui.widgets.runs_pane import RunsPane

pytestmark = pytest.mark.anyio


def _text(app, selector: str) -> str:
    return str(app.query_one(selector, Static).render())


async def test_recipes_pane_lists_marks_and_copies() -> None:
    app = VlmtuiApp(fake_sources())
    async with app.run_test(size=(120, 40)) as pilot:
        pane = app.query_one(RecipesPane)
        await wait_for(pilot, lambda: pane.table.row_count == 4, what="recipes")
        assert app.focused is pane.table
        await pilot.press("down")
        assert pane.highlighted == "r2-vision-only"
        assert "Full fine-tune of the vision encoder" in _text(app, "#recipe-detail")
        await pilot.press("space", "down", "space")
        assert pane.selected() == ["r2-vision-only", "r3-two-stage"]
        await pilot.press("space")
        assert pane.selected() == ["r2-vision-only"]
        await pilot.press("c")
        await wait_for(pilot, lambda: pane.table.row_count == 5, what="the copied recipe")
        assert (config_dir() / "recipes" / "r3-two-stage-copy.toml").is_file()
        assert "r3-two-stage-copy" in pane.recipes


async def test_gpus_pane_shows_every_gpu_and_updates_in_place() -> None:
    ticks = iter(range(100))

    app = VlmtuiApp(fake_sources(gpu_status=lambda: recorded_gpus(tick=next(ticks))))
    async with app.run_test(size=(160, 48)) as pilot:
        pane = app.query_one(GpusPane)
        await wait_for(pilot, lambda: pane.refreshes == 1, what="first GPU snapshot")
        await pilot.press("2")
        table = app.query_one("#gpus-table", DataTable)
        # The tab switch moves focus in a later message: keys pressed before it went nowhere.
        await wait_for(pilot, lambda: app.focused is table, what="focus on the GPU table")
        assert table.row_count == 3 * 8 + 1
        states = [str(table.get_cell(k, "state")) for k in table.rows]
        assert {"free", "busy", "reserved", "unreachable"} <= set(states)
        assert "ssh: connect to host gpu04" in str(table.get_cell("gpu04", "processes"))
        await pilot.press("down", "down")
        app.refresh_gpus()
        await wait_for(pilot, lambda: pane.refreshes == 2, what="second snapshot")
        assert table.cursor_row == 2
        assert len(pane.history.samples(("gpu01", 2))) == 2
        assert "4 host(s), 24 GPU(s)" in _text(app, "#gpus-summary")


async def test_runs_pane_table_detail_log_and_stop() -> None:
    rec = Recorder()
    app = VlmtuiApp(fake_sources(rec))
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("4")
        pane = app.query_one(RunsPane)
        await wait_for(pilot, lambda: pane.table.row_count == 3, what="runs")
        await wait_for(pilot, lambda: app.focused is pane.table, what="focus on the runs table")
        assert str(pane.table.get_cell("20250101-120003-ab13", "state")) == "training"
        assert pane.table.get_cell("20250101-120003-ab13", "eta") == "1:30"
        log = app.query_one(LogView)
        await wait_for(pilot, lambda: log.line_count == 30, what="the log")
        # The finished run: its loss and eval metrics
        await pilot.press("down", "down")
        await wait_for(pilot, lambda: pane.followed == "20250101-120001-ab11")
        info = _text(app, "#run-info")
        assert "finished" in info and "loss 0.4321" in info and "map 0.412" in info
        # Search the log
        await pilot.press("slash", *"loss", "space", *"0.1667", "enter")
        assert log._match_row == 17
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.focused is pane.table, what="focus back on the runs")
        # Stop asks first and stops only the training run
        await pilot.press("s")
        assert not isinstance(app.screen, ConfirmScreen)  # finished: nothing to stop
        await pilot.press("up", "up", "s")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("escape")
        assert rec.stopped == []
        await pilot.press("s")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("enter")
        await wait_for(pilot, lambda: rec.stopped == ["20250101-120003-ab13"], what="stop")


async def test_r_shows_a_new_eval_of_a_finished_run_at_once() -> None:
    """An evaluated finished run's files are re-read only every 30 s (they may be remote);
    after `vlmtui eval` ran again, `r` ("refresh now") still showed the old metrics."""
    evals = [{"metrics": {"map": 0.4123}}]

    def run_files(host: str, run_dir: str):  # the run dir's events.jsonl and eval.json
        events = [{"step": 1, "max_steps": 100, "loss": 1.0, "elapsed_s": 1.0}]
        return events, evals[-1] if run_dir.endswith("1") else None

    app = VlmtuiApp(fake_sources(run_files=run_files), model="m", data="d")
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("4")
        pane = app.query_one(RunsPane)
        finished = "20250101-120001-ab11"
        await wait_for(pilot, lambda: finished in pane.details, what="the finished run")
        assert pane.details[finished].eval_metrics["map"] == 0.4123
        evals.append({"metrics": {"map": 0.5555}})  # `vlmtui eval` again, more images
        await pilot.press("r")
        await wait_for(
            pilot, lambda: pane.details[finished].eval_metrics["map"] == 0.5555, 10, "new eval"
        )


async def test_log_view_is_bounded_and_follows() -> None:
    app = VlmtuiApp(fake_sources(list_runs=lambda: []))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("4")
        log = app.query_one(LogView)
        log.max_lines = 100
        log.lines = type(log.lines)(maxlen=100)
        log.write_lines(f"line {i}" for i in range(1000))
        await pilot.pause()
        assert log.line_count == 100 and log.lines[0] == "line 900"
        assert log.follow
        await wait_for(pilot, lambda: log.scroll_y == log.max_scroll_y > 0, what="scroll end")
        log.focus()
        await pilot.press("pageup")
        assert not log.follow
        log.write_lines(["new"])
        await pilot.pause()
        assert log.scroll_y < log.max_scroll_y  # scrolled back: stays put
        await pilot.press("f")
        assert log.follow
        await wait_for(pilot, lambda: log.scroll_y == log.max_scroll_y, what="scroll end")


async def test_help_theme_and_palette() -> None:
    app = VlmtuiApp(fake_sources())
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)
        assert app.theme == "textual-dark"
        await pilot.press("ctrl+t")
        assert app.theme == "textual-light"
        titles = [c.title for c in app.get_system_commands(app.screen)]
        assert {"Dispatch", "Refresh", "Toggle theme", "Show runs", "Help"} <= set(titles)
        footer_keys = {b.key for _, b, _, _ in app.screen.active_bindings.values() if b.show}
        assert {"d", "q", "space"} <= footer_keys


async def test_worker_errors_become_notifications() -> None:
    def broken():
        raise OSError("NVML exploded")

    app = VlmtuiApp(fake_sources(gpu_status=broken))
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: any("NVML exploded" in n.message for n in app._notifications))
        assert app.is_running


async def test_a_broken_hosts_toml_is_shown_once_and_repeated_errors_are_not_stacked() -> None:
    # Issue 11 item 14: a hosts.toml syntax error stacked error notifications over half the
    # screen, one per refresh. Now: one note for the file, one per distinct worker error.
    calls = []

    def broken():
        calls.append(1)
        raise OSError("host gpubox: cannot read hosts file")

    sources = fake_sources(
        gpu_status=broken,
        hosts_problem=lambda: "hosts.toml: cannot read hosts file (Expected ']')",
        gpu_interval_s=0.05,
    )
    app = VlmtuiApp(sources)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: len(calls) >= 5, what="five failed refreshes")
        notes = list(app._notifications)
        assert sum(n.title == "hosts.toml" for n in notes) == 1
        assert (
            sum("cannot read hosts file" in n.message and n.title != "hosts.toml" for n in notes)
            == 1
        )
