"""Module trees and pre-flight summaries for the app, on top of `core.modeltree` (the tree)
and `core.inspection` (recipes applied to the meta model).

One `ModelInspector` per model is kept for the whole session (its tree is built once; each
recipe's marking is cached), shared by the module tree pane and the dispatch pre-flight.
Every function here blocks (torch is imported on first use) and runs only in thread workers;
one lock serialises them because the inspector is not thread-safe. Markings go through the
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


def marking(model: str, recipe: Any) -> Any:
    """The recipe's marking of `model` (`core.inspection.cache.Marking`): from the disk cache
    when any process computed it before, else computed (torch, under the lock) and stored."""
    from vlmtui.core.inspection import cache
    from vlmtui.core.model.resolve import resolve_model

    ref = resolve_model(model)
    key = cache.cache_key(ref.config, ref.family.name, recipe)
    hit = cache.load(key)
    if hit is not None:
        return hit
    with _lock:
        insp = _inspector(model)
        result = insp.inspect(recipe)
        full = insp.tree().mark(result.marking)
        data = result.to_dict()
        est = _memory(result, None)
    value = cache.Marking(
        full=full,
        areas={a: dict(data["areas"][a]) for a in AREAS},
        total_params=data["total_params"],
        trainable_params=data["trainable_params"],
        memory_bytes=float(est.total) if est else None,
    )
    cache.store(key, value)
    return value


def tree_view(model: str, recipe: Any, compare: Any = None) -> TreeView:
    """The marked, collapsed tree of `model` under `recipe`, and the diff against `compare`."""
    from vlmtui.core.inspection.memory import gib
    from vlmtui.core.inspection.tree import collapse, diff_trees

    m = marking(model, recipe)
    changes: tuple[Any, ...] = ()
    if compare is not None:
        changes = tuple(diff_trees(m.full, marking(model, compare).full))
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


def preflight(model: str, recipe: Any, device: str, gpu_mem_mib: float | None) -> Preflight:
    """Trainable per area and the memory estimate vs the GPU's memory for one recipe."""
    gpu_gib = gpu_mem_mib / 1024 if gpu_mem_mib else None
    try:
        m = marking(model, recipe)
    except BadInput as exc:
        return Preflight(recipe=recipe.name, device=device, problem=str(exc), gpu_mem_gib=gpu_gib)
    areas = {a: (m.areas[a]["trainable"], m.areas[a]["params"]) for a in AREAS}
    return Preflight(
        recipe=recipe.name,
        device=device,
        areas=areas,
        total_params=m.total_params,
        trainable_params=m.trainable_params,
        memory_gib=m.memory_bytes / 1024**3 if m.memory_bytes else None,
        gpu_mem_gib=gpu_gib,
    )
