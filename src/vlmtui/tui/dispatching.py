"""The dispatch flow, mixed into the app: recipes → host and devices → pre-flight → confirm
→ launch. Screens collect the choices, workers do the blocking parts, this glues them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vlmtui.tui.messages import DispatchPlan, Launched, PreflightReady
from vlmtui.tui.screens.confirm import ConfirmScreen
from vlmtui.tui.screens.dispatch import DispatchScreen
from vlmtui.tui.widgets.gpus_pane import GpusPane
from vlmtui.tui.widgets.preflight import preflight_body
from vlmtui.tui.widgets.recipes_pane import RecipesPane

if TYPE_CHECKING:
    from collections.abc import Callable

    from textual.app import App
    from textual.screen import Screen

    _Base = App[None]
else:
    _Base = object


class DispatchFlowMixin(_Base):
    """Needs from the app: `main`, `with_workspace`, `resolved`, `action_show_pane`, and the
    workers `run_preflight`, `launch_plan`, `refresh_runs`."""

    if TYPE_CHECKING:
        _select_after_refresh: str | None

        @property
        def main(self) -> Screen: ...

        def with_workspace(self, then: Callable[[], Any]) -> bool: ...
        def resolved(self) -> tuple[str, str] | None: ...
        def action_show_pane(self, pane: str) -> None: ...
        def run_preflight(self, plan: DispatchPlan, gpu_mem: dict[str, float | None]) -> Any: ...
        def launch_plan(self, plan: DispatchPlan) -> Any: ...
        def refresh_runs(self, reread: bool = False) -> Any: ...

    def action_dispatch(self) -> None:
        recipes = self.main.query_one(RecipesPane).selected()
        if not recipes:
            self.notify("no recipe to dispatch", severity="warning")
            return
        if not self.with_workspace(self.action_dispatch):
            return
        model, data = self.resolved() or ("", "")
        screen = DispatchScreen(recipes, self.main.query_one(GpusPane).hosts, model, data)
        self.push_screen(screen, self._planned)

    def _planned(self, plan: DispatchPlan | None) -> None:
        if plan is None:
            return
        host = next((h for h in self.main.query_one(GpusPane).hosts if h.name == plan.host), None)
        gpu_mem: dict[str, float | None] = {}
        if host is not None:
            for g in host.gpus:
                gpu_mem[str(g.index)] = g.mem_total_mib
            free = host.first_free()
            gpu_mem["auto"] = free.mem_total_mib if free else None
        self.notify("checking what each recipe trains…", title="pre-flight")
        self.run_preflight(plan, gpu_mem)

    def on_preflight_ready(self, event: PreflightReady) -> None:
        plan, checks = event.plan, event.checks
        ok = [c for c in checks if not c.problem]
        keep = {c.recipe for c in ok}

        def answer(go: bool | None) -> None:
            if go and ok:
                idx = [i for i, r in enumerate(plan.recipes) if r in keep]
                self.launch_plan(
                    DispatchPlan(
                        recipes=tuple(plan.recipes[i] for i in idx),
                        host=plan.host,
                        devices=tuple(plan.devices[i] for i in idx),
                        model=plan.model,
                        data=plan.data,
                        max_steps=plan.max_steps,
                        strategy=plan.strategy,
                    )
                )

        label = f"Launch {len(ok)}" if ok else "Nothing to launch"
        title = f"Launch on {plan.host}" + (f", {plan.max_steps} steps" if plan.max_steps else "")
        title += ", sharded (fsdp)" if plan.strategy == "fsdp" else ""
        self.push_screen(ConfirmScreen(title, preflight_body(checks), label), answer)

    def on_launched(self, event: Launched) -> None:
        for r in event.results:
            self.notify(f"{r.run_id} on {r.host}:{r.gpu}", title="launched")
        if event.results:
            self.main.query_one(RecipesPane).marked.clear()
            self.action_show_pane("runs")
            self._select_after_refresh = event.results[0].run_id
            self.refresh_runs()
