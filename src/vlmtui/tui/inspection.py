"""Module trees and pre-flight summaries for the app, on top of `core.modeltree` (the tree)
and `core.inspection` (recipes applied to the meta model).

Markings are computed by the app's `InspectionWorker` child process (torch is imported
there, once, and the child is killed on quit), or without one in this process, one
`CachedInspector` per model under a lock (it is not thread-safe). Every function here blocks
and runs only in thread workers. Markings go through the
on-disk cache (`core.inspection.cache`), so a model and recipe looked at before, by this
process or any other, shows without torch.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from vlmtui.core.errors import BadInput
from vlmtui.core.families import AREAS
from vlmtui.tui.messages import Preflight

_lock = threading.Lock()
_inspectors: dict[str, Any] = {}


@dataclass(frozen=True)
class TreeView:
    """What the tree pane shows for one (model, recipe[, compare]) choice."""

    model: str
    recipe: str
    root: Any
    """The collapsed, marked `core.inspection.tree.ModuleNode` tree."""
    full: Any
    """The uncollapsed marked tree (for name filtering)."""
    areas: dict[str, dict[str, int]]
    """area -> {params, trainable}."""
    total_params: int
    trainable_params: int
    memory: str
    """The memory estimate's verdict line (largest stage)."""
    changes: tuple[Any, ...] = ()
    """`core.inspection.views.StateChange`s against the compared recipe (empty: no comparison)."""
    compare: str = ""


def marking(model: str, recipe: Any, worker: Any = None) -> Any:
    """The recipe's marking of `model` (`core.inspection.cache.Marking`): from the disk cache
    when any process computed it before, else computed by `worker` (an `InspectionWorker`
    child process) or, without one, here under the lock; either way it is then cached."""
    from vlmtui.core.inspection import cache
    from vlmtui.core.inspection.cached import app_marking
    from vlmtui.core.inspection.worker import compute_marking
    from vlmtui.core.model.resolve import resolve_model

    ref = resolve_model(model)
    hit = cache.load(cache.key_for(ref, recipe))
    if hit is not None:
        return app_marking(hit.for_ref(ref))
    if worker is not None:
        return worker.mark(model, recipe)
    with _lock:
        return compute_marking(_inspectors, model, recipe)


def tree_view(model: str, recipe: Any, compare: Any = None, worker: Any = None) -> TreeView:
    """The marked, collapsed tree of `model` under `recipe`, and the diff against `compare`."""
    from vlmtui.core.inspection.memory import gib
    from vlmtui.core.inspection.views import collapse, diff_trees

    m = marking(model, recipe, worker)
    changes: tuple[Any, ...] = ()
    if compare is not None:
        changes = tuple(diff_trees(m.full, marking(model, compare, worker).full))
    return TreeView(
        model=model,
        recipe=recipe.name,
        root=collapse(m.full),
        full=m.full,
        areas=m.areas,
        total_params=m.total_params,
        trainable_params=m.trainable_params,
        memory=f"needs ≈ {gib(m.memory_bytes)} GiB per GPU" if m.memory_bytes else "",
        changes=changes,
        compare=compare.name if compare is not None else "",
    )


def preflight(
    model: str,
    recipe: Any,
    device: str,
    gpu_mem_mib: float | None,
    strategy: str = "ddp",
    worker: Any = None,
) -> Preflight:
    """Trainable per area and the memory estimate vs the GPU's memory for one recipe."""
    gpu_gib = gpu_mem_mib / 1024 if gpu_mem_mib else None
    try:
        m = marking(model, recipe, worker)
    except BadInput as exc:
        return Preflight(
            recipe=recipe.name, device=device, problem=str(exc), gpu_mem_gib=gpu_gib,
            strategy=strategy,
        )  # fmt: skip
    areas = {a: (m.areas[a]["trainable"], m.areas[a]["params"]) for a in AREAS}
    return Preflight(
        recipe=recipe.name,
        device=device,
        areas=areas,
        total_params=m.total_params,
        trainable_params=m.trainable_params,
        memory_gib=m.memory_bytes / 1024**3 if m.memory_bytes else None,
        gpu_mem_gib=gpu_gib,
        strategy=strategy,
    )
