"""Every blocking thing the app does, each in a named thread worker.

Workers call `Sources` / `inspection` (core underneath) and report back only with messages
from `messages.py`; an exception ends the worker in the ERROR state, and the app's single
`Worker.StateChanged` handler turns it into a notification. Nothing here touches widgets.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from textual import work

from vlmtui.core.errors import BadInput
from vlmtui.core.eval.pictures import pictures_of
from vlmtui.core.rundir import FINAL_STATES, elapsed_of, losses
from vlmtui.tui import inspection
from vlmtui.tui.messages import (
    DemoState,
    DispatchPlan,
    GpusRefreshed,
    Launched,
    PreflightReady,
    RecipesLoaded,
    RunDetail,
    RunsRefreshed,
    TreeReady,
)
from vlmtui.tui.sources import Sources

if TYPE_CHECKING:
    from textual.app import App

    _Base = App[None]
else:
    _Base = object


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) else None


class WorkersMixin(_Base):
    """Mixed into the app: `sources`, the recipe table and the demo paths live on it."""

    sources: Sources
    recipes: dict[str, Any]

    def _init_workers(self) -> None:
        self._details: dict[str, RunDetail] = {}
        self._read_at: dict[str, float] = {}
        self._busy: set[str] = set()
        self.inspection_worker: Any = None
        if self.sources.inspection_worker:
            from vlmtui.core.inspection.worker import InspectionWorker

            self.inspection_worker = InspectionWorker()

    @work(thread=True, group="inspection", exit_on_error=False, description="importing torch")
    def warm_inspection(self) -> None:
        """Start the inspection child and import torch there while the user reads recipes."""
        if self.inspection_worker is not None:
            from contextlib import suppress

            from vlmtui.core.errors import WorkFailed

            with suppress(WorkFailed):  # stopped because the app quit
                self.inspection_worker.warm()

    def stop_inspection(self) -> None:
        """End the inspection child at once (quit must not wait for a torch import)."""
        if self.inspection_worker is not None:
            self.inspection_worker.stop()

    def _once(self, group: str) -> bool:
        """True (and marks busy) unless a worker of `group` is still running: a slow host
        makes refreshes skip a beat instead of piling up threads."""
        if group in self._busy:
            return False
        self._busy.add(group)
        return True

    @work(thread=True, group="recipes", exit_on_error=False, description="loading recipes")
    def load_recipes(self) -> None:
        try:
            recipes = self.sources.recipes()
        except BadInput as exc:
            from vlmtui.core.recipes.recipe import BUILTIN_RECIPES

            self.call_from_thread(self.notify, str(exc), title="user recipes", severity="error")
            recipes = dict(BUILTIN_RECIPES)
        self.post_message(RecipesLoaded(recipes))

    @work(thread=True, group="recipes", exit_on_error=False, description="copying a recipe")
    def copy_recipe(self, name: str) -> None:
        from vlmtui.core.recipes.toml import copy_recipe

        path = copy_recipe(self.recipes[name], self.recipes)
        self.call_from_thread(self.notify, f"copied {name} to {path}", title="recipe copied")
        self.call_from_thread(self.load_recipes)

    @work(thread=True, group="gpus", exit_on_error=False, description="querying GPUs")
    def refresh_gpus(self) -> None:
        if not self._once("gpus"):
            return
        try:
            hosts = self.sources.gpu_status()
        finally:
            self._busy.discard("gpus")
        self.post_message(GpusRefreshed(hosts, self.sources.now()))

    @work(thread=True, group="runs", exit_on_error=False, description="reading the run registry")
    def refresh_runs(self, reread: bool = False) -> None:
        """`reread`: read every run's files now (`r`: an eval just written shows at once)."""
        if not self._once("runs"):
            return
        try:
            runs = self.sources.list_runs()
            fresh: dict[str, RunDetail] = {}
            now = time.monotonic()
            for run in runs:
                cached = self._details.get(run.id)
                # An evaluated final run changes only when it is evaluated again: read it
                # now and then, not every refresh (its files may be on a remote host).
                last = self._read_at.get(run.id, -float("inf"))
                recent = now - last < self.sources.final_recheck_s
                final = cached is not None and run.state in FINAL_STATES and cached.eval_metrics
                if final and recent and not reread:
                    continue
                if not run.reachable:
                    continue
                try:
                    events, ev = self.sources.run_files(run.host, run.run_dir)
                except OSError:
                    continue  # the host dropped out; its state shows `unknown` already
                self._read_at[run.id] = now
                fresh[run.id] = RunDetail(
                    run_id=run.id,
                    losses=losses(events),
                    elapsed_s=elapsed_of(events),
                    eval_metrics=dict((ev or {}).get("metrics") or {}),
                    pictures=pictures_of(run.run_dir, ev),
                    eval_created=_number((ev or {}).get("created")),
                )
            self._details.update(fresh)
        finally:
            self._busy.discard("runs")
        self.post_message(RunsRefreshed(runs))

    @work(thread=True, group="demo", exit_on_error=False, description="preparing the demo model")
    def prepare_demo(self, then: Callable[[], None] | None = None) -> None:
        if not self._once("demo"):
            return
        self.post_message(DemoState("preparing"))
        try:
            if self.inspection_worker is not None:
                # In the child, which quitting kills: in this thread, quitting the app left a
                # blank terminal until the demo was written (5 s here).
                model, data = self.inspection_worker.demo()
            else:
                model, data = self.sources.demo_assets()
        except Exception as exc:
            self.post_message(DemoState("failed", error=str(exc)))
            raise
        finally:
            self._busy.discard("demo")
        self.post_message(DemoState("ready", str(model), str(data)))
        if then is not None:
            self.call_from_thread(then)

    @work(thread=True, group="tree", exit_on_error=False, description="building the module tree")
    def build_tree(self, model: str, recipe: str, compare: str | None) -> None:
        view = inspection.tree_view(
            model,
            self.recipes[recipe],
            self.recipes[compare] if compare else None,
            self.inspection_worker,
        )
        self.post_message(TreeReady(model, recipe, view, None, compare))

    @work(thread=True, group="dispatch", exit_on_error=False, description="pre-flight check")
    def run_preflight(self, plan: DispatchPlan, gpu_mem: dict[str, float | None]) -> None:
        checks = [
            inspection.preflight(
                plan.model,
                self.recipes[r],
                d,
                gpu_mem.get(d),
                plan.strategy,
                self.inspection_worker,
            )
            for r, d in zip(plan.recipes, plan.devices, strict=True)
        ]
        self.post_message(PreflightReady(plan, checks))

    @work(thread=True, group="dispatch", exit_on_error=False, description="launching")
    def launch_plan(self, plan: DispatchPlan) -> None:
        from vlmtui.core.errors import WorkFailed
        from vlmtui.core.fleet.launch import LaunchRequest

        results = []
        for recipe, device in zip(plan.recipes, plan.devices, strict=True):
            req = LaunchRequest(
                recipe=recipe, model=plan.model, data=plan.data, host=plan.host,
                gpu=device, max_steps=plan.max_steps, strategy=plan.strategy,
            )  # fmt: skip
            try:
                results.append(self.sources.launch(req))
            except (BadInput, WorkFailed) as exc:
                self.call_from_thread(
                    self.notify, str(exc), title=f"{recipe} not launched", severity="error"
                )
        self.post_message(Launched(results))

    @work(thread=True, group="stop", exit_on_error=False, description="stopping a run")
    def stop_run(self, run_id: str) -> None:
        result = self.sources.stop(run_id)
        self.call_from_thread(self.notify, f"run {run_id}: {result.state}", title="stop")
        self.call_from_thread(self.refresh_runs)
