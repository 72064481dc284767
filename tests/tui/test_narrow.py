"""At 80×24 every pane and dialog shows its essential keys (and `? Help` always), and no
identifier (recipe name, run id, host name) is cut. Checked on the plain text a terminal
shows, so a column squeezed off the edge or a footer item past the right border fails."""

from __future__ import annotations

import re

import pytest
from tui_fakes import fake_sources, recorded_gpus, recorded_runs, screen_text, wait_for

from vlmtui.tui.app import VlmtuiApp
from vlmtui.tui.screens.dispatch import DispatchScreen
from vlmtui.tui.screens.help import HelpScreen
from vlmtui.tui.widgets.gpus_pane import GpusPane
from vlmtui.tui.widgets.log_view import LogView
from vlmtui.tui.widgets.recipes_pane import RecipesPane
from vlmtui.tui.widgets.runs_pane import RunsPane, short_id

pytestmark = pytest.mark.anyio
RECIPES = ("r1-llm-only", "r2-vision-only", "r3-two-stage", "r4-joint")


def footer(text: str) -> str:
    return text.rstrip("\n").splitlines()[-1]


def assert_whole(text: str, words: list[str]) -> None:
    for word in words:
        assert re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", text), f"{word!r} cut or gone"


async def keys_shown(pilot, keys: list[str]) -> str:
    """The screen once its footer shows every key of `keys` and `? Help` (the footer is
    rebuilt a moment after focus moves); fails naming the footer it saw."""
    wanted = [*keys, "? Help"]
    seen = {"text": ""}

    def shown() -> bool:
        seen["text"] = screen_text(pilot.app)
        return all(k in footer(seen["text"]) for k in wanted)

    try:
        await wait_for(pilot, shown, timeout=20)
    except BaseException:
        pytest.fail(f"footer lacks some of {wanted}: {footer(seen['text'])!r}")
    return seen["text"]


async def test_every_pane_at_80x24_keeps_its_keys_and_identifiers() -> None:
    app = VlmtuiApp(fake_sources(), model="Qwen/Qwen2-VL-2B-Instruct", data="/data/shapes")
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.query_one(RecipesPane).table.row_count == 4)
        await wait_for(pilot, lambda: app.query_one(GpusPane).refreshes == 1)
        text = await keys_shown(
            pilot, ["space Mark", "c Copy", "t Tree", "1234 panes", "d Dispatch", "q Quit"]
        )
        assert_whole(text, list(RECIPES))

        await pilot.press("2")
        await wait_for(pilot, lambda: app.focused is app.query_one("#gpus-table"))
        text = await keys_shown(pilot, ["1234 panes", "d Dispatch", "q Quit"])
        assert_whole(text, [h.name for h in recorded_gpus()[:3]])

        await pilot.press("4")
        pane = app.query_one(RunsPane)
        await wait_for(pilot, lambda: pane.table.row_count == 3)
        await wait_for(pilot, lambda: app.query_one(LogView).line_count == 30)
        await wait_for(pilot, lambda: "1:30" in screen_text(app), what="the ETA")
        text = await keys_shown(pilot, ["s Stop", "/ Search", "1234 panes", "q Quit"])
        runs = recorded_runs()
        assert_whole(text, [short_id(r.id) for r in runs] + [r.recipe for r in runs])
        assert_whole(text, [f"{r.host}:{r.gpu}" for r in runs] + [runs[0].id])
        header = next(line for line in text.splitlines() if line.lstrip().startswith("id "))
        assert header.split()[-1] == "eta"


async def test_dialogs_at_80x24_show_their_buttons_and_hints() -> None:
    app = VlmtuiApp(fake_sources(), model="Qwen/Qwen2-VL-2B-Instruct", data="/data/shapes")
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.query_one(RecipesPane).table.row_count == 4)
        await wait_for(pilot, lambda: app.query_one(GpusPane).refreshes == 1)
        await pilot.press("space", "down", "space", "d")
        await wait_for(pilot, lambda: isinstance(app.screen, DispatchScreen))
        await pilot.pause(0.1)
        text = screen_text(app)
        assert_whole(text, ["r1-llm-only", "r2-vision-only", "gpu01", "Next: check", "Cancel"])
        assert "esc: cancel" in text
        await pilot.press("escape")
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen))
        text = screen_text(app)
        assert "esc to close" in text


async def test_the_run_line_wraps_the_error_and_eval_metrics_instead_of_cutting_them() -> None:
    """The line above the log ended in the failed run's error and the eval metrics: at 80
    columns `CUDA out of memory` read `CUDA`, and the metrics `map` with no number (the side
    panel that repeats them is hidden below 120 columns)."""
    app = VlmtuiApp(fake_sources(), model="m", data="d")
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("4")
        pane = app.query_one(RunsPane)
        await wait_for(pilot, lambda: pane.table.row_count == 3, what="runs")
        failed, finished = recorded_runs()[1].id, recorded_runs()[2].id
        pane.select(failed)
        await wait_for(pilot, lambda: "CUDA out of memory" in screen_text(app), what="error")
        pane.select(finished)
        want = ["map 0.412", "map50 0.679", "recall 0.550", "mean_iou 0.610"]
        await wait_for(pilot, lambda: all(w in screen_text(app) for w in want), what="metrics")


async def test_tree_filter_rows_keep_a_72b_models_numbers_at_80_columns() -> None:
    """A filter row is a full module path: with the class and the counts after it, Qwen2-VL-
    72B's `model.language_model.layers.10.self_attn.q_proj  Linear 4bit  67.1M frozen +
    262.1K lora` was cut inside the numbers at 80 columns."""
    from vlmtui.core.inspection.tree import ModuleNode
    from vlmtui.tui.inspection import TreeView
    from vlmtui.tui.widgets.tree_pane import TreePane

    base, lora = 67_108_864, 262_144

    def q_proj(i: int) -> ModuleNode:
        name = f"model.language_model.layers.{i}.self_attn.q_proj"
        return ModuleNode(name, "q_proj", "Linear4bit", "llm", base, base, 0, lora, lora,
                          "lora", "lora", quant="4bit")  # fmt: skip

    def layer(i: int) -> ModuleNode:
        return ModuleNode(f"model.language_model.layers.{i}", str(i), "Qwen2VLDecoderLayer",
                          "llm", 0, base, 0, lora, lora, "lora", "frozen",
                          children=(q_proj(i),))  # fmt: skip

    layers = tuple(layer(i) for i in range(80))
    root = ModuleNode("", "", "Qwen2VLForConditionalGeneration", "other", 0, 80 * base,
                      children=layers)  # fmt: skip
    view = TreeView("Qwen/Qwen2-VL-72B-Instruct", "r1-llm-only", root, root, {}, 80 * base, 0, "")
    app = VlmtuiApp(fake_sources(), model="m", data="d")
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("3")
        app.query_one(TreePane).show(view)
        await pilot.press("slash", *"q_proj", "enter")
        row = "model.language_model.layers.10.self_attn.q_proj  4bit  67.1M + 262.1K lora"
        await wait_for(pilot, lambda: "layers.10." in screen_text(app), what="the matches")
        await wait_for(pilot, lambda: row in screen_text(app), what=f"{row!r} whole")
