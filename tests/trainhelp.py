"""What the training tests share: the `vlmtui train` command line, a copy of a model's
parameters, and the 3-step check that what trains moves and what is frozen stays put."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any


def train_argv(
    model: Path, data: Path, out: Path, *extra: str, recipe: str = "r2-vision-only"
) -> list[str]:
    """`python -m vlmtui train` on `recipe`, as a user types it."""
    return [
        sys.executable, "-m", "vlmtui", "train", "--recipe", recipe,
        "--model", str(model), "--data", str(data), "--output", str(out), *extra,
    ]  # fmt: skip


def snapshot(model: Any) -> dict[str, Any]:
    """A copy of every parameter, by name."""
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def fit_three_steps(stage: Any, recipe: Any, rows: Any, out: Path) -> set[str]:
    """Train `stage` 3 steps on the CPU and check every loss is finite, every trainable
    parameter moved and every frozen one is bit-identical. Returns the trainable names."""
    import torch

    from vlmtui.core.model.loading import Device
    from vlmtui.core.training.fitting import FitOptions, fit

    before = snapshot(stage.model)
    trainable = {n for n, p in stage.model.named_parameters() if p.requires_grad}
    trainer = fit(stage, recipe, rows, out, Device("cpu"), FitOptions(max_steps=3))
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses)
    after = dict(stage.model.named_parameters())
    changed = {n for n in trainable if not torch.equal(before[n], after[n].detach())}
    # LoRA B starts at zero and A only moves once B is non-zero: every adapter moves in 3 steps.
    assert changed == trainable
    for name, param in after.items():
        if name not in trainable:
            assert torch.equal(before[name], param.detach()), f"frozen {name} changed"
    return trainable
