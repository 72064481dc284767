"""Focus never eats a keystroke: Esc leaves every text field, Enter ends a search so `n` / `N`
work, the help scrolls at once, and the dispatch dialog starts on its choices (digits, Down and
Enter work there). Each test presses the keys a user pressed when the fault was seen."""

from __future__ import annotations

import pytest
from textual import events
from textual.containers import VerticalScroll
from textual.widgets import DataTable, Input, TabbedContent, Tree
from tui_fakes import fake_sources, screen_text, wait_for

from vlmtui.core.inspection.tree import ModuleNode
from vlmtui.tui.app import FOCUS, VlmtuiApp
from vlmtui.tui.inspection import TreeView
from vlmtui.tui.screens.dispatch import AUTO, CPU, DeviceList, DispatchScreen
from vlmtui.tui.screens.help import HelpScreen
from vlmtui.tui.widgets.gpus_pane import GpusPane
from vlmtui.tui.widgets.log_view import LogView
from vlmtui.tui.widgets.recipes_pane import RecipesPane
from vlmtui.tui.widgets.runs_pane import RunsPane
from vlmtui.tui.widgets.tree_pane import TreePane

pytestmark = pytest.mark.anyio
SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((160, 48), id="160x48")]


async def focused_on(pilot, selector: str) -> None:
    app = pilot.app
    await wait_for(
        pilot,
        lambda: app.focused is not None and app.focused is app.screen.query_one(selector),
        what=f"focus on {selector}",
    )


async def recipes_loaded(pilot) -> None:
    pane = pilot.app.query_one(RecipesPane)
    await wait_for(pilot, lambda: pane.table.row_count == 4, what="recipes")


@pytest.mark.parametrize("size", SIZES)
async def test_esc_leaves_the_workspace_fields_and_digits_switch_panes(size) -> None:
    app = VlmtuiApp(fake_sources(), model="m", data="d")
    async with app.run_test(size=size) as pilot:
        await recipes_loaded(pilot)
        app.query_one("#model", Input).focus()
        await focused_on(pilot, "#model")
        await pilot.press("tab")
        await focused_on(pilot, "#data")
        await pilot.press("escape")
        await focused_on(pilot, "#recipes-table")
        await pilot.press("3")
        assert app.query_one("#data", Input).value == "d"
        assert app.query_one("#panes").active == "tree"


@pytest.mark.parametrize("keys", ["34", "43", "2143", "4321"])
async def test_digits_typed_faster_than_the_app_draws_end_on_the_last_pane(keys) -> None:
    """All the keys arrive before the first tab switch is handled (a fast typist, or keys
    typed while the app starts): the switch for an earlier digit must not pull the tabs back
    to its pane (they ended on `3` after `3` `4`, and could bounce between two panes, the UI
    frozen)."""
    app = VlmtuiApp(fake_sources(), model="m", data="d")
    want = {"1": "recipes", "2": "gpus", "3": "tree", "4": "runs"}[keys[-1]]
    async with app.run_test(size=(80, 24)) as pilot:
        await recipes_loaded(pilot)
        for key in keys:  # as the terminal driver posts them: no wait in between
            app.post_message(events.Key(key, key))
        tabs = app.query_one("#panes", TabbedContent)
        await wait_for(pilot, lambda: tabs.active == want, what=f"pane {want}")
        seen = set()
        for _ in range(10):  # settled: no stale switch comes after
            await pilot.pause(0.05)
            seen.add(tabs.active)
        assert seen == {want}
        await focused_on(pilot, FOCUS[want])


async def test_keys_right_after_a_digit_go_to_the_new_pane() -> None:
    """Keys typed right after a pane digit (before the tab switch is handled) went to the
    hidden pane's widget: `4` `c` copied the highlighted recipe instead of charting a run."""
    copied: list[str] = []
    app = VlmtuiApp(fake_sources(), model="m", data="d")
    app.copy_recipe = copied.append  # type: ignore[method-assign]  # the worker writing a TOML
    async with app.run_test(size=(80, 24)) as pilot:
        await recipes_loaded(pilot)
        runs = app.query_one(RunsPane)
        await wait_for(pilot, lambda: runs.table.row_count == 3, what="runs")
        for key in ("4", "c"):  # as the terminal driver posts them: no wait in between
            app.post_message(events.Key(key, key))
        await wait_for(pilot, lambda: runs.has_class("-chart"), what="the chart")
        assert copied == []
        for key in ("1", "down", "down"):
            app.post_message(events.Key(key, key if len(key) == 1 else None))
        recipes = app.query_one(RecipesPane)
        await wait_for(pilot, lambda: recipes.highlighted == "r3-two-stage", what="r3")
        assert runs.highlighted == "20250101-120003-ab13"  # the runs table did not move


async def test_tab_reaches_the_recipe_detail_and_the_keys_scroll_it() -> None:
    """At 80×24 the two-stage recipe's second stage lay below the detail's edge, and the
    detail took no keys: only a mouse wheel reached it."""
    app = VlmtuiApp(fake_sources(), model="m", data="d")
    async with app.run_test(size=(80, 24)) as pilot:
        await recipes_loaded(pilot)
        await pilot.press("down", "down")  # r3-two-stage
        assert app.query_one(RecipesPane).highlighted == "r3-two-stage"
        await pilot.press("tab")
        await focused_on(pilot, "#recipe-detail-scroll")
        scroll = app.query_one("#recipe-detail-scroll", VerticalScroll)
        await wait_for(pilot, lambda: scroll.max_scroll_y > 0, what="a detail taller than 80x24")
        assert "stage r1-llm-only" not in screen_text(app)
        await pilot.press("end")
        await wait_for(pilot, lambda: "stage r1-llm-only" in screen_text(app), what="stage 2")
        await pilot.press("shift+tab")
        await focused_on(pilot, "#recipes-table")


@pytest.mark.parametrize("size", SIZES)
async def test_esc_leaves_the_tree_filter_and_no_match_says_so(size) -> None:
    app = VlmtuiApp(fake_sources(), model="m", data="d")
    async with app.run_test(size=size) as pilot:
        await recipes_loaded(pilot)
        await pilot.press("3")
        await focused_on(pilot, "#module-tree")
        await pilot.press("slash")
        await focused_on(pilot, "#tree-filter")
        await pilot.press(*"mlp")
        await pilot.press("escape")
        await focused_on(pilot, "#module-tree")
        await pilot.press("1")
        assert app.query_one("#tree-filter", Input).value == "mlp"
        assert app.query_one("#panes").active == "recipes"


async def test_filter_without_match_shows_a_line_instead_of_an_empty_tree() -> None:
    child = ModuleNode("mlp", "mlp", "Linear", "llm", 10, 10)
    root = ModuleNode("", "", "Model", "other", 0, 10, children=(child,))
    view = TreeView("m", "r1", root, root, {}, 10, 0, "")
    app = VlmtuiApp(fake_sources(), model="m", data="d")
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("3")
        pane = app.query_one(TreePane)
        pane.show(view)
        await pilot.press("slash", *"mlp1", "enter")
        await focused_on(pilot, "#module-tree")
        tree = app.query_one("#module-tree", Tree)
        labels = [str(n.label) for n in tree.root.children]
        assert labels == ["no module name matches 'mlp1'"]


@pytest.mark.parametrize("size", SIZES)
async def test_enter_ends_the_log_search_so_n_and_N_move(size) -> None:
    app = VlmtuiApp(fake_sources(), model="m", data="d")
    async with app.run_test(size=size) as pilot:
        await pilot.press("4")
        pane = app.query_one(RunsPane)
        await wait_for(pilot, lambda: pane.table.row_count == 3, what="runs")
        log = app.query_one(LogView)
        await wait_for(pilot, lambda: log.line_count == 30, what="the log")
        await focused_on(pilot, "#runs-table")
        await pilot.press("slash")
        await focused_on(pilot, "#log-search")
        await pilot.press(*"step  2", "enter")
        await focused_on(pilot, "#run-log")
        first = log._match_row
        assert first is not None and "step  2" in log.lines[first]
        await pilot.press("n")
        assert log._match_row is not None and log._match_row > first
        await pilot.press("N")
        assert log._match_row == first
        assert app.query_one("#log-search", Input).value == "step  2"
        await pilot.press("escape")
        await focused_on(pilot, "#runs-table")
        assert log.search == ""
        await pilot.press("2")
        assert app.query_one("#panes").active == "gpus"


async def test_f_follows_the_log_again_from_the_runs_table() -> None:
    """A search scrolls the log back (following stops); Esc returns to the table, where `f`,
    which the help lists, did nothing: only the focused log had the key."""
    app = VlmtuiApp(fake_sources(), model="m", data="d")
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("4")
        log = app.query_one(LogView)
        await wait_for(pilot, lambda: log.line_count == 30, what="the log")
        await pilot.press("slash", *"step  2", "enter", "escape")
        await focused_on(pilot, "#runs-table")
        assert not log.follow and log.scroll_y < log.max_scroll_y
        await pilot.press("f")
        await wait_for(pilot, lambda: log.follow and log.scroll_y == log.max_scroll_y)


async def test_the_footer_keeps_dispatch_and_quit_while_the_log_has_the_focus() -> None:
    app = VlmtuiApp(fake_sources(), model="m", data="d")
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("4")
        log = app.query_one(LogView)
        await wait_for(pilot, lambda: log.line_count == 30, what="the log")
        log.focus()
        await focused_on(pilot, "#run-log")
        await pilot.pause(0.1)
        footer = screen_text(app).splitlines()[-1]
        assert "d Dispatch" in footer and "q Quit" in footer, footer


@pytest.mark.parametrize("size", SIZES)
async def test_help_scrolls_with_down_and_pagedown_at_once(size) -> None:
    app = VlmtuiApp(fake_sources(), model="m", data="d")
    async with app.run_test(size=size) as pilot:
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen), what="help")
        scroll = app.screen.query_one("#help-scroll", VerticalScroll)
        await focused_on(pilot, "#help-scroll")
        await wait_for(pilot, lambda: scroll.max_scroll_y > 0 or size == (160, 48))
        if scroll.max_scroll_y == 0:
            return  # everything fits: nothing to scroll
        await pilot.press("down")
        await wait_for(pilot, lambda: scroll.scroll_y >= 1, what="scroll by a line")
        await pilot.press("pagedown")
        await wait_for(pilot, lambda: scroll.scroll_y > 1, what="scroll by a page")
        await pilot.press("end")
        await wait_for(pilot, lambda: scroll.scroll_y == scroll.max_scroll_y, what="the end")


async def open_dispatch(pilot) -> DeviceList:
    app = pilot.app
    await wait_for(pilot, lambda: app.query_one(GpusPane).refreshes == 1, what="GPUs")
    await recipes_loaded(pilot)
    await focused_on(pilot, "#recipes-table")
    await pilot.press("d")
    await wait_for(pilot, lambda: isinstance(app.screen, DispatchScreen), what="the dialog")
    await focused_on(pilot, "#dispatch-devices")
    return app.screen.query_one(DeviceList)


@pytest.mark.parametrize("size", SIZES)
async def test_dispatch_starts_on_the_devices_and_down_enter_chooses_the_cpu(size) -> None:
    app = VlmtuiApp(fake_sources(), model="m", data="d")
    async with app.run_test(size=size) as pilot:
        sl = await open_dispatch(pilot)
        assert sl.highlighted == 0 and sl.selected == [AUTO]
        await pilot.press("end", "enter")  # End: the CPU is the last choice
        assert sl.selected == [CPU]
        await pilot.press("home", "down", "enter")
        assert sl.selected == [CPU, "0"]
        await pilot.press("up", "enter")
        assert sl.selected == [AUTO]


@pytest.mark.parametrize("size", SIZES)
async def test_dispatch_digits_choose_gpus_and_never_switch_panes(size) -> None:
    plans = []
    app = VlmtuiApp(fake_sources(), model="m", data="d")
    async with app.run_test(size=size) as pilot:
        sl = await open_dispatch(pilot)
        await pilot.press("3", "4")
        assert sl.selected == ["3", "4"]
        await pilot.press("4", "c")
        assert sl.selected == ["3", CPU]
        assert app.main.query_one("#panes").active == "recipes"
        app.screen.dismiss = plans.append
        await pilot.press("tab")
        await focused_on(pilot, "#dispatch-steps")
        await pilot.press("5", "enter")
        assert plans and plans[-1].max_steps == 5 and plans[-1].devices[0] == "3"


async def test_esc_in_the_dispatch_steps_field_closes_the_dialog() -> None:
    app = VlmtuiApp(fake_sources(), model="m", data="d")
    async with app.run_test(size=(80, 24)) as pilot:
        await open_dispatch(pilot)
        await pilot.press("tab")
        await focused_on(pilot, "#dispatch-steps")
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, DispatchScreen), what="closed")
        assert isinstance(app.focused, DataTable)
