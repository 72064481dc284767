"""Quitting the app never stops a run: runs are detached process groups that outlive it.

The run goes through the app's own launch worker (the dispatch flow after its confirm) and
`core.launch`, with the stand-in trainer (`standin_train` from conftest_ssh) in place of
`vlmtui train`: a real detached run of a few seconds, no training.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

import anyio
import pytest
from tui_fakes import local_cpu_host, wait_for

from vlmtui.core.fleet.launch import launch
from vlmtui.core.fleet.runs import get_run
from vlmtui.tui.app import VlmtuiApp
from vlmtui.tui.messages import DispatchPlan
from vlmtui.tui.sources import Sources
from vlmtui.tui.widgets.runs_pane import RunsPane

pytestmark = pytest.mark.anyio

STEPS, STEP_S = 12, 0.25


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_quitting_the_app_leaves_the_run_running(standin_train, tmp_path: Path) -> None:
    standin_train("ok", steps=STEPS, step_s=STEP_S)
    (tmp_path / "model").mkdir()
    (tmp_path / "data").mkdir()
    launched = []

    def recording_launch(req):
        result = launch(req)
        launched.append(result)
        return result

    sources = Sources(
        gpu_status=lambda: [local_cpu_host()],
        launch=recording_launch,
        gpu_interval_s=3600.0,
        runs_interval_s=0.5,
    )
    app = VlmtuiApp(sources, model=str(tmp_path / "model"), data=str(tmp_path / "data"))
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            await wait_for(pilot, lambda: bool(app.recipes), what="recipes")
            app.launch_plan(  # what the confirm dialog's "Launch" runs
                DispatchPlan(
                    recipes=("r1-llm-only",),
                    host="local",
                    devices=("cpu",),
                    model=str(tmp_path / "model"),
                    data=str(tmp_path / "data"),
                    max_steps=None,
                )
            )
            runs = app.query_one(RunsPane)
            await wait_for(pilot, lambda: len(launched) == 1, 30, "the launch")
            run_id = launched[0].run_id
            await wait_for(
                pilot,
                lambda: run_id in runs.runs and runs.runs[run_id].state == "training",
                30,
                "the run training in the runs pane",
            )
            app.query_one("#runs-table").focus()
            await pilot.press("q")  # quit, as a user would
            await wait_for(pilot, lambda: not app.is_running, 30, "the app to quit")
        assert app.return_code in (0, None)

        pid = launched[0].pid
        view = get_run(run_id)
        assert view.state in ("loading", "training"), view.error
        # 'training' is written before the first step line, so no step yet is fine
        assert view.step is None or view.step < STEPS
        assert alive(pid), "the run's supervisor died with the app"

        deadline = time.monotonic() + 60
        while (view := get_run(run_id)).state not in ("finished", "failed", "stopped"):
            assert time.monotonic() < deadline, f"run still {view.state}"
            await anyio.sleep(0.2)
        assert view.state == "finished", view.error
        assert (view.step, view.max_steps) == (STEPS, STEPS)
        assert view.loss == round(2.0 / STEPS, 4)
    finally:
        for result in launched:  # never leave a run behind, whatever failed
            if get_run(result.run_id).state not in ("pending", "loading", "training"):
                continue
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(result.pid, signal.SIGKILL)
