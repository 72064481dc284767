"""Save what one stage trained, and write the `weights.json` record the next stage (and
`vlmtui eval`) loads from.

Separate from the trainer code because every rank must call it (a sharded model is gathered
whole onto rank 0 first) and because its output layout is a contract with evaluation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vlmtui.core.recipes.policy import strip_peft
from vlmtui.core.recipes.recipe import TrainingRecipe
from vlmtui.core.rundir import WEIGHTS_JSON, write_json_atomic
from vlmtui.core.training.checkpoints import staged
from vlmtui.core.training.prepare import Prepared
from vlmtui.core.training.process import is_main_process
from vlmtui.core.training.sharding import gathered_state_dict, is_sharded


def save_stage(
    prepared: Prepared, stage_dir: Path, recipe: TrainingRecipe
) -> dict[str, Any] | None:
    """Save what the stage trained; returns its weights.json record (None on ranks > 0).

    Every rank calls it: a sharded model is first gathered whole onto rank 0."""
    model = prepared.model
    is_peft = hasattr(model, "peft_config")
    state = gathered_state_dict(model, trainable_only=is_peft) if is_sharded(model) else None
    if not is_main_process():
        return None
    kind = "adapter" if is_peft else "full"
    out = stage_dir / ("adapter" if is_peft else "model")
    with staged(out) as tmp:  # a full disk mid-save leaves no half-written weights
        model.save_pretrained(str(tmp), state_dict=state)
        trained = (
            state
            if state is not None
            else {n: p for n, p in model.named_parameters() if p.requires_grad}
        )
        full = {
            strip_peft(n.removeprefix("base_model.model.")): p.detach().cpu().contiguous()
            for n, p in trained.items()
            if is_peft and ".lora_" not in n
        }
        if full:
            from safetensors.torch import save_file

            save_file(full, str(tmp / "full_params.safetensors"))
        prepared.processor.save_pretrained(str(tmp))
    record = {
        "kind": kind,
        "path": str(out.resolve()),
        "base_model": str(prepared.base_model.resolve()),
        "family": prepared.family.name,
        "recipe": recipe.name,
        "quantization": recipe.quantization,
    }
    write_json_atomic(stage_dir / WEIGHTS_JSON, record)
    return record
