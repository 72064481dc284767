"""The four Qwen3 families train on CPU from their tiny demo checkpoints: exactly what the recipe
says moves, everything else stays bit-identical, and the adapters sit on exactly the expected
modules (r1 loads the LLM in 4-bit NF4 through bitsandbytes, as `vlmtui train` does).

Same checks as test_train.py / test_policy.py for the Qwen2 families, plus the MoE `experts`
target with the router trained in full.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from trainhelp import fit_three_steps
from vlmtui.core.eval.boxparse import BOX_FORMATS
from vlmtui.core.families import PEFT_PREFIX
from vlmtui.core.inspection.meta import ModelInspector
from vlmtui.core.model.loading import Device
from vlmtui.core.recipes.policy import strip_peft
from vlmtui.core.recipes.recipe import BUILTIN_RECIPES, TrainingRecipe

pytestmark = pytest.mark.slow
CPU = Device("cpu")
FAMILIES = ["qwen3-vl", "qwen3-vl-moe", "qwen3.5", "qwen3.5-moe"]
# Demo sizes (model/demo_qwen3.py): 2 LLM layers (Qwen3-VL) or 4 (Qwen3.5: 0-2 linear
# attention, 3 full attention); 2 vision blocks.
LAYER_KINDS = {
    "qwen3-vl": ["full"] * 2,
    "qwen3-vl-moe": ["full"] * 2,
    "qwen3.5": ["linear"] * 3 + ["full"],
    "qwen3.5-moe": ["linear"] * 3 + ["full"],
}
ATTENTION = {
    "full": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"),
    "linear": ("linear_attn.in_proj_qkv", "linear_attn.in_proj_z", "linear_attn.out_proj"),
}
MLP = {
    "qwen3-vl": ("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"),
    "qwen3-vl-moe": (),
    "qwen3.5": ("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"),
    "qwen3.5-moe": (
        "mlp.shared_expert.gate_proj",
        "mlp.shared_expert.up_proj",
        "mlp.shared_expert.down_proj",
    ),
}
EXPERTS = ("mlp.experts.gate_up_proj", "mlp.experts.down_proj")


def moe_recipe() -> TrainingRecipe:
    r1 = BUILTIN_RECIPES["r1-llm-only"]
    llm = replace(r1.llm, targets=(*r1.llm.targets, "experts"), also_full=("router",))
    return replace(r1, name="r1-experts", llm=llm, lora=replace(r1.lora, dropout=0.0))


def expected_lora(family: str, recipe: str) -> set[str]:
    llm: set[str] = set()
    for i, kind in enumerate(LAYER_KINDS[family]):
        extra = EXPERTS if recipe == "r1-experts" else ()
        llm |= {
            f"model.language_model.layers.{i}.{m}" for m in (*ATTENTION[kind], *MLP[family], *extra)
        }
    vision = {
        f"model.visual.blocks.{b}.{m}"
        for b in range(2)
        for m in ("attn.qkv", "mlp.linear_fc1", "mlp.linear_fc2")
    }
    return {
        "r1-llm-only": llm,
        "r1-experts": llm,
        "r2-vision-only": set(),
        "r4-joint": llm | vision,
    }[recipe]


CASES = [(f, r) for f in FAMILIES for r in ("r1-llm-only", "r2-vision-only", "r4-joint")] + [
    ("qwen3-vl-moe", "r1-experts"),
    ("qwen3.5-moe", "r1-experts"),
]


@pytest.mark.parametrize(("family_name", "recipe_name"), CASES)
def test_recipe_trains_exactly_what_it_says(
    qwen3_demo_dirs, shapes_data_dir: Path, tmp_path: Path, family_name: str, recipe_name: str
) -> None:
    import torch

    from vlmtui.core.data.chat import to_trl_dataset
    from vlmtui.core.data.datasets import load_split
    from vlmtui.core.training.prepare import prepare_stage

    recipe = moe_recipe() if recipe_name == "r1-experts" else BUILTIN_RECIPES[recipe_name]
    stage = prepare_stage(qwen3_demo_dirs[family_name], recipe, CPU)
    family = stage.family
    assert family.name == family_name
    assert set(stage.summary.lora_modules) == expected_lora(family_name, recipe_name)
    if recipe.quantized:
        assert stage.summary.quantized_modules
        assert {family.area_of(m) for m in stage.summary.quantized_modules} == {"llm"}
    if family.fp32_params:  # A_log and the gated norm stay float32 whatever the recipe
        fp32 = [p for n, p in stage.model.named_parameters() if family.is_fp32_param(strip_peft(n))]
        assert fp32 and all(p.dtype == torch.float32 for p in fp32)

    # The `qwen3` answer format comes with data/datasets.py's change; until then the rows are
    # written in Qwen2.5-VL's JSON format, which trains the same parameters.
    data_family = (
        family if family.box_format in BOX_FORMATS else replace(family, box_format="qwen2.5")
    )
    rows = to_trl_dataset(load_split(shapes_data_dir, "train"), data_family, stage.processor)
    trainable = fit_three_steps(stage, recipe, rows, tmp_path)
    # inspect (meta device, same code path) names exactly the parameters training trains
    meta = ModelInspector(str(qwen3_demo_dirs[family_name])).inspect(recipe).stages[0].summary
    assert set(meta.trainable_names) == {n.removeprefix(PEFT_PREFIX) for n in trainable}
    base = {strip_peft(n) for n in trainable}
    areas = {family.area_of(n) for n in base}
    assert (
        areas
        == {
            "r1-llm-only": {"llm"},
            "r1-experts": {"llm"},
            "r2-vision-only": {"vision", "projector"},
            "r4-joint": {"vision", "llm"},
        }[recipe_name]
    )
    full = {n for n in base if ".lora_" not in n}
    if recipe_name == "r1-experts":
        layers = len(LAYER_KINDS[family_name])
        assert full == {f"model.language_model.layers.{i}.mlp.gate.weight" for i in range(layers)}
    elif recipe_name == "r2-vision-only":
        names = {strip_peft(n) for n, _ in stage.model.named_parameters()}
        every = {n for n in names if family.area_of(n) != "llm"}
        assert full == every - {n for n in every if family.area_of(n) == "lm_head"}
    else:
        assert full == set()
