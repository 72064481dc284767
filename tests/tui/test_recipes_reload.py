"""`r` reloads the recipes too: the user copied one with `c`, edited its TOML, and pressed `r`.
The table showed the old learning rate, and the pre-flight checked the old definition while
the launch read the new one. A reload keeps the tree pane's picks (they went blank while the
tree still showed the recipe) and re-marks the tree when its recipe changed."""

from __future__ import annotations

from dataclasses import replace

import pytest
from textual.widgets import Select
from tui_fakes import fake_sources, wait_for

from vlmtui.core.recipes.recipe import BUILTIN_RECIPES
from vlmtui.tui.app import VlmtuiApp
from vlmtui.tui.widgets.recipes_pane import RecipesPane
from vlmtui.tui.widgets.tree_pane import TreePane

pytestmark = pytest.mark.anyio
R1, R2 = "r1-llm-only", "r2-vision-only"


class Catalog:
    """The recipes folder as the catalog reads it; `edit` stands in for the user's editor."""

    def __init__(self) -> None:
        self.recipes = dict(BUILTIN_RECIPES)
        self.loads = 0

    def __call__(self) -> dict:
        self.loads += 1
        return dict(self.recipes)

    def edit(self, name: str, **changes: object) -> None:
        self.recipes[name] = replace(self.recipes[name], **changes)


def lr_cell(app: VlmtuiApp, name: str) -> str:
    return str(app.query_one(RecipesPane).table.get_cell(name, "lr"))


async def test_r_reloads_an_edited_recipe() -> None:
    catalog = Catalog()
    app = VlmtuiApp(fake_sources(recipes=catalog), model="m", data="d")
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.query_one(RecipesPane).table.row_count == 4)
        assert lr_cell(app, R1) == "0.0002"
        catalog.edit(R1, learning_rate=5e-4)
        await pilot.press("r")
        await wait_for(pilot, lambda: lr_cell(app, R1) == "0.0005", what="the new lr")
        assert app.recipes[R1].learning_rate == 5e-4  # what the pre-flight checks


async def test_a_reload_keeps_the_tree_picks_and_remarks_an_edited_recipe() -> None:
    catalog = Catalog()
    app = VlmtuiApp(fake_sources(recipes=catalog), model="m", data="d")
    built: list[tuple[str, str | None, float]] = []

    def build_tree(model: str, recipe: str, compare: str | None) -> None:
        # stands in for the worker that marks the real model (inspection.tree_view)
        built.append((recipe, compare, app.recipes[recipe].learning_rate))

    app.build_tree = build_tree  # type: ignore[method-assign]
    app.demo_paths = ("m", "d")
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: bool(app.recipes), what="recipes")
        pane = app.query_one(TreePane)
        picks = pane.query_one("#tree-recipe", Select), pane.query_one("#tree-compare", Select)
        picks[0].value, picks[1].value = R1, R2
        await wait_for(pilot, lambda: (R1, R2, 2e-4) in built, what="the first marking")
        await pilot.pause(0.2)
        built.clear()

        loads = catalog.loads
        await pilot.press("r")  # nothing changed: no new marking, the picks stay
        await wait_for(pilot, lambda: catalog.loads > loads, what="a reload")
        await pilot.pause(0.2)
        assert [p.value for p in picks] == [R1, R2]
        assert built == []

        catalog.edit(R1, learning_rate=5e-4)
        await pilot.press("r")
        await wait_for(pilot, lambda: (R1, R2, 5e-4) in built, what="the edited recipe marked")
        assert [p.value for p in picks] == [R1, R2]
