"""The module tree pane: the chosen model's modules coloured by what a recipe trains.

Built by a worker from `core.modeltree` (see `inspection.py`); switching recipes re-marks the
cached tree, so the highlighting changes at once. Repeated blocks are collapsed (`0–27 ×28`),
a filter shows the modules whose name matches a regex (a bad one is a notification, once per
error, and marks the input invalid), and a second recipe can be compared.
"""

from __future__ import annotations

from typing import Any, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.validation import Function
from textual.widgets import Input, Select, Static, Tree

from vlmtui.tui.sources import MODE_STYLES, compile_filter, filter_nodes, regex_problem
from vlmtui.tui.widgets.bars import human

STATE_STYLE = MODE_STYLES
EXPAND_DEPTH = 3
MAX_MATCHES = 500


def is_regex(pattern: str) -> bool:
    return regex_problem(pattern) is None


def counts_text(node: Any, compact: bool = False) -> Text:
    """What a module trains, the frozen base and the adapter apart: `233.4M frozen`,
    `1.5M full`, `4.2K frozen + 2.0K lora`, `2.2B base · trains 665.3M (2.0K lora)`.
    `2.0K/4.2K lora` read as "half of q_proj trains", which is never what LoRA does.
    `compact` (the filter's rows, which carry a full module path): `4.2K + 2.0K lora`."""
    base, lora = node.total_params, node.lora_params
    base_trains = node.trainable_params - lora
    t = Text()
    if node.state == "frozen":
        t.append(f"{human(base)} frozen", style="dim")
    elif node.state == "full":
        t.append(f"{human(base)} full", style=STATE_STYLE["full"])
    elif node.state == "lora":
        t.append(human(base) if compact else f"{human(base)} frozen", style="dim")
        t.append(" + ")
        t.append(f"{human(lora)} lora", style=STATE_STYLE["lora"])
    else:
        t.append(f"{human(base)} base · ")
        t.append(f"trains {human(node.trainable_params)}", style=STATE_STYLE["mixed"])
        if lora and base_trains:
            t.append(f" ({human(base_trains)} base + {human(lora)} lora)", style="dim")
        elif lora:
            t.append(" (lora)", style="dim")
    return t


def node_label(node: Any, name: str | None = None, with_class: bool = True) -> Text:
    t = Text()
    t.append(name or node.label or "(model)", style=STATE_STYLE.get(node.state, ""))
    if with_class:
        t.append(f"  {node.cls}", style="italic dim")
    if node.quant:
        t.append(f" {node.quant}", style="magenta")
    t.append("  ")
    t.append_text(counts_text(node))
    return t


def match_label(node: Any) -> Text:
    """A filter match: its full path, then what it trains, then its class. At 80 columns a
    72B model's `model.language_model.layers.10.self_attn.q_proj  Linear 4bit  67.1M frozen +
    262.1K lora` was cut inside the numbers; now only the class, last, may be cut."""
    t = Text()
    t.append(node.name, style=STATE_STYLE.get(node.state, ""))
    if node.quant:
        t.append(f"  {node.quant}", style="magenta")
    t.append("  ")
    t.append_text(counts_text(node, compact=True))
    t.append(f"  {node.cls}", style="italic dim")
    return t


class TreePane(Vertical):
    """Recipe pickers, the per-area summary and the module tree."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("slash", "filter", "Filter", id="tree.filter")]

    class Wanted(Message):
        """The user picked a recipe (and maybe one to compare with)."""

        def __init__(self, recipe: str, compare: str | None) -> None:
            self.recipe = recipe
            self.compare = compare
            super().__init__()

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.view: Any = None
        self._regex_error = ""

    def compose(self) -> ComposeResult:
        with Horizontal(id="tree-bar"):
            yield Select[str]([], prompt="recipe", allow_blank=True, id="tree-recipe")
            yield Select[str]([], prompt="compare with…", allow_blank=True, id="tree-compare")
            yield Input(
                placeholder="filter (regex)",
                id="tree-filter",
                validators=[Function(is_regex, "not a regular expression")],
            )
        yield Static("choose a recipe to see what it trains", id="tree-summary")
        tree: Tree[Any] = Tree("model", id="module-tree")
        tree.show_root = True
        yield tree
        yield Static("", id="tree-diff")

    def set_recipes(self, names: list[str]) -> None:
        """The recipes to pick from (again after a reload): each picker keeps its choice
        while that recipe exists, without posting `Wanted` (the app decides on a re-mark)."""
        for select in self.query(Select).results(Select):
            kept = select.value
            with select.prevent(Select.Changed):
                select.set_options((n, n) for n in names)
                if kept in names:
                    select.value = kept

    def choose(self, recipe: str) -> None:
        """Select `recipe` (posts `Wanted`)."""
        self.query_one("#tree-recipe", Select).value = recipe

    def on_select_changed(self, event: Select.Changed) -> None:
        event.stop()
        recipe = self.query_one("#tree-recipe", Select).value
        compare = self.query_one("#tree-compare", Select).value
        if isinstance(recipe, str):
            self.show_loading(f"marking the tree for {recipe}…")
            self.post_message(self.Wanted(recipe, compare if isinstance(compare, str) else None))

    def show_loading(self, text: str) -> None:
        self.query_one("#tree-summary", Static).update(Text(text, style="italic"))

    def show(self, view: Any) -> None:
        """Render a `inspection.TreeView`."""
        self.view = view
        s = Text()
        s.append(f"{view.recipe}", style="bold")
        # The same numbers as the root line: base parameters, and the adapters beside them.
        s.append(f" on {view.model}: ")
        s.append_text(counts_text(view.root))
        for area, c in view.areas.items():
            if c["params"] or c["trainable"]:
                s.append(f"  {area} ")
                if c["trainable"]:
                    s.append(f"trains {human(c['trainable'])}", style="bold")
                else:
                    s.append("frozen", style="dim")
        if view.memory:
            s.append(f"\nmemory: {view.memory}", style="cyan")
        self.query_one("#tree-summary", Static).update(s)
        self._render_tree(self.query_one("#tree-filter", Input).value)
        diff = self.query_one("#tree-diff", Static)
        if view.compare:
            d = Text(f"{view.recipe} → {view.compare}: ", style="bold")
            if not view.changes:
                d.append("same trainable set")
            for ch in view.changes[:12]:
                count = f" ×{ch.count}" if ch.count > 1 else ""
                d.append(f"\n  {ch.name}{count} ")
                d.append(ch.before, style=STATE_STYLE.get(ch.before, ""))
                d.append(" → ")
                d.append(ch.after, style=STATE_STYLE.get(ch.after, ""))
            if len(view.changes) > 12:
                d.append(f"\n  … {len(view.changes) - 12} more")
            diff.update(d)
            diff.display = True
        else:
            diff.display = False

    def _render_tree(self, pattern: str) -> None:
        tree: Tree[Any] = self.query_one("#module-tree", Tree)
        tree.clear()
        view = self.view
        if view is None:
            return
        # The root's class name is long and the summary names the model: counts fit at 80.
        tree.root.set_label(node_label(view.root, view.model, with_class=False))
        tree.root.data = view.root
        rx = None
        if pattern:
            problem = regex_problem(pattern)
            if problem is None:
                rx = compile_filter(pattern)
            else:
                tree.root.add_leaf(Text(f"bad regex: {problem}", style="red"))
                tree.root.expand()
                if problem != self._regex_error:  # once per error, not once per keystroke
                    self._regex_error = problem
                    msg = f"{pattern!r}: {problem}"
                    self.notify(msg, title="bad filter regex", severity="warning")
                return
        self._regex_error = ""
        if rx is not None:
            matches = filter_nodes(view.full, rx)
            if not matches:
                tree.root.add_leaf(Text(f"no module name matches {pattern!r}", style="yellow"))
            for n in matches[:MAX_MATCHES]:
                tree.root.add_leaf(match_label(n), data=n)
            if len(matches) > MAX_MATCHES:
                tree.root.add_leaf(Text(f"… {len(matches) - MAX_MATCHES} more", style="dim"))
            tree.root.expand()
            return

        def add(parent: Any, node: Any, depth: int) -> None:
            for child in node.children:
                if child.children:
                    branch = parent.add(node_label(child), data=child, expand=depth < EXPAND_DEPTH)
                    add(branch, child, depth + 1)
                else:
                    parent.add_leaf(node_label(child), data=child)

        add(tree.root, view.root, 1)
        tree.root.expand()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "tree-filter":
            event.stop()
            self.query_one("#module-tree", Tree).focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "tree-filter":
            event.stop()
            self._render_tree(event.value)

    def action_filter(self) -> None:
        self.query_one("#tree-filter", Input).focus()
