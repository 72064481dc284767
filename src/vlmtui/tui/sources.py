"""The app's one door into `vlmtui.core`: every blocking call the panes need, as plain functions.

`Sources` bundles them so tests, snapshots and benchmarks can swap in recorded GPU snapshots,
a fixed run list or a fixed clock without touching the widgets. The defaults call core and
import nothing heavy: torch/transformers load only inside the functions that need them
(module tree, pre-flight), and those run in thread workers.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from vlmtui.core.training.progress import last_step_event


class LogReader(Protocol):
    """Reads a run's output incrementally: each call returns only the new bytes."""

    def read(self, max_bytes: int = ...) -> bytes: ...


def _gpu_status() -> list[Any]:
    from vlmtui.core.fleet.gpus import gpu_status

    return gpu_status()


def _list_runs() -> list[Any]:
    from vlmtui.core.fleet.runs import list_runs

    return list_runs()


def _launch(req: Any) -> Any:
    from vlmtui.core.fleet.launch import launch

    return launch(req)


def _stop(run_id: str) -> Any:
    from vlmtui.core.fleet.launch import stop_run

    return stop_run(run_id, grace_s=10.0)


def _open_log(run_id: str) -> LogReader:
    from vlmtui.core.fleet.launch import LogTail
    from vlmtui.core.fleet.runs import Registry

    tail = LogTail(Registry().get(run_id))
    tail.skip_to_tail()
    return tail


def _run_files(host: str, run_dir: str) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    from vlmtui.core.fleet.runs import read_events_and_eval

    return read_events_and_eval(host, run_dir)


def _recipes() -> dict[str, Any]:
    from vlmtui.core.recipes.recipe import all_recipes

    return all_recipes()


def _demo_assets() -> tuple[Path, Path]:
    from vlmtui.core.model.demo import ensure_demo_assets
    from vlmtui.core.paths import demo_dir

    return ensure_demo_assets(demo_dir())


def _demo_ready() -> tuple[Path, Path] | None:
    """The demo's paths when both already exist (cheap check, no torch)."""
    from vlmtui.core.model.demo import DEMO_DATA_NAME, DEMO_MODEL_NAME
    from vlmtui.core.paths import demo_dir

    model, data = demo_dir() / DEMO_MODEL_NAME, demo_dir() / DEMO_DATA_NAME
    return (model, data) if model.is_dir() and data.is_dir() else None


@dataclass
class Sources:
    """Where the app gets its data. Every field is a blocking call, run only in workers."""

    gpu_status: Callable[[], list[Any]] = _gpu_status
    """All hosts' GPU snapshots (`core.gpus.HostGpus`), reservations applied."""
    list_runs: Callable[[], list[Any]] = _list_runs
    """The reconciled registry (`core.runs.RunView`), newest first."""
    launch: Callable[[Any], Any] = _launch
    """`core.launch.launch(LaunchRequest) -> LaunchResult`."""
    stop: Callable[[str], Any] = _stop
    open_log: Callable[[str], LogReader] = _open_log
    run_files: Callable[[str, str], tuple[list[dict[str, Any]], dict[str, Any] | None]] = _run_files
    """(host, run_dir) -> (events, eval.json or None)."""
    recipes: Callable[[], dict[str, Any]] = _recipes
    demo_assets: Callable[[], tuple[Path, Path]] = _demo_assets
    demo_ready: Callable[[], tuple[Path, Path] | None] = _demo_ready
    now: Callable[[], float] = time.time
    gpu_interval_s: float = 2.0
    """Seconds between GPU refreshes."""
    runs_interval_s: float = 2.0
    """Seconds between registry refreshes."""
    inspection_worker: bool = True
    """Mark module trees in a child process (torch imported there while the user looks at the
    recipes, killed on quit); False marks them in a thread of the app (tests, benchmarks)."""
    extra: dict[str, Any] = field(default_factory=dict)


def losses(events: list[dict[str, Any]]) -> tuple[tuple[int, float], ...]:
    """(step, loss) of every step event."""
    return tuple(
        (int(e["step"]), float(e["loss"]))
        for e in events
        if "step" in e and isinstance(e.get("loss"), (int, float))
    )


def elapsed_of(events: list[dict[str, Any]]) -> float | None:
    last = last_step_event(events)
    value = last.get("elapsed_s") if last else None
    return float(value) if isinstance(value, (int, float)) else None
