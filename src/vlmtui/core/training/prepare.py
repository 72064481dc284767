"""Load one stage's model and decide its trainable set, ready for the trainer.

The trainable set comes from `policy.prepare_trainables`, the same path `vlmtui inspect`
uses, so what inspect shows is what trains.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlmtui.core.families import Family
from vlmtui.core.model.loading import (
    Device,
    family_of_checkpoint,
    load_model_for_recipe,
    load_processor,
)
from vlmtui.core.recipes.policy import TrainableSummary, prepare_trainables
from vlmtui.core.recipes.recipe import TrainingRecipe
from vlmtui.core.training.sharding import Strategy, loading_kwargs


@dataclass
class Prepared:
    """A model with its trainable set decided and checked, ready for the trainer."""

    model: Any
    processor: Any
    family: Family
    summary: TrainableSummary
    base_model: Path


def prepare_stage(
    model_path: Path, recipe: TrainingRecipe, device: Device, strategy: Strategy = "ddp"
) -> Prepared:
    family = family_of_checkpoint(model_path)
    extra = loading_kwargs(strategy, recipe, device)
    model = load_model_for_recipe(model_path, recipe, device, family, **extra)
    model = prepare_trainables(model, recipe, family)
    from vlmtui.core.recipes.policy import summarize_trainables_by_area

    return Prepared(
        model=model,
        processor=load_processor(model_path),
        family=family,
        summary=summarize_trainables_by_area(model, family),
        base_model=Path(model_path),
    )
