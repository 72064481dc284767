"""Write a recipe as a user TOML file to edit (`[recipe.NAME]`, every field spelled out).

The inverse of `recipes.load_recipe_file`: the result is checked by loading it back with that
loader before it is saved, so a copy can never be a file the loader refuses.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vlmtui.core.errors import BadInput
from vlmtui.core.families import TRAINABLE_AREAS
from vlmtui.core.recipes.parse import load_recipe_file
from vlmtui.core.recipes.recipe import TrainingRecipe, user_recipe_dir


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {v!r} as TOML")


def recipe_to_toml(recipe: TrainingRecipe, name: str) -> str:
    """`[recipe.NAME]` text with every setting of `recipe` (a copy under a new name)."""
    lines = [
        f"[recipe.{name}]",
        f"description = {_value(f'Copy of {recipe.name}: {recipe.description}')}",
    ]
    if recipe.stages:
        lines.append(f"stages = {_value(list(recipe.stages))}")
        return "\n".join(lines) + "\n"
    top = ("quantization", "compute_dtype", "learning_rate", "epochs", "batch_size", "grad_accum")
    for key in top:
        lines.append(f"{key} = {_value(getattr(recipe, key))}")
    if recipe.max_steps is not None:
        lines.append(f"max_steps = {recipe.max_steps}")
    lines.append(f"gradient_checkpointing = {_value(recipe.gradient_checkpointing)}")
    lines.append(f"warmup_ratio = {_value(recipe.warmup_ratio)}")
    for area in TRAINABLE_AREAS:
        plan = recipe.area(area)
        lines += ["", f"[recipe.{name}.{area}]", f"mode = {_value(plan.mode)}"]
        if plan.targets:
            lines.append(f"targets = {_value(list(plan.targets))}")
        if plan.patterns:
            lines.append(f"patterns = {_value(list(plan.patterns))}")
        if plan.learning_rate is not None:
            lines.append(f"learning_rate = {_value(plan.learning_rate)}")
    lines += ["", f"[recipe.{name}.lora]"]
    lines += [f"{k} = {_value(getattr(recipe.lora, k))}" for k in ("r", "alpha", "dropout")]
    return "\n".join(lines) + "\n"


def copy_recipe(recipe: TrainingRecipe, known: dict[str, TrainingRecipe]) -> Path:
    """Save a copy of `recipe` as `<user recipes>/<name>-copy[N].toml`; returns the file."""
    folder = user_recipe_dir()
    folder.mkdir(parents=True, exist_ok=True)
    base = f"{recipe.name}-copy"
    name, n = base, 1
    while name in known or (folder / f"{name}.toml").exists():
        n += 1
        name = f"{base}{n}"
    path = folder / f"{name}.toml"
    text = recipe_to_toml(recipe, name)
    tmp = folder / f".{name}.toml.tmp"
    tmp.write_text(text, encoding="utf-8")
    try:
        load_recipe_file(tmp, known)
    except BadInput:
        tmp.unlink()
        raise
    tmp.rename(path)
    return path
