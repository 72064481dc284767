"""An on-disk cache of recipe markings, shared by every process (the app, the CLI, later
sessions), so looking at the same model and recipe again costs a file read, not a torch
import and a meta-model build.

Keyed by the model's config.json content (not its path), the recipe's full definition, the
versions of the libraries that decide the marking (vlmtui, torch, transformers, peft) and
`CACHE_VERSION`; any change is a new key, so entries are never stale, only unused. Entries
are pickles written atomically under `data_dir()/cache/inspection`; an unreadable entry is
treated as absent (and rebuilt).
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlmtui.core.paths import data_dir

CACHE_VERSION = 1
"""Bump when `Marking` or the way a marking is computed changes."""
LIBRARIES = ("vlmtui", "torch", "transformers", "peft")


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


def cache_key(config: dict[str, Any], family: str, recipe: Any) -> str:
    """A hex digest of everything the marking depends on. `recipe`: a `TrainingRecipe` (its
    dataclass repr lists every field, stages included by name)."""
    h = hashlib.sha256()
    for part in (
        f"v{CACHE_VERSION}",
        json.dumps(config, sort_keys=True, default=str),
        family,
        repr(recipe),
        *_versions(),
    ):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()[:32]


def load(key: str) -> Marking | None:
    path = cache_dir() / f"{key}.pickle"
    try:
        with open(path, "rb") as fh:
            value = pickle.load(fh)
    except FileNotFoundError:
        return None
    except Exception:  # a torn or foreign file: rebuild it
        return None
    return value if isinstance(value, Marking) else None


def store(key: str, marking: Marking) -> None:
    """Write atomically; a cache that cannot be written only costs speed."""
    directory = cache_dir()
    tmp = directory / f".{key}.{os.getpid()}.tmp"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as fh:
            pickle.dump(marking, fh, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, directory / f"{key}.pickle")
    except OSError:
        tmp.unlink(missing_ok=True)
