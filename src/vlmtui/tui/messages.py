"""Every message the app's workers and widgets exchange, and the value types they carry.

Workers run blocking core calls in threads and report back only through these messages, so
widgets never wait on a host, a file or torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from textual.message import Message

from vlmtui.core.eval.pictures import Picture


@dataclass(frozen=True)
class RunDetail:
    """What the runs pane shows for the selected run beyond its registry row."""

    run_id: str
    losses: tuple[tuple[int, float], ...] = ()
    """(step, loss) of every logged step, oldest first."""
    elapsed_s: float | None = None
    """Training time at the last logged step (from events.jsonl, not a clock)."""
    eval_metrics: dict[str, Any] = field(default_factory=dict)
    """`metrics` of the run's eval.json (map, map50, recall, mean_iou…); empty if none."""
    pictures: tuple[Picture, ...] = ()
    """The pictures eval.json lists (`vlmtui eval` draws the first few into the run dir)."""
    eval_created: float | None = None
    """eval.json's `created`: a new eval redraws the pictures under the same file names."""


@dataclass(frozen=True)
class DispatchPlan:
    """What the user asked to launch: recipes onto devices of one host."""

    recipes: tuple[str, ...]
    host: str
    devices: tuple[str, ...]
    """One entry per recipe: `auto` (next free GPU, else the CPU), `cpu`, a GPU index, or
    several (`0,1`: one torchrun job over them)."""
    model: str
    data: str
    max_steps: int | None = None
    strategy: str = "ddp"
    """`ddp` or `fsdp` (sharded over each recipe's GPUs)."""


@dataclass(frozen=True)
class Preflight:
    """The pre-flight summary of one recipe on the chosen model, for the confirm dialog."""

    recipe: str
    device: str
    areas: dict[str, tuple[int, int]] = field(default_factory=dict)
    """area -> (trainable, total) parameters."""
    total_params: int = 0
    trainable_params: int = 0
    memory_gib: float | None = None
    """Estimated training memory per GPU; None when it could not be estimated."""
    gpu_mem_gib: float | None = None
    """Memory of the chosen GPU; None for the CPU or `auto` without a free GPU."""
    problem: str | None = None
    """Why the recipe cannot run on this model (the guard's message), if it cannot."""
    strategy: str = "ddp"


class GpusRefreshed(Message):
    """A new GPU snapshot of every host (a list of `core.gpus.HostGpus`), taken at `at`
    (`Sources.now`, seconds since the epoch)."""

    def __init__(self, hosts: list[Any], at: float | None = None) -> None:
        self.hosts = hosts
        self.at = at
        super().__init__()


class RunsRefreshed(Message):
    """The reconciled run registry (a list of `core.runs.RunView`, newest first)."""

    def __init__(self, runs: list[Any]) -> None:
        self.runs = runs
        super().__init__()


class RecipesLoaded(Message):
    """All recipes by name (`core.recipes.TrainingRecipe`)."""

    def __init__(self, recipes: dict[str, Any]) -> None:
        self.recipes = recipes
        super().__init__()


class DemoState(Message):
    """The embedded demo's state: `preparing`, `ready` (with paths) or `failed`."""

    def __init__(self, state: str, model: str = "", data: str = "", error: str = "") -> None:
        self.state = state
        self.model = model
        self.data = data
        self.error = error
        super().__init__()


class PreflightReady(Message):
    def __init__(self, plan: DispatchPlan, checks: list[Preflight]) -> None:
        self.plan = plan
        self.checks = checks
        super().__init__()


class Launched(Message):
    """Runs were started (`core.launch.LaunchResult` each); failures were notified."""

    def __init__(self, results: list[Any]) -> None:
        self.results = results
        super().__init__()


class TreeReady(Message):
    """A module tree marked for a recipe (a `core.modeltree` root node and its summary)."""

    def __init__(self, model: str, recipe: str, tree: Any, summary: Any, compare: Any) -> None:
        self.model = model
        self.recipe = recipe
        self.tree = tree
        self.summary = summary
        self.compare = compare
        super().__init__()


class LogLinesReady(Message):
    """The followed run's watcher has new lines; the handler takes them (coalesced: at most
    one of these is queued per watcher, however fast the run writes)."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        super().__init__()


class LogFailed(Message):
    """The followed run's log could not be read (host unreachable…)."""

    def __init__(self, run_id: str, error: str) -> None:
        self.run_id = run_id
        self.error = error
        super().__init__()
