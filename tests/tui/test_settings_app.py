"""The app follows settings.toml (theme, log size, refresh intervals) and survives a bad one."""

from __future__ import annotations

import pytest
from tui_fakes import fake_sources, wait_for

from vlmtui.core.settings import Settings, settings_path
from vlmtui.tui.app import VlmtuiApp
from vlmtui.tui.widgets.log_view import DEFAULT_MAX_LINES, LogView
from vlmtui.tui.widgets.runs_pane import RunsPane

pytestmark = pytest.mark.anyio


def write(text: str) -> None:
    settings_path().parent.mkdir(parents=True, exist_ok=True)
    settings_path().write_text(text)


async def test_app_uses_the_settings_file() -> None:
    write('gpu_refresh_s = 7\nruns_refresh_s = 3\nlog_lines = 200\ntheme = "light"\n')
    assert VlmtuiApp().sources.gpu_interval_s == 7.0  # the default sources take the intervals
    assert VlmtuiApp().sources.runs_interval_s == 3.0
    app = VlmtuiApp(fake_sources(list_runs=lambda: []))  # no run: the log view is ours
    assert app.settings == Settings(7.0, 3.0, 200, "light")
    async with app.run_test(size=(80, 24)) as pilot:
        assert app.theme == "textual-light"
        assert app.query_one(RunsPane).max_lines == 200
        log = app.query_one(LogView)
        assert log.max_lines == 200
        log.write_lines(f"line {i}" for i in range(1000))
        await pilot.pause()
        assert log.line_count == 200 and log.lines[0] == "line 800"
        assert not app._notifications


async def test_bad_settings_file_is_a_notification_and_defaults() -> None:
    write('theme = "solarized"\n')
    app = VlmtuiApp(fake_sources())
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: bool(app._notifications), what="the notification")
        (note,) = [n for n in app._notifications if n.title == "settings.toml"]
        assert str(settings_path()) in note.message and "theme" in note.message
        assert note.severity == "error"
        assert app.is_running
        assert app.settings == Settings()
        assert app.theme == "textual-dark"
        assert app.query_one(LogView).max_lines == DEFAULT_MAX_LINES
