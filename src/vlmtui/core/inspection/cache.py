"""An on-disk cache of recipe inspections, shared by every process (the app, `vlmtui
inspect`, later sessions), so looking at the same model and recipe again costs a file read,
not a torch import and a meta-model build.

An entry (`Entry`) is what the meta build produced: the `meta.Inspection` (per stage the
marking, the guard's summary and every parameter's size and dtype, which are the memory
estimate's inputs) and the model's `tree.ModelTree`. Everything the front ends show is
computed from it without torch: the app's `Marking`, the CLI's tables, trees, filters,
`--diff` and the memory estimate under any `--gpus/--strategy/--seq-len/...` (so those
options are not part of the key).

Keyed by the model's config.json content (not its path: a hit gets the caller's `ModelRef`),
the recipe's full definition and the definitions of the stages it runs, the versions of the
libraries that decide the inspection (vlmtui, torch, transformers, peft) and
`CACHE_VERSION`; any change is a new key, so entries are never stale, only unused. Entries
are pickles written atomically under `data_dir()/cache/inspection` (deleting that folder
clears the cache); an unreadable entry is treated as absent, and rebuilt.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickle
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from vlmtui.core.paths import data_dir

CACHE_VERSION = 2
"""Bump when `Entry`, the classes it holds or the way an inspection is computed changes."""
LIBRARIES = ("vlmtui", "torch", "transformers", "peft")


@dataclass(frozen=True)
class Entry:
    """One model inspected under one recipe (or none), as the meta build left it."""

    inspection: Any
    """The `meta.Inspection`."""
    tree: Any
    """The model's unmarked `tree.ModelTree`."""

    def for_ref(self, ref: Any) -> Entry:
        """This entry as seen from `ref` (the key is the config's content, so a hit may
        have been stored under another name or path for the same config)."""
        return Entry(replace(self.inspection, model=ref), replace(self.tree, model=ref.name))


@dataclass(frozen=True)
class Marking:
    """What a recipe trains on a model, as the tree pane and the pre-flight need it."""

    full: Any
    """The uncollapsed marked `tree.ModuleNode` root."""
    areas: dict[str, dict[str, int]]
    """area -> {params, trainable}."""
    total_params: int
    trainable_params: int
    memory_bytes: float | None
    """The largest stage's estimated training memory per GPU (None: not estimated)."""


def cache_dir() -> Path:
    return data_dir() / "cache" / "inspection"


def _versions() -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for name in LIBRARIES:
        try:
            out.append(f"{name}={version(name)}")
        except PackageNotFoundError:
            out.append(f"{name}=none")
    return out


def cache_key(config: dict[str, Any], family: str, recipe: Any, stages: Iterable[Any] = ()) -> str:
    """A hex digest of everything the inspection depends on. `recipe`: a `TrainingRecipe`
    or None (its dataclass repr lists every field; a multi-stage recipe names its stages,
    whose definitions come in `stages`)."""
    h = hashlib.sha256()
    for part in (
        f"v{CACHE_VERSION}",
        json.dumps(config, sort_keys=True, default=str),
        family,
        repr(recipe),
        *(repr(s) for s in stages),
        *_versions(),
    ):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()[:32]


def key_for(ref: Any, recipe: Any, recipe_files: Iterable[Path] = ()) -> str:
    """`cache_key` for a `ModelRef` and a recipe, its stages resolved as inspecting does."""
    stages: list[Any] = []
    if recipe is not None and recipe.stages:
        from vlmtui.core.recipes.catalog import stage_recipes

        stages = stage_recipes(recipe, recipe_files)
    return cache_key(ref.config, ref.family.name, recipe, stages)


def load(key: str) -> Entry | None:
    path = cache_dir() / f"{key}.pickle"
    try:
        with open(path, "rb") as fh:
            value = pickle.load(fh)
    except FileNotFoundError:
        return None
    except Exception:  # a torn or foreign file: rebuild it
        return None
    return value if isinstance(value, Entry) else None


def store(key: str, entry: Entry) -> None:
    """Write atomically; a cache that cannot be written only costs speed."""
    directory = cache_dir()
    tmp = directory / f".{key}.{os.getpid()}.tmp"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as fh:
            pickle.dump(entry, fh, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, directory / f"{key}.pickle")
    except OSError:
        # missing_ok covers only "not there": under a cache path that is a file, unlinking
        # fails too, and that was a traceback instead of a slower inspect.
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
