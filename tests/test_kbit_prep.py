"""Quantized recipes keep frozen full-precision weights in the compute dtype (no fp32 upcast).

Loads r1 on the tiny Qwen2-VL with `compute_dtype = bfloat16` on the CPU through the training
code path (`prepare_stage`, then `fit`), where bitsandbytes' 4-bit linears run as on a GPU.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest

from vlmtui.core.model.loading import Device
from vlmtui.core.recipes.policy import is_lora_param
from vlmtui.core.recipes.recipe import BUILTIN_RECIPES

pytestmark = pytest.mark.slow
CPU = Device("cpu")
R1_BF16 = replace(BUILTIN_RECIPES["r1-llm-only"], name="r1-bf16", compute_dtype="bfloat16")


def dtypes(model) -> tuple[dict[str, str], dict[str, str]]:
    """(frozen non-4-bit parameter -> dtype, LoRA parameter -> dtype)."""
    frozen, lora = {}, {}
    for name, p in model.named_parameters():
        if type(p).__name__ == "Params4bit":
            continue
        if is_lora_param(name):
            lora[name] = str(p.dtype)
        else:
            assert not p.requires_grad, f"{name} trains in r1"
            frozen[name] = str(p.dtype)
    return frozen, lora


@pytest.mark.parametrize("upcast_norms", [False, True])
def test_r1_bf16_keeps_frozen_weights_bf16_and_lora_fp32(
    qwen2_vl_dir: Path, shapes_data_dir: Path, tmp_path: Path, upcast_norms: bool
) -> None:
    from vlmtui.core.data.chat import to_trl_dataset
    from vlmtui.core.data.datasets import load_split
    from vlmtui.core.training.fitting import FitOptions, fit
    from vlmtui.core.training.prepare import prepare_stage

    recipe = replace(R1_BF16, upcast_norms=upcast_norms)
    stage = prepare_stage(qwen2_vl_dir, recipe, CPU)
    frozen, lora = dtypes(stage.model)
    norms = {
        f"{m}.{n}"
        for m, mod in stage.model.named_modules()
        if type(mod).__name__.endswith("Norm")
        for n, _ in mod.named_parameters(recurse=False)
    }
    assert norms <= set(frozen)
    assert norms and any(".visual." in n for n in frozen) and any("lm_head" in n for n in frozen)
    for name, dtype in frozen.items():
        want = "torch.float32" if upcast_norms and name in norms else "torch.bfloat16"
        assert dtype == want, f"{name} is {dtype}"
    assert lora and set(lora.values()) == {"torch.float32"}

    rows = to_trl_dataset(load_split(shapes_data_dir, "train"), stage.family, stage.processor)
    trainer = fit(stage, recipe, rows, tmp_path, CPU, FitOptions(max_steps=3))
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses)
    # TRL casts a quantized model's trainable parameters to bf16; fit puts them back.
    after_frozen, after_lora = dtypes(stage.model)
    assert after_frozen == frozen and set(after_lora.values()) == {"torch.float32"}
    optimized = {p.dtype for g in trainer.optimizer.param_groups for p in g["params"]}
    assert {str(d) for d in optimized} == {"torch.float32"}


def test_builtins_checkpoint_non_reentrant(qwen2_vl_dir: Path) -> None:
    """r1, r2 and r4 turn checkpointing on; the embedding output carries grad under LoRA."""
    import torch

    from vlmtui.core.training.prepare import prepare_stage

    assert all(
        BUILTIN_RECIPES[r].gradient_checkpointing
        for r in ("r1-llm-only", "r2-vision-only", "r4-joint")
    )
    stage = prepare_stage(qwen2_vl_dir, BUILTIN_RECIPES["r1-llm-only"], CPU)
    base = stage.model.get_base_model()
    layers = base.model.language_model.layers
    assert all(layer.gradient_checkpointing for layer in layers)
    assert all(block.gradient_checkpointing for block in base.model.visual.blocks)
    func = layers[0]._gradient_checkpointing_func
    assert func.keywords == {"use_reentrant": False}
    out = base.get_input_embeddings()(torch.tensor([[1, 2, 3]]))
    assert out.requires_grad
