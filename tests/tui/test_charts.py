"""The runs pane's charts: marked runs overlaid in their own colours with axes, smoothing,
eval metrics as bars; `c` shows them in place of the log, so they exist at 80×24 too."""

from __future__ import annotations

import pytest
from tui_fakes import fake_sources, screen_text, wait_for

from vlmtui.tui.app import VlmtuiApp
from vlmtui.tui.widgets.charts import PALETTE, LossChart, MetricsChart, ema
from vlmtui.tui.widgets.runs_pane import RunsPane

pytestmark = pytest.mark.anyio


def test_ema_starts_at_the_first_value_and_follows() -> None:
    assert ema([2.0, 2.0, 2.0], 0.8) == pytest.approx([2.0, 2.0, 2.0])
    smooth = ema([1.0, 0.0, 0.0, 0.0], 0.5)
    assert smooth[0] == 1.0 and smooth[1] < 1.0 and smooth[-1] < smooth[1]


@pytest.mark.parametrize("size", [(80, 24), (160, 48)], ids=["80x24", "160x48"])
async def test_marked_runs_overlay_smooth_and_show_their_metrics(size) -> None:
    app = VlmtuiApp(fake_sources(), model="m", data="d")
    async with app.run_test(size=size) as pilot:
        await pilot.press("4")
        pane = app.query_one(RunsPane)
        await wait_for(pilot, lambda: pane.table.row_count == 3, what="runs")
        await wait_for(pilot, lambda: app.focused is pane.table, what="focus")
        await wait_for(pilot, lambda: len(pane.details) == 3, what="run details")
        loss, metrics = app.query_one(LossChart), app.query_one(MetricsChart)
        assert loss.shown == ("120003-ab13",)  # nothing marked: the highlighted run
        await pilot.press("space", "down", "down", "space")
        assert pane.marked == ["20250101-120003-ab13", "20250101-120001-ab11"]
        assert pane.color_of(pane.marked[1]) == PALETTE[1]
        assert loss.shown == ("120003-ab13", "120001-ab11")
        assert metrics.shown == ("120001-ab11",)  # only the finished run has eval metrics
        await pilot.press("c")
        await wait_for(pilot, lambda: loss.region.width > 0 and metrics.region.width > 0)
        text = screen_text(app)
        assert "step" in text and "eval" in text and "map50" in text
        assert "120003-ab13" in text and "120001-ab11" in text  # the legend
        await pilot.press("m")
        assert loss.smooth
        await wait_for(pilot, lambda: "loss (smoothed)" in screen_text(app), what="smoothed")
        await pilot.press("space")  # unmark the second run
        assert loss.shown == ("120003-ab13",)


def test_the_run_lines_loss_trend_spans_the_whole_run_between_its_extremes() -> None:
    """The line above the log drew the last 16 losses from 0 up: a run from 6.19 to 6.02 read
    `████████████████`, and 100 steps falling from 2.7 to 0.3 a flat `▂▂▂▂▂▂▂▂▂▂▂▂▂▂▂▂`."""
    from vlmtui.tui.widgets.runs_pane import loss_trend

    near_start = [6.19 - 0.006 * s for s in range(29)]
    assert loss_trend(near_start).plain == "██▇▇▆▆▅▅▄▄▃▃▃▂▂▁"
    falling = [3.0 / (1 + s / 10) for s in range(1, 101)]
    trend = loss_trend(falling).plain
    assert trend[0] == "█" and trend[-1] == "▁" and len(set(trend)) > 4
    assert loss_trend([6.19, 6.2, 6.14]).plain == "             ▇█▁"  # fewer steps: as they are
