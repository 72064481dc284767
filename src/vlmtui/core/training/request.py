"""What one `vlmtui train` asks for, as one value the CLI builds and the stage loop reads."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from vlmtui.core.recipes.recipe import TrainingRecipe
from vlmtui.core.training.sharding import Strategy


@dataclass(frozen=True)
class TrainRequest:
    """Everything one `vlmtui train` needs."""

    recipe: TrainingRecipe
    model: Path
    """Base checkpoint directory (config.json, weights, processor)."""
    data: Path
    """Detection dataset: a directory with train.jsonl/val.jsonl, a JSONL file or COCO JSON."""
    output: Path
    """Run directory."""
    max_steps: int | None = None
    """Overrides the recipe's max_steps for every stage."""
    resume: bool = False
    save_steps: int = 200
    seed: int = 0
    recipe_files: tuple[Path, ...] = ()
    argv: tuple[str, ...] = field(default_factory=lambda: tuple(sys.argv))
    gpu: str = ""
    allow_normalized: bool = False
    """Boxes all within [0, 1] are normalised coordinates: scale them to pixels."""
    strategy: Strategy = "ddp"
    """`ddp`: a whole model per process; `fsdp`: sharded over the processes (sharding.py)."""
    stage: int | None = None
    """Train only this stage (1-based; the earlier ones must be done): a cluster runs a
    multi-stage recipe as one job per stage."""
