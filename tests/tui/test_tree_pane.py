"""Pilot tests of the module tree pane on the tiny demo Qwen2-VL: recipe switching re-marks
the tree and the per-area summary together, the regex filter, and comparing two recipes.

One app per test module would be faster, but each test is kept standalone; the first tree
of a model imports torch (seconds), later ones reuse the session's cached inspector.
"""

from __future__ import annotations

import re

import pytest
from textual.widgets import Input, Select, Static, Tree
from tui_fakes import fake_sources, wait_for

from vlmtui.tui.app import VlmtuiApp
from vlmtui.tui.widgets.bars import human
from vlmtui.tui.widgets.tree_pane import STATE_STYLE, TreePane, counts_text

pytestmark = pytest.mark.anyio

R1, R2 = "r1-llm-only", "r2-vision-only"
VISION, LLM = "model.visual", "model.language_model"


def text(widget: Static) -> str:
    return str(widget.render())


def nodes(pane: TreePane) -> dict[str, object]:
    """Module path -> the tree widget's node, for every node shown."""
    tree: Tree = pane.query_one("#module-tree", Tree)
    out = {}
    stack = [tree.root]
    while stack:
        node = stack.pop()
        if node.data is not None and node.data.name:
            out[node.data.name] = node
        stack.extend(node.children)
    return out


def state_of(pane: TreePane, name: str) -> tuple[str, str]:
    """(state of the module's data, style of its rendered name) as the tree shows them."""
    node = nodes(pane)[name]
    label = node.label
    name_style = label.spans[0].style if label.spans else label.style
    return node.data.state, str(name_style)


def area_summary(pane: TreePane) -> dict[str, str]:
    """area -> "trains N" or "frozen" from the summary line."""
    return dict(
        re.findall(
            r"(vision|projector|llm|lm_head) (trains \S+|frozen)",
            text(pane.query_one("#tree-summary", Static)),
        )
    )


async def open_tree(app: VlmtuiApp, pilot, recipe: str = R1) -> TreePane:
    pane = app.query_one(TreePane)
    await wait_for(pilot, lambda: bool(app.recipes), what="recipes")
    await pilot.press("3")  # the tree pane: marks the highlighted recipe (r1)
    await wait_for(
        pilot, lambda: pane.view is not None and pane.view.recipe == recipe, 180, "first tree"
    )
    return pane


async def choose(pilot, pane: TreePane, select_id: str, value: str, done) -> None:
    """Pick `value` in a Select with the keyboard, then wait for the pane to show it."""
    select = pane.query_one(select_id, Select)
    select.focus()
    await pilot.press("enter")
    options = [None, *pane.app.recipes]  # the blank prompt comes first
    current = options.index(select.value if isinstance(select.value, str) else None)
    steps = options.index(value) - current
    await pilot.press(*(["down"] * steps if steps > 0 else ["up"] * -steps), "enter")
    await wait_for(pilot, done, 30, f"{value} in {select_id}")


@pytest.fixture
def app(qwen2_vl_dir) -> VlmtuiApp:
    return VlmtuiApp(fake_sources(), model=str(qwen2_vl_dir), data="/data/shapes")


async def test_switching_recipes_remarks_tree_and_summary_at_once(app) -> None:
    async with app.run_test(size=(160, 48)) as pilot:
        pane = await open_tree(app, pilot)
        assert state_of(pane, VISION) == ("frozen", STATE_STYLE["frozen"])
        assert state_of(pane, LLM) == ("lora", STATE_STYLE["lora"])
        r1 = pane.view.areas
        assert r1["vision"]["trainable"] == 0 < r1["llm"]["trainable"]
        summary = area_summary(pane)
        assert summary["vision"] == "frozen"
        assert summary["llm"] == f"trains {human(r1['llm']['trainable'])}"
        assert text(pane.query_one("#tree-summary", Static)).startswith(f"{R1} on ")
        # The header and the root count the same way: base parameters, adapters apart
        root = pane.query_one("#module-tree", Tree).root
        head = text(pane.query_one("#tree-summary", Static)).splitlines()[0]
        assert str(counts_text(pane.view.root)) in head
        assert str(counts_text(pane.view.root)) in str(root.label)
        lora = next(n for n in nodes(pane).values() if n.data.state == "lora")
        base, adapter = human(lora.data.total_params), human(lora.data.lora_params)
        assert f"{base} frozen + {adapter} lora" in str(lora.label)

        await choose(pilot, pane, "#tree-recipe", R2, lambda: pane.view.recipe == R2)
        # one message re-marks the tree and the summary together
        assert state_of(pane, VISION) == ("full", STATE_STYLE["full"])
        assert state_of(pane, LLM) == ("frozen", STATE_STYLE["frozen"])
        r2 = pane.view.areas
        assert r2["vision"]["trainable"] == r2["vision"]["params"] > 0
        assert r2["llm"]["trainable"] == 0
        summary = area_summary(pane)
        assert summary["vision"] == f"trains {human(r2['vision']['params'])}"
        assert summary["llm"] == "frozen"
        assert text(pane.query_one("#tree-summary", Static)).startswith(f"{R2} on ")
        assert not pane.query_one("#tree-diff").display  # nothing compared


async def test_regex_filter_narrows_to_matching_paths(app) -> None:
    async with app.run_test(size=(160, 48)) as pilot:
        pane = await open_tree(app, pilot)
        tree: Tree = pane.query_one("#module-tree", Tree)
        tree.focus()
        await pilot.press("slash")
        field = pane.query_one("#tree-filter", Input)
        assert app.focused is field
        await pilot.press(*"q", "underscore", *"proj$")
        assert field.value == "q_proj$"
        expected = [n.name for n in pane.view.full.walk() if n.name.endswith("q_proj")]
        assert len(expected) == 2  # layers 0 and 1 of the tiny LLM
        await wait_for(pilot, lambda: len(tree.root.children) == 2, what="filtered tree")
        shown = [str(child.label).split("  ")[0] for child in tree.root.children]
        assert shown == expected  # full module paths, in model order
        assert all(child.data.state == "lora" for child in tree.root.children)
        assert not field.has_class("-invalid")

        await pilot.press("backspace", "backspace", "backspace", "backspace", "backspace")
        await pilot.press("backspace", "backspace", "left_square_bracket")
        assert field.value == "["
        await wait_for(pilot, lambda: bool(app._notifications), what="bad-regex notification")
        (note,) = app._notifications
        assert note.title == "bad filter regex" and "'['" in note.message
        assert app.is_running and field.has_class("-invalid")
        assert "bad regex" in str(tree.root.children[0].label)
        await pilot.press("a")  # the same error again: no second notification
        assert len(app._notifications) == 1

        field.value = ""
        await wait_for(pilot, lambda: VISION in nodes(pane), what="the whole tree again")
        assert not field.has_class("-invalid")


async def test_compare_with_recipe_shows_the_diff(app) -> None:
    async with app.run_test(size=(160, 48)) as pilot:
        pane = await open_tree(app, pilot)
        diff: Static = pane.query_one("#tree-diff", Static)
        assert not diff.display
        await choose(pilot, pane, "#tree-compare", R2, lambda: pane.view.compare == R2)
        assert diff.display
        body = text(diff)
        assert body.startswith(f"{R1} → {R2}: ")
        assert f"{VISION} frozen → full" in body
        assert re.search(
            r"model\.language_model\.layers\.\{0–1\}\.self_attn ×2 lora → frozen", body
        )
        assert pane.view.recipe == R1  # the tree itself stays on r1
        assert state_of(pane, VISION)[0] == "frozen"
