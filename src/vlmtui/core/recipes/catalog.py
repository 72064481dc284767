"""Every recipe a user can name: the built-ins, the user's TOML files, and files given with
`--recipes`. A broken file in the folder is skipped with a warning; one named explicitly is
refused. Separate from `recipe.py` (the types and built-ins) so that the TOML parser, which
builds on those types, is imported by this module alone.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from pathlib import Path

from vlmtui.core.errors import BadInput
from vlmtui.core.recipes.parse import load_recipe_file
from vlmtui.core.recipes.recipe import BUILTIN_RECIPES, TrainingRecipe


def user_recipe_dir() -> Path:
    from vlmtui.core.paths import config_dir

    return config_dir() / "recipes"


def load_recipes(
    extra_files: Iterable[Path] = (),
) -> tuple[dict[str, TrainingRecipe], list[str]]:
    """Built-ins, every `*.toml` in the user's recipes folder, then `extra_files`.

    A broken file in the folder must not take the built-ins and the other files down with
    it: it is skipped and its error returned as a problem. A file named in `extra_files`
    was asked for explicitly, so its error is raised.
    """
    recipes, _, problems = _load_folder()
    for path in extra_files:
        recipes.update(load_recipe_file(Path(path), recipes))
    return recipes, problems


def _load_folder() -> tuple[dict[str, TrainingRecipe], list[Path], list[str]]:
    """Built-ins plus the folder's recipes, the files they came from, and the skipped files'
    problems."""
    recipes = dict(BUILTIN_RECIPES)
    used, problems = [], []
    folder = user_recipe_dir()
    for path in sorted(folder.glob("*.toml")) if folder.is_dir() else []:
        try:
            recipes.update(load_recipe_file(path, recipes))
            used.append(path)
        except BadInput as exc:
            problems.append(f"{exc} (skipped this file)")
    return recipes, used, problems


def usable_user_files() -> list[Path]:
    """The recipes folder's files that load, in load order: what a host without this
    machine's config dir is sent (a skipped file, named there with --recipes, would be
    refused)."""
    return _load_folder()[1]


_warned: set[str] = set()


def _warn_once(problem: str) -> None:
    if problem not in _warned:
        _warned.add(problem)
        print(f"vlmtui: warning: {problem}", file=sys.stderr)


def all_recipes(
    extra_files: Iterable[Path] = (), on_problem: Callable[[str], None] = _warn_once
) -> dict[str, TrainingRecipe]:
    """`load_recipes`' recipes; each broken user file is reported once through `on_problem`."""
    recipes, problems = load_recipes(extra_files)
    for problem in problems:
        on_problem(problem)
    return recipes


def get_recipe(name: str, extra_files: Iterable[Path] = ()) -> TrainingRecipe:
    recipes = all_recipes(extra_files)
    if name not in recipes:
        raise BadInput(f"unknown recipe {name!r} (known: {', '.join(recipes)})")
    return recipes[name]


def stage_recipes(recipe: TrainingRecipe, extra_files: Iterable[Path] = ()) -> list[TrainingRecipe]:
    """The single-stage recipes a recipe runs, in order (itself when it has no stages)."""
    if not recipe.stages:
        return [recipe]
    known = all_recipes(extra_files)
    known[recipe.name] = recipe
    return [known[s] for s in recipe.stages]
