"""The recipes pane: every recipe with its per-area modes, a detail view, the model and data
the app works on, and marks for dispatching several recipes at once."""

from __future__ import annotations

from typing import Any, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.suggester import SuggestFromList
from textual.widgets import DataTable, Input, Label, Static

from vlmtui.tui.sources import MODE_STYLES, TRAINABLE_AREAS, recipe_summary
from vlmtui.tui.widgets.tables import highlighted_key

MODE_STYLE = MODE_STYLES


def mode_text(mode: str) -> Text:
    return Text(mode, style=MODE_STYLE.get(mode, ""))


class RecipeDetail(Static):
    """Everything about the highlighted recipe."""

    def show(self, recipe: Any, known: dict[str, Any]) -> None:
        s = recipe_summary(recipe, known)
        t = Text()
        t.append(f"{recipe.name}\n", style="bold")
        t.append(f"{recipe.description or '(no description)'}\n", style="italic")
        t.append(f"source: {recipe.source}\n", style="dim")
        stages = [known[n] for n in recipe.stages] if recipe.stages else [recipe]
        for st in stages:
            if recipe.stages:
                t.append(f"\nstage {st.name}\n", style="bold")
            for area in TRAINABLE_AREAS:
                plan = st.area(area)
                t.append(f"  {area:<10}")
                t.append_text(mode_text(plan.mode))
                if plan.targets:
                    t.append(f"  targets {', '.join(plan.targets)}", style="dim")
                if plan.patterns:
                    t.append(f"  patterns {', '.join(plan.patterns)}", style="dim")
                if plan.learning_rate is not None:
                    t.append(f"  lr {plan.learning_rate:g}")
                t.append("\n")
            t.append(f"  quantization {st.quantization}  dtype {st.compute_dtype}\n")
            t.append(f"  lr {st.learning_rate:g}  batch {st.batch_size}×{st.grad_accum}  ")
            length = f"{st.max_steps} steps" if st.max_steps else f"{st.epochs:g} epochs"
            t.append(f"{length}\n")
            if st.uses_lora:
                lo = st.lora
                t.append(f"  LoRA r={lo.r} alpha={lo.alpha} dropout={lo.dropout:g}\n")
        t.append(f"\nquantized: {'yes' if s['quantized'] else 'no'}", style="dim")
        self.update(t)


class Workspace(Horizontal):
    """Model and dataset inputs (with suggestions), and the embedded demo's state."""

    class Changed(Message):
        def __init__(self, model: str, data: str) -> None:
            self.model = model
            self.data = data
            super().__init__()

    def compose(self) -> ComposeResult:
        yield Label("model", classes="workspace--label")
        yield Input(placeholder="demo (tiny Qwen2-VL)", id="model")
        yield Label("data", classes="workspace--label")
        yield Input(placeholder="demo (shapes)", id="data")
        yield Label("", id="demo-state")

    def set_suggestions(self, models: list[str], data: list[str]) -> None:
        self.query_one("#model", Input).suggester = SuggestFromList(models, case_sensitive=False)
        self.query_one("#data", Input).suggester = SuggestFromList(data, case_sensitive=False)

    def set_values(self, model: str, data: str) -> None:
        self.query_one("#model", Input).value = model
        self.query_one("#data", Input).value = data

    def set_demo_state(self, text: str, state: str) -> None:
        label = self.query_one("#demo-state", Label)
        label.update(text)
        for s in ("preparing", "ready", "failed", "absent"):
            label.set_class(s == state, f"-{s}")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.post_message(
            self.Changed(
                self.query_one("#model", Input).value, self.query_one("#data", Input).value
            )
        )


class RecipesPane(Vertical):
    """Recipes table + detail. Space marks recipes for dispatch."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("space", "toggle_mark", "Mark", id="recipes.mark"),
        Binding("c", "copy_recipe", "Copy", id="recipes.copy"),
        Binding("t", "show_tree", "Tree", id="recipes.tree"),
    ]

    class CopyRequested(Message):
        def __init__(self, recipe: str) -> None:
            self.recipe = recipe
            super().__init__()

    class TreeRequested(Message):
        def __init__(self, recipe: str) -> None:
            self.recipe = recipe
            super().__init__()

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.recipes: dict[str, Any] = {}
        self.marked: set[str] = set()

    def compose(self) -> ComposeResult:
        yield Workspace(id="workspace")
        with Horizontal(id="recipes-body"):
            table: DataTable = DataTable(id="recipes-table", cursor_type="row", zebra_stripes=True)
            table.add_column("", key="mark", width=1)
            table.add_column("recipe", key="name")
            for area in TRAINABLE_AREAS:
                table.add_column(area, key=area)
            table.add_column("quant", key="quant")
            table.add_column("lr", key="lr")
            table.add_column("source", key="source")
            yield table
            # Scrolls with the keys once focused (tab): a two-stage recipe's second stage
            # lay below the pane's edge at 80×24, out of reach of anything but a mouse wheel.
            with VerticalScroll(id="recipe-detail-scroll"):
                yield RecipeDetail(id="recipe-detail")

    @property
    def table(self) -> DataTable:
        return self.query_one("#recipes-table", DataTable)

    def show_recipes(self, recipes: dict[str, Any]) -> None:
        self.recipes = recipes
        self.marked &= set(recipes)
        table = self.table
        current = self.highlighted
        table.clear()
        for name, recipe in recipes.items():
            s = recipe_summary(recipe, recipes)
            source = "built-in" if recipe.source == "built-in" else "user"
            table.add_row(
                "●" if name in self.marked else " ",
                name,
                *(mode_text(s[a]) for a in TRAINABLE_AREAS),
                s["quantization"],
                f"{s['learning_rate']:g}",
                source,
                key=name,
            )
        if current in recipes:
            table.move_cursor(row=table.get_row_index(current))
        self._show_detail()

    @property
    def highlighted(self) -> str | None:
        return highlighted_key(self.table)

    def selected(self) -> list[str]:
        """Marked recipes in table order, else the highlighted one."""
        if self.marked:
            return [n for n in self.recipes if n in self.marked]
        return [self.highlighted] if self.highlighted else []

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._show_detail()

    def _show_detail(self) -> None:
        name = self.highlighted
        if name:
            self.query_one(RecipeDetail).show(self.recipes[name], self.recipes)

    def action_toggle_mark(self) -> None:
        name = self.highlighted
        if not name:
            return
        self.marked ^= {name}
        self.table.update_cell(name, "mark", "●" if name in self.marked else " ")

    def action_copy_recipe(self) -> None:
        if self.highlighted:
            self.post_message(self.CopyRequested(self.highlighted))

    def action_show_tree(self) -> None:
        if self.highlighted:
            self.post_message(self.TreeRequested(self.highlighted))
