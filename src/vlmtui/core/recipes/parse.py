"""Recipes from TOML tables: parsing and checking `[recipe.NAME]` tables of one file.

Every error names the file, the recipe and the field. Within one file a recipe may extend
any other, before or after it; a cycle of `extends` is named as such.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from vlmtui.core.errors import BadInput
from vlmtui.core.families import TRAINABLE_AREAS
from vlmtui.core.recipes.recipe import (
    BUILTIN_RECIPES,
    MAX_COUNT,
    NAME_RE,
    AreaPlan,
    LoraSettings,
    TrainingRecipe,
    validate_recipe,
)
from vlmtui.core.tomlio import check_keys, read_toml

_TOP_KEYS = {f.name for f in dataclasses.fields(TrainingRecipe)} - {"name", "source"} | {"extends"}
_AREA_KEYS = {f.name for f in dataclasses.fields(AreaPlan)}
_LORA_KEYS = {f.name for f in dataclasses.fields(LoraSettings)}


def _number(
    where: str, value: Any, kind: type, minimum: float | None = None, below: float | None = None
) -> Any:
    """`value` as `kind`, at least `minimum` and less than `below`; TOML's nan and inf are
    refused (nan passes every comparison, inf is no learning rate or ratio)."""
    ok = isinstance(value, kind) or (kind is float and isinstance(value, int))
    if not ok or isinstance(value, bool):
        raise BadInput(f"{where}: expected {kind.__name__}, got {value!r}")
    if not math.isfinite(value):
        raise BadInput(f"{where}: expected a finite number, got {value!r}")
    if kind is int and value > MAX_COUNT:
        raise BadInput(f"{where}: must be at most {MAX_COUNT}, got {value!r}")
    if minimum is not None and value < minimum:
        raise BadInput(f"{where}: must be at least {minimum}, got {value!r}")
    if below is not None and value >= below:
        raise BadInput(f"{where}: must be less than {below}, got {value!r}")
    return kind(value)


def _str_list(where: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BadInput(f"{where}: expected a list of strings, got {value!r}")
    return tuple(value)


def _area_from(where: str, base: AreaPlan, data: Any) -> AreaPlan:
    if isinstance(data, str):
        data = {"mode": data}
    if not isinstance(data, dict):
        raise BadInput(f"{where}: expected a table or a mode string, got {data!r}")
    check_keys(where, data, _AREA_KEYS)
    plan = base
    if "mode" in data:
        plan = replace(plan, mode=data["mode"])
        if data["mode"] != "lora" and "targets" not in data:
            plan = replace(plan, targets=())
        if data["mode"] != "lora" and "also_full" not in data:
            plan = replace(plan, also_full=())
    if "targets" in data:
        plan = replace(plan, targets=_str_list(f"{where}.targets", data["targets"]))
    if "patterns" in data:
        pats = _str_list(f"{where}.patterns", data["patterns"])
        for p in pats:
            try:
                re.compile(p)
            except re.error as exc:
                raise BadInput(f"{where}.patterns: {p!r} is not a valid regex ({exc})") from None
        plan = replace(plan, patterns=pats)
    if "also_full" in data:
        plan = replace(plan, also_full=_str_list(f"{where}.also_full", data["also_full"]))
    if "learning_rate" in data:
        lr = _number(f"{where}.learning_rate", data["learning_rate"], float, 0)
        plan = replace(plan, learning_rate=lr)
    return plan


def recipe_from_dict(
    name: str, data: Mapping[str, Any], source: str, known: Mapping[str, TrainingRecipe]
) -> TrainingRecipe:
    """Build and validate one recipe from a TOML table. Errors name source, recipe and field."""
    where = f"{source}: recipe {name!r}"
    if not NAME_RE.match(name):
        raise BadInput(f"{where}: name must be letters, digits, '.', '_' or '-' (max 64)")
    if not isinstance(data, Mapping):
        raise BadInput(f"{where}: expected a table")
    check_keys(where, data, _TOP_KEYS)
    base = TrainingRecipe(name=name)
    if "extends" in data:
        parent = data["extends"]
        if not isinstance(parent, str):
            raise BadInput(f"{where}: extends: expected a recipe name, got {parent!r}")
        if parent not in known:
            raise BadInput(f"{where}: extends: unknown recipe {parent!r}")
        base = replace(known[parent], description="")
    recipe = replace(base, name=name, source=source)
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        fld = f"{where}: {key}"
        if key == "extends":
            continue
        if key in TRAINABLE_AREAS:
            kwargs[key] = _area_from(f"{where}: {key}", recipe.area(key), value)
        elif key == "lora":
            if not isinstance(value, dict):
                raise BadInput(f"{fld}: expected a table")
            check_keys(fld, value, _LORA_KEYS)
            lora = recipe.lora
            if "r" in value:
                lora = replace(lora, r=_number(f"{fld}.r", value["r"], int, 1))
            if "alpha" in value:
                lora = replace(lora, alpha=_number(f"{fld}.alpha", value["alpha"], int, 1))
            if "dropout" in value:
                dropout = _number(f"{fld}.dropout", value["dropout"], float, 0, below=1)
                lora = replace(lora, dropout=dropout)
            kwargs["lora"] = lora
        elif key in ("description", "quantization", "compute_dtype"):
            if not isinstance(value, str):
                raise BadInput(f"{fld}: expected a string, got {value!r}")
            kwargs[key] = value
        elif key in ("learning_rate", "epochs"):
            kwargs[key] = _number(fld, value, float, 0)
        elif key == "warmup_ratio":
            kwargs[key] = _number(fld, value, float, 0, below=1)
        elif key in ("max_steps", "batch_size", "grad_accum"):
            kwargs[key] = _number(fld, value, int, 1)
        elif key in ("gradient_checkpointing", "upcast_norms"):
            if not isinstance(value, bool):
                raise BadInput(f"{fld}: expected true or false, got {value!r}")
            kwargs[key] = value
        elif key == "stages":
            kwargs[key] = _str_list(fld, value)
    recipe = replace(recipe, **kwargs)
    validate_recipe(recipe, known, where)
    return recipe


def load_recipe_file(path: Path, known: Mapping[str, TrainingRecipe]) -> dict[str, TrainingRecipe]:
    """Recipes of one TOML file: `[recipe.NAME]` tables. Later ones may extend earlier ones."""
    data = read_toml(path, "recipe file")
    unknown = set(data) - {"recipe"}
    if unknown:
        raise BadInput(f"{path}: unknown top-level key {sorted(unknown)[0]!r} (use [recipe.NAME])")
    tables = data.get("recipe", {})
    if not isinstance(tables, dict):
        raise BadInput(f"{path}: 'recipe' must be a table of [recipe.NAME] tables")
    merged = dict(known)
    out: dict[str, TrainingRecipe] = {}

    def build(name: str, chain: tuple[str, ...]) -> None:
        """Build `name` after the recipe it extends, wherever in the file that one is."""
        if name in out:
            return
        if name in chain:
            cycle = " -> ".join((*chain[chain.index(name) :], name))
            raise BadInput(f"{path}: recipe {name!r}: extends: cycle {cycle}")
        if name in BUILTIN_RECIPES:
            raise BadInput(f"{path}: recipe {name!r}: name is taken by a built-in recipe")
        table = tables[name]
        parent = table.get("extends") if isinstance(table, dict) else None
        if isinstance(parent, str) and parent in tables:
            build(parent, (*chain, name))
        merged[name] = out[name] = recipe_from_dict(name, table, str(path), merged)

    for name in tables:
        build(name, ())
    return out
