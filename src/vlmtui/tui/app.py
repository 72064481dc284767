"""The vlmtui app: four panes in tabs, the dispatch flow, help, themes and the palette.

Screens and panes render; blocking work lives in `workers.py`; data comes from `sources.py`.
Quitting only closes the window: runs are detached processes and keep going.
settings.toml (`core.settings`) sets the refresh intervals, the log view's size and the theme.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar

from textual import on
from textual.app import App, ComposeResult, ScreenStackError, SystemCommand
from textual.binding import Binding, BindingType
from textual.css.query import NoMatches
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Header, Input, TabbedContent, TabPane
from textual.worker import Worker, WorkerState

from vlmtui.core.errors import BadInput
from vlmtui.core.settings import Settings, load_settings
from vlmtui.tui import recent
from vlmtui.tui.dispatching import DispatchFlowMixin
from vlmtui.tui.messages import (
    DemoState,
    GpusRefreshed,
    RecipesLoaded,
    RunsRefreshed,
    TreeReady,
)
from vlmtui.tui.screens.confirm import ConfirmScreen
from vlmtui.tui.screens.help import HelpScreen
from vlmtui.tui.sources import Sources, stop_gpu_watchers, watched_gpus
from vlmtui.tui.widgets.gpus_pane import GpusPane
from vlmtui.tui.widgets.keys_footer import KeysFooter
from vlmtui.tui.widgets.recipes_pane import RecipesPane, Workspace
from vlmtui.tui.widgets.runs_pane import RunsPane
from vlmtui.tui.widgets.tree_pane import TreePane
from vlmtui.tui.workers import WorkersMixin

DEMO = "demo"
"""Model / data value meaning the embedded demo (prepared on first use)."""
DARK, LIGHT = "textual-dark", "textual-light"
THEMES = {"dark": DARK, "light": LIGHT}
PANES = ("recipes", "gpus", "tree", "runs")
FOCUS = {
    "recipes": "#recipes-table",
    "gpus": "#gpus-table",
    "tree": "#module-tree",
    "runs": "#runs-table",
}


def definition(recipes: dict[str, Any], name: str) -> tuple[Any, ...] | None:
    """A recipe with its stages' recipes (a two-stage recipe changes when a stage does)."""
    recipe = recipes.get(name)
    return None if recipe is None else (recipe, *(recipes.get(s) for s in recipe.stages))


class Panes(TabbedContent):
    """The four panes; only `active` switches them (digits, tab clicks, the palette).

    TabbedContent also switches to a pane when a widget in it takes the focus. Hiding a
    pane moves the focus off its focused widget, to a visible sibling if it has one (the
    recipe detail beside the recipes table): that switched straight back to the pane."""

    def _on_tab_pane_focused(self, event: TabPane.Focused) -> None:
        event.stop()
        event.prevent_default()  # TabbedContent's own handler would set `active`


PANE_KEYS = Binding.Group("panes", compact=True)
"""The footer shows the pane keys as one `1234 panes` item (the tabs name them)."""


class VlmtuiApp(DispatchFlowMixin, WorkersMixin, App[None]):
    """`vlmtui` with no arguments."""

    CSS_PATH = Path(__file__).with_name("app.tcss")
    AUTO_FOCUS = "#recipes-table"
    TITLE = "vlmtui"
    # Textual declares this an instance attribute, so it takes no ClassVar.
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (120, "-wide")]  # noqa: RUF012
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("1", "show_pane('recipes')", "Recipes", id="app.recipes", group=PANE_KEYS),
        Binding("2", "show_pane('gpus')", "GPUs", id="app.gpus", group=PANE_KEYS),
        Binding("3", "show_pane('tree')", "Tree", id="app.tree", group=PANE_KEYS),
        Binding("4", "show_pane('runs')", "Runs", id="app.runs", group=PANE_KEYS),
        Binding("d", "dispatch", "Dispatch", id="app.dispatch"),
        Binding("r", "refresh", "Refresh", show=False, id="app.refresh"),
        Binding("ctrl+t", "toggle_theme", "Theme", show=False, id="app.theme"),
        Binding("question_mark,f1", "help", "Help", id="app.help"),
        Binding("q", "quit", "Quit", id="app.quit"),
        Binding("escape", "leave_input", show=False, id="app.leave_input"),
    ]

    def __init__(
        self,
        sources: Sources | None = None,
        *,
        model: str = DEMO,
        data: str = DEMO,
        settings: Settings | None = None,
    ) -> None:
        """`settings`: None reads settings.toml (before the event loop starts; a bad file
        is reported once the app runs, and the defaults are used). Given `sources` keep their
        own refresh intervals; the default sources take them from the settings."""
        super().__init__()
        self.settings_error: str | None = None
        if settings is None:
            try:
                settings = load_settings()
            except BadInput as exc:
                self.settings_error = str(exc)
                settings = Settings()
        self.settings = settings
        self.sources = sources or Sources(
            gpu_status=watched_gpus(settings.gpu_refresh_s),
            gpu_interval_s=settings.gpu_refresh_s,
            runs_interval_s=settings.runs_refresh_s,
        )
        self.recipes: dict[str, Any] = {}
        self.model = model
        self.data = data
        self._last_errors: dict[str, str] = {}
        """Worker name -> the error last shown for it (cleared when it succeeds)."""
        self.demo_paths: tuple[str, str] | None = None
        self._tree_wanted: tuple[str, str | None] | None = None
        """(recipe, compare) the module tree was last asked for; None before the first."""
        self.theme = THEMES[settings.theme]
        self._init_workers()

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False, icon="◆")
        with Panes(initial="recipes", id="panes"):
            with TabPane("1 Recipes", id="recipes"):
                yield RecipesPane(id="recipes-pane")
            with TabPane("2 GPUs", id="gpus"):
                yield GpusPane(id="gpus-pane")
            with TabPane("3 Module tree", id="tree"):
                yield TreePane(id="tree-pane")
            with TabPane("4 Runs", id="runs"):
                yield RunsPane(self.sources, self.settings.log_lines, id="runs-pane")
        yield KeysFooter()

    def on_mount(self) -> None:
        if self.settings_error:
            self.notify(
                f"{self.settings_error}; using the default settings",
                title="settings.toml",
                severity="error",
                timeout=15,
            )
        problem = self.sources.hosts_problem()
        if problem:
            self.notify(
                f"{problem}; only the local host is usable",
                title="hosts.toml",
                severity="error",
                timeout=15,
            )
        ready = self.sources.demo_ready()
        if ready is not None:
            self.demo_paths = (str(ready[0]), str(ready[1]))
        self._show_workspace()
        self.load_recipes()
        self.refresh_gpus()
        self.refresh_runs()
        self.set_interval(self.sources.gpu_interval_s, self.refresh_gpus, name="gpus")
        self.set_interval(self.sources.runs_interval_s, self.refresh_runs, name="runs")

    @property
    def main(self) -> Screen:
        """The screen the panes live on (the bottom of the stack, under any dialog)."""
        return self.screen_stack[0] if self.screen_stack else self.screen

    async def _on_message(self, message: Message) -> None:
        try:
            await super()._on_message(message)
        except (NoMatches, ScreenStackError):
            if self.is_running and not self._closing:
                raise
            # a worker's result arriving while the app closes: its panes are gone

    # --- the single worker error handler ----------------------------------------------------

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        worker = event.worker
        if event.state == WorkerState.SUCCESS:
            self._last_errors.pop(worker.name, None)
        if event.state == WorkerState.ERROR:
            text = str(worker.error) or type(worker.error).__name__
            # A refresh that keeps failing the same way says so once, not every 2 seconds.
            if self._last_errors.get(worker.name) == text:
                return
            self._last_errors[worker.name] = text
            self.notify(
                text,
                title=f"{worker.description or worker.name} failed",
                severity="error",
                timeout=10,
            )

    # --- workspace: model, data, the demo ---------------------------------------------------

    def resolved(self) -> tuple[str, str] | None:
        """(model, data) with the demo filled in; None while the demo is not prepared."""
        if DEMO in (self.model, self.data) and self.demo_paths is None:
            return None
        model = self.demo_paths[0] if self.model == DEMO and self.demo_paths else self.model
        data = self.demo_paths[1] if self.data == DEMO and self.demo_paths else self.data
        return model, data

    def _show_workspace(self) -> None:
        ws = self.main.query_one(Workspace)
        ws.set_values(
            "" if self.model == DEMO else self.model, "" if self.data == DEMO else self.data
        )
        from vlmtui.core.model.resolve import shipped_model_ids

        history = recent.load()
        ws.set_suggestions([*history["models"], *shipped_model_ids()], history["data"])
        if self.demo_paths:
            ws.set_demo_state("demo ready", "ready")
        else:
            ws.set_demo_state("demo: prepared on first use", "absent")

    def on_workspace_changed(self, event: Workspace.Changed) -> None:
        self.model = event.model.strip() or DEMO
        self.data = event.data.strip() or DEMO
        for kind, value in (("models", self.model), ("data", self.data)):
            if value != DEMO:
                recent.remember(kind, value)
        self.notify(f"model {self.model}, data {self.data}", title="workspace")
        self._request_tree()

    def on_demo_state(self, event: DemoState) -> None:
        ws = self.main.query_one(Workspace)
        if event.state == "preparing":
            ws.set_demo_state("preparing demo model…", "preparing")
        elif event.state == "ready":
            self.demo_paths = (event.model, event.data)
            ws.set_demo_state("demo ready", "ready")
        else:
            ws.set_demo_state("demo failed", "failed")

    def with_workspace(self, then: Any) -> bool:
        """True when model and data are usable now; else prepares the demo and calls `then`."""
        if self.resolved() is not None:
            return True
        self.notify("preparing the demo model (first use)…", title="demo")
        self.prepare_demo(then)
        return False

    # --- panes ------------------------------------------------------------------------------

    def on_recipes_loaded(self, event: RecipesLoaded) -> None:
        old = self.recipes
        if not old:
            self.warm_inspection()
        self.recipes = event.recipes
        pane = self.main.query_one(RecipesPane)
        pane.show_recipes(event.recipes)
        self.main.query_one(TreePane).set_recipes(list(event.recipes))
        # A recipe edited since (its TOML, `r` reloads it): the tree marks it anew.
        wanted = [n for n in self._tree_wanted or () if n]
        if all(n in self.recipes for n in wanted) and any(
            definition(old, n) != definition(self.recipes, n) for n in wanted
        ):
            self._request_tree()

    def on_gpus_refreshed(self, event: GpusRefreshed) -> None:
        self.main.query_one(GpusPane).show(event.hosts, event.at)

    def on_runs_refreshed(self, event: RunsRefreshed) -> None:
        pane = self.main.query_one(RunsPane)
        pane.show_runs(event.runs, dict(self._details))
        wanted = getattr(self, "_select_after_refresh", None)
        if wanted and wanted in pane.runs:
            pane.select(wanted)
            self._select_after_refresh = None

    def on_recipes_pane_copy_requested(self, event: RecipesPane.CopyRequested) -> None:
        self.copy_recipe(event.recipe)

    def on_recipes_pane_tree_requested(self, event: RecipesPane.TreeRequested) -> None:
        self.action_show_pane("tree")
        self.main.query_one(TreePane).choose(event.recipe)

    @on(TabbedContent.TabActivated)
    def _tab_activated(self, event: TabbedContent.TabActivated) -> None:
        # Keys typed fast (`3` `4`) queue one event per pane: focusing a stale event's pane
        # would switch back to it, and two stale events can bounce the tabs forever.
        if event.pane.id != self.main.query_one("#panes", TabbedContent).active:
            return
        self.main.query_one(FOCUS[event.pane.id or "recipes"]).focus()
        if event.pane.id == "tree" and self.main.query_one(TreePane).view is None:
            name = self.main.query_one(RecipesPane).highlighted
            if name:
                self.main.query_one(TreePane).choose(name)

    def on_tree_pane_wanted(self, event: TreePane.Wanted) -> None:
        self._tree_wanted = (event.recipe, event.compare)
        self._request_tree()

    def _request_tree(self) -> None:
        wanted = self._tree_wanted
        if wanted is None or not self.with_workspace(self._request_tree):
            return
        model, _ = self.resolved() or ("", "")
        self.main.query_one(TreePane).show_loading(f"marking {model} for {wanted[0]}…")
        self.build_tree(model, *wanted)

    def on_tree_ready(self, event: TreeReady) -> None:
        self.main.query_one(TreePane).show(event.tree)

    def on_runs_pane_stop_requested(self, event: RunsPane.StopRequested) -> None:
        def answer(ok: bool | None) -> None:
            if ok:
                self.stop_run(event.run_id)

        self.push_screen(
            ConfirmScreen(f"Stop run {event.run_id}?", "The run's whole process group gets "
                          "SIGTERM (SIGKILL after a grace period).", "Stop", danger=True),
            answer,
        )  # fmt: skip

    # --- actions ----------------------------------------------------------------------------

    def action_show_pane(self, pane: str) -> None:
        self.main.query_one("#panes", TabbedContent).active = pane
        # Focus now, not when TabActivated arrives: keys typed right after the digit went to
        # the hidden pane's widget (`4` `c` copied the recipe instead of showing the chart).
        self.main.set_focus(self.main.query_one(FOCUS[pane]))

    def action_leave_input(self) -> None:
        """Esc in any text field hands the keys back to the pane (a pane that needs to tidy
        up, like the log search, handles Esc itself first)."""
        if isinstance(self.focused, Input):
            pane = self.main.query_one("#panes", TabbedContent).active or "recipes"
            self.main.query_one(FOCUS[pane]).focus()

    def action_refresh(self) -> None:
        self.refresh_gpus()
        self.refresh_runs(reread=True)
        self.load_recipes()  # a recipe TOML edited since (`c` copies one to edit)

    async def action_quit(self) -> None:
        self.stop_inspection()
        await super().action_quit()

    def on_unmount(self) -> None:
        # The inspection worker and the GPU watchers' streams are child processes: end them
        # with the app, so quitting is quick and leaves nothing behind (runs are not affected).
        self.stop_inspection()
        stop_gpu_watchers()

    def action_toggle_theme(self) -> None:
        self.theme = LIGHT if self.theme == DARK else DARK

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield SystemCommand("Dispatch", "Launch the marked recipes on GPUs", self.action_dispatch)
        yield SystemCommand("Refresh", "Query GPUs and runs now", self.action_refresh)
        yield SystemCommand("Toggle theme", "Switch light / dark", self.action_toggle_theme)
        yield SystemCommand(
            "Prepare demo", "Create the tiny demo model and data", self.prepare_demo
        )
        for pane in PANES:
            yield SystemCommand(
                f"Show {pane}",
                f"Switch to the {pane} pane",
                lambda p=pane: self.action_show_pane(p),
            )
        yield SystemCommand("Help", "Keys and colours", self.action_help)
