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
from typing import TYPE_CHECKING, Any, Protocol

# Widgets and screens reach core only through this module (an import-linter contract), so
# the few stdlib-only core values they render with are passed on from here.
from vlmtui.core.errors import BadInput
from vlmtui.core.families import TRAINABLE_AREAS
from vlmtui.core.inspection.views import compile_filter, filter_nodes, regex_problem
from vlmtui.core.recipes.recipe import recipe_summary
from vlmtui.core.rundir import ACTIVE_STATES, FINAL_STATES
from vlmtui.core.settings import DEFAULTS
from vlmtui.core.styles import GPU_STATE_STYLES, MODE_STYLES, RUN_STATE_STYLES
from vlmtui.core.textfmt import clock, middle

if TYPE_CHECKING:
    from vlmtui.core.fleet.launch import LaunchRequest, LaunchResult
    from vlmtui.core.fleet.runs import RunView, StopResult
    from vlmtui.core.fleet.snapshot import HostGpus
    from vlmtui.core.recipes.recipe import TrainingRecipe

__all__ = [
    "ACTIVE_STATES",
    "DEFAULTS",
    "FINAL_STATES",
    "GPU_STATE_STYLES",
    "MODE_STYLES",
    "RUN_STATE_STYLES",
    "TRAINABLE_AREAS",
    "BadInput",
    "LogReader",
    "Sources",
    "clock",
    "compile_filter",
    "filter_nodes",
    "middle",
    "recipe_summary",
    "regex_problem",
    "stop_gpu_watchers",
    "watched_gpus",
]


class LogReader(Protocol):
    """Reads a run's output incrementally: each call returns only the new bytes."""

    def read(self, max_bytes: int = ...) -> bytes: ...


def watched_gpus(interval_s: float = 2.0) -> Callable[[], list[HostGpus]]:
    """GPU snapshots of every host from long-lived watchers (one stream per host, started on
    the first call): a refresh reads the newest and never waits on a slow host."""

    def latest() -> list[HostGpus]:
        from vlmtui.core.fleet.status import watched_gpu_status

        return watched_gpu_status(interval_s)

    return latest


def stop_gpu_watchers() -> None:
    from vlmtui.core.fleet.status import stop_watching

    stop_watching()


def _list_runs() -> list[RunView]:
    from vlmtui.core.fleet.runs import list_runs

    return list_runs()


def _launch(req: LaunchRequest) -> LaunchResult:
    from vlmtui.core.fleet.launch import launch

    return launch(req)


def _stop(run_id: str) -> StopResult:
    from vlmtui.core.fleet.runs import stop_run

    return stop_run(run_id, grace_s=10.0)


def _open_log(run_id: str) -> LogReader:
    from vlmtui.core.fleet.logs import LogTail
    from vlmtui.core.fleet.registry import Registry

    tail = LogTail(Registry().get(run_id))
    tail.skip_to_tail()
    return tail


def _run_files(host: str, run_dir: str) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    from vlmtui.core.fleet.logs import read_events_and_eval

    return read_events_and_eval(host, run_dir)


MAX_PICTURE_BYTES = 16 << 20


def _read_picture(host: str, path: str) -> bytes:
    from vlmtui.core.fleet.hosts import get_host

    data = get_host(host).read_bytes(path, 0, MAX_PICTURE_BYTES)
    if not data:
        raise OSError(f"{path}: missing or empty")
    return data


def _hosts_problem() -> str | None:
    from vlmtui.core.fleet.hosts import hosts_problem

    return hosts_problem()


def _recipes() -> dict[str, TrainingRecipe]:
    from vlmtui.core.recipes.catalog import all_recipes

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

    gpu_status: Callable[[], list[HostGpus]] = field(default_factory=watched_gpus)
    """All hosts' GPU snapshots (`core.gpus.HostGpus`), reservations applied."""
    list_runs: Callable[[], list[RunView]] = _list_runs
    """The reconciled registry (`core.runs.RunView`), newest first."""
    launch: Callable[[LaunchRequest], LaunchResult] = _launch
    """`core.launch.launch(LaunchRequest) -> LaunchResult`."""
    stop: Callable[[str], StopResult] = _stop
    open_log: Callable[[str], LogReader] = _open_log
    run_files: Callable[[str, str], tuple[list[dict[str, Any]], dict[str, Any] | None]] = _run_files
    """(host, run_dir) -> (events, eval.json or None)."""
    read_picture: Callable[[str, str], bytes] = _read_picture
    """(host, path) -> the bytes of an eval picture (remote hosts: over the shared connection)."""
    recipes: Callable[[], dict[str, TrainingRecipe]] = _recipes
    hosts_problem: Callable[[], str | None] = _hosts_problem
    """What is wrong with hosts.toml (shown once; the local host keeps working)."""
    demo_assets: Callable[[], tuple[Path, Path]] = _demo_assets
    demo_ready: Callable[[], tuple[Path, Path] | None] = _demo_ready
    now: Callable[[], float] = time.time
    gpu_interval_s: float = 2.0
    """Seconds between GPU refreshes."""
    runs_interval_s: float = 2.0
    """Seconds between registry refreshes."""
    final_recheck_s: float = 30.0
    """Seconds between reads of an evaluated final run's files (a new eval shows within it)."""
    inspection_worker: bool = True
    """Mark module trees in a child process (torch imported there while the user looks at the
    recipes, killed on quit); False marks them in a thread of the app (tests, benchmarks)."""
    extra: dict[str, Any] = field(default_factory=dict)
