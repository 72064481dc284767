"""Module trees and pre-flight summaries for the app, on top of `core.modeltree` (the tree)
and `core.inspection` (recipes applied to the meta model).

One `ModelInspector` per model is kept for the whole session (its tree is built once; each
recipe's marking is cached), shared by the module tree pane and the dispatch pre-flight.
Every function here blocks (torch is imported on first use) and runs only in thread workers;
one lock serialises them because the inspector is not thread-safe.
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
    """The collapsed, marked `core.modeltree.ModuleNode` tree."""
    full: Any
    """The uncollapsed marked tree (for name filtering)."""
    areas: dict[str, dict[str, int]]
    """area -> {params, trainable}."""
    total_params: int
    trainable_params: int
    memory: str
    """The memory estimate's verdict line (largest stage)."""
    changes: tuple[Any, ...] = ()
    """`core.modeltree.StateChange`s against the compared recipe (empty: no comparison)."""
    compare: str = ""


def _inspector(model: str) -> Any:
    from vlmtui.core.inspection.meta import ModelInspector

    if model not in _inspectors:
        _inspectors[model] = ModelInspector(model)
    return _inspectors[model]


def _memory(inspection: Any, gpu_mem_gib: float | None) -> Any:
    """The largest stage's estimate."""
    from vlmtui.core.inspection.memory import MemoryAssumptions

    estimates = inspection.memory(MemoryAssumptions(gpu_mem_gib=gpu_mem_gib))
    return max(estimates, key=lambda e: e.total) if estimates else None


def tree_view(model: str, recipe: Any, compare: Any = None) -> TreeView:
    """The marked, collapsed tree of `model` under `recipe`, and the diff against `compare`."""
    from vlmtui.core.inspection.memory import gib
    from vlmtui.core.inspection.tree import collapse, diff_trees

    with _lock:
        insp = _inspector(model)
        result = insp.inspect(recipe)
        full = insp.tree().mark(result.marking)
        data = result.to_dict()
        est = _memory(result, None)
        changes: tuple[Any, ...] = ()
        if compare is not None:
            other = insp.tree().mark(insp.inspect(compare).marking)
            changes = tuple(diff_trees(full, other))
    return TreeView(
        model=model,
        recipe=recipe.name,
        root=collapse(full),
        full=full,
        areas={a: dict(data["areas"][a]) for a in AREAS},
        total_params=data["total_params"],
        trainable_params=data["trainable_params"],
        memory=f"needs ≈ {gib(est.total)} GiB per GPU" if est else "",
        changes=changes,
        compare=compare.name if compare is not None else "",
    )


def preflight(
    model: str, recipe: Any, device: str, gpu_mem_mib: float | None, strategy: str = "ddp"
) -> Preflight:
    """Trainable per area and the memory estimate vs the GPU's memory for one recipe."""
    gpu_gib = gpu_mem_mib / 1024 if gpu_mem_mib else None
    try:
        with _lock:
            result = _inspector(model).inspect(recipe)
            data = result.to_dict()
            est = _memory(result, gpu_gib)
    except BadInput as exc:
        return Preflight(
            recipe=recipe.name, device=device, problem=str(exc), gpu_mem_gib=gpu_gib,
            strategy=strategy,
        )  # fmt: skip
    areas = {a: (data["areas"][a]["trainable"], data["areas"][a]["params"]) for a in AREAS}
    return Preflight(
        recipe=recipe.name,
        device=device,
        areas=areas,
        total_params=data["total_params"],
        trainable_params=data["trainable_params"],
        memory_gib=est.total / 1024**3 if est else None,
        gpu_mem_gib=gpu_gib,
        strategy=strategy,
    )
