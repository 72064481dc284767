"""`ModelInspector` behind the on-disk cache (`cache.py`): what `vlmtui inspect` and the app
use, so an inspection any process computed before is a file read, without torch.

`CachedInspector` answers `inspect(recipe)` and `tree()` like `meta.ModelInspector` does;
on a miss it builds the meta model (importing torch) once per instance and stores the entry.
`app_marking` turns an entry into the app's `cache.Marking`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from vlmtui.core.inspection import cache


class CachedInspector:
    """One model's inspections: from the disk cache when present (unless `use_cache` is
    False: then always rebuilt, and the entry rewritten), else computed and stored.
    `on_miss` is called once, before the first slow build (a progress line)."""

    def __init__(
        self,
        ref: Any,
        recipe_files: Iterable[Path] = (),
        *,
        use_cache: bool = True,
        on_miss: Callable[[], None] | None = None,
    ) -> None:
        self.ref = ref
        self.recipe_files = tuple(recipe_files)
        self.use_cache = use_cache
        self._on_miss = on_miss
        self._inspector: Any = None
        self._tree: Any = None

    def _built(self) -> Any:
        if self._inspector is None:
            from vlmtui.core.inspection.meta import ModelInspector

            if self._on_miss is not None:
                self._on_miss()
            self._inspector = ModelInspector(self.ref, self.recipe_files)
        return self._inspector

    def entry(self, recipe: Any) -> cache.Entry:
        """The entry for `recipe` (None: the bare model)."""
        key = cache.key_for(self.ref, recipe, self.recipe_files)
        hit = cache.load(key) if self.use_cache else None
        if hit is not None:
            found = hit.for_ref(self.ref)
        else:
            found = _compute(self._built(), recipe)
            cache.store(key, found)
        if self._tree is None:
            self._tree = found.tree
        return found

    def inspect(self, recipe: Any) -> Any:
        """The `meta.Inspection` of `recipe` (a guard refusal raises `BadInput`, uncached)."""
        return self.entry(recipe).inspection

    def tree(self) -> Any:
        """The model's `tree.ModelTree` (from any entry: it depends on the model alone)."""
        if self._tree is None:
            self._tree = self._built().tree()
        return self._tree


def _compute(insp: Any, recipe: Any) -> cache.Entry:
    import warnings

    with warnings.catch_warnings():
        # transformers' deprecation notes
        warnings.simplefilter("ignore", FutureWarning)
        result = insp.inspect(recipe)
    return cache.Entry(result, insp.tree())


def app_marking(entry: cache.Entry) -> cache.Marking:
    """The app's view of an entry: the marked tree, per-area counts and the largest stage's
    memory estimate under the default training shape."""
    from vlmtui.core.families import AREAS
    from vlmtui.core.inspection.memory import MemoryAssumptions

    result = entry.inspection
    data = result.to_dict()
    estimates = result.memory(MemoryAssumptions(gpu_mem_gib=None))
    est = max(estimates, key=lambda e: e.total) if estimates else None
    return cache.Marking(
        full=entry.tree.mark(result.marking),
        areas={a: dict(data["areas"][a]) for a in AREAS},
        total_params=data["total_params"],
        trainable_params=data["trainable_params"],
        memory_bytes=float(est.total) if est else None,
    )
