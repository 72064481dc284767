"""Write a recipe as a user TOML file to edit (`[recipe.NAME]`, every field spelled out).

The inverse of `recipes.load_recipe_file`: the result is checked by loading it back with that
loader before it is saved, so a copy can never be a file the loader refuses.
"""

from __future__ import annotations

from pathlib import Path

from vlmtui.core.errors import BadInput
from vlmtui.core.families import TRAINABLE_AREAS
from vlmtui.core.recipes.catalog import user_recipe_dir
from vlmtui.core.recipes.parse import load_recipe_file
from vlmtui.core.recipes.recipe import TrainingRecipe
from vlmtui.core.tomlio import toml_value


def recipe_to_toml(recipe: TrainingRecipe, name: str) -> str:
    """`[recipe.NAME]` text with every setting of `recipe` (a copy under a new name)."""
    lines = [
        f"[recipe.{name}]",
        f"description = {toml_value(f'Copy of {recipe.name}: {recipe.description}')}",
    ]
    if recipe.stages:
        lines.append(f"stages = {toml_value(list(recipe.stages))}")
        return "\n".join(lines) + "\n"
    top = ("quantization", "compute_dtype", "learning_rate", "epochs", "batch_size", "grad_accum")
    for key in top:
        lines.append(f"{key} = {toml_value(getattr(recipe, key))}")
    if recipe.max_steps is not None:
        lines.append(f"max_steps = {recipe.max_steps}")
    lines.append(f"gradient_checkpointing = {toml_value(recipe.gradient_checkpointing)}")
    lines.append(f"upcast_norms = {toml_value(recipe.upcast_norms)}")
    lines.append(f"warmup_ratio = {toml_value(recipe.warmup_ratio)}")
    for area in TRAINABLE_AREAS:
        plan = recipe.area(area)
        lines += ["", f"[recipe.{name}.{area}]", f"mode = {toml_value(plan.mode)}"]
        if plan.targets:
            lines.append(f"targets = {toml_value(list(plan.targets))}")
        if plan.patterns:
            lines.append(f"patterns = {toml_value(list(plan.patterns))}")
        if plan.learning_rate is not None:
            lines.append(f"learning_rate = {toml_value(plan.learning_rate)}")
    lines += ["", f"[recipe.{name}.lora]"]
    lines += [f"{k} = {toml_value(getattr(recipe.lora, k))}" for k in ("r", "alpha", "dropout")]
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
