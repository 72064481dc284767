"""The optimizer over exactly the trainable parameters, one group per learning rate.

Built here rather than by the Trainer so that each area (vision, merger, LLM, …) can have
its own learning rate, and so that the optimizer's parameter names can be recorded in
`trainable.json` as proof of what actually trains.
"""

from __future__ import annotations

from typing import Any

from vlmtui.core.recipes.policy import strip_peft
from vlmtui.core.recipes.recipe import TrainingRecipe
from vlmtui.core.training.prepare import Prepared


def build_optimizer(
    prepared: Prepared, recipe: TrainingRecipe, config: Any = None
) -> tuple[Any, list[str]]:
    """The optimizer the Trainer would build from `config` (fused AdamW by default), over the
    trainable parameters in one group per area learning rate."""
    import torch
    from transformers import Trainer

    kwargs: dict[str, Any]
    if config is None:
        cls, kwargs = torch.optim.AdamW, {}
    else:
        cls, kwargs = Trainer.get_optimizer_cls_and_kwargs(config, prepared.model)
    kwargs = {k: v for k, v in kwargs.items() if k != "lr"}
    groups: dict[float, list[Any]] = {}
    names: list[str] = []
    for name, param in prepared.model.named_parameters():
        if not param.requires_grad:
            continue
        area = prepared.family.area_of(strip_peft(name))
        lr = recipe.area(area).learning_rate or recipe.learning_rate
        groups.setdefault(lr, []).append(param)
        names.append(name.removeprefix("base_model.model."))
    optimizer = cls(
        [{"params": ps, "lr": lr} for lr, ps in groups.items()],
        lr=recipe.learning_rate,
        weight_decay=0.0,
        **kwargs,
    )
    return optimizer, sorted(names)
