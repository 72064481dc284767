"""The trainable set of each built-in recipe on real (tiny) checkpoints of both families.

Models are loaded exactly as `vlmtui train` loads them (4-bit NF4 through bitsandbytes on
CPU for r1), then prepared by `policy.prepare_trainables`, the one path training uses.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest

from vlmtui.core.errors import BadInput
from vlmtui.core.families import FAMILIES
from vlmtui.core.model.loading import Device, load_model_for_recipe
from vlmtui.core.recipes.policy import (
    GuardError,
    find_modules_by_pattern,
    list_linear_modules,
    parameter_table,
    prepare_trainables,
    strip_peft,
    summarize_trainables_by_area,
    unique_parameters,
)
from vlmtui.core.recipes.recipe import BUILTIN_RECIPES, AreaPlan, TrainingRecipe

# The Qwen3 families have their own exact checks in test_qwen3_train.py.
FAMILY_NAMES = ["qwen2-vl", "qwen2.5-vl"]
CPU = Device("cpu")
LLM_LINEARS = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


def prepared(model_dir: Path, recipe: TrainingRecipe, family_name: str):
    family = FAMILIES[family_name]
    model = load_model_for_recipe(model_dir, recipe, CPU, family)
    return prepare_trainables(model, recipe, family), family


def trainable_by_area(model, family) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, p in unique_parameters(model):
        if p.requires_grad:
            out.setdefault(family.area_of(strip_peft(name)), []).append(strip_peft(name))
    return out


@pytest.mark.parametrize("family_name", FAMILY_NAMES)
def test_r1_trains_only_llm_lora_on_a_4bit_llm(demo_model_dirs, family_name: str) -> None:
    model, family = prepared(
        demo_model_dirs[family_name], BUILTIN_RECIPES["r1-llm-only"], family_name
    )
    s = summarize_trainables_by_area(model, family)
    assert s.areas["vision"].trainable == 0
    assert s.areas["projector"].trainable == 0
    assert s.areas["lm_head"].trainable == 0
    assert s.areas["llm"].trainable > 0
    assert all(".lora_" in n for n in trainable_by_area(model, family)["llm"])
    assert s.lora_modules and all(
        m.startswith("model.language_model.layers.") for m in s.lora_modules
    )
    assert {m.rsplit(".", 1)[1] for m in s.lora_modules} == LLM_LINEARS
    # Every LLM base linear is 4-bit; nothing else is.
    llm_linears = [
        strip_peft(n)
        for n, cls in list_linear_modules(model)
        if cls == "Linear4bit" and ".base_layer" in n
    ]
    assert sorted(set(llm_linears)) == sorted(s.quantized_modules)
    assert {family.area_of(m) for m in s.quantized_modules} == {"llm"}
    assert len(s.quantized_modules) == len(s.lora_modules)


def test_qwen25_r1_has_no_adapter_or_4bit_in_vision(qwen25_vl_dir: Path) -> None:
    model, family = prepared(qwen25_vl_dir, BUILTIN_RECIPES["r1-llm-only"], "qwen2.5-vl")
    names = [strip_peft(n) for n, _ in model.named_modules()]
    # The trap: the vision MLP is named gate/up/down_proj like the LLM's.
    assert any(re.search(r"model\.visual\.blocks\.\d+\.mlp\.down_proj$", n) for n in names)
    for name, module in model.named_modules():
        base = strip_peft(name)
        if family.area_of(base) in ("vision", "projector", "lm_head"):
            assert not hasattr(module, "lora_A"), base
            assert type(module).__name__ not in ("Linear4bit", "Linear8bitLt"), base


@pytest.mark.parametrize("family_name", FAMILY_NAMES)
def test_r2_trains_every_vision_and_projector_param_and_nothing_else(
    demo_model_dirs, family_name: str
) -> None:
    model, family = prepared(
        demo_model_dirs[family_name], BUILTIN_RECIPES["r2-vision-only"], family_name
    )
    s = summarize_trainables_by_area(model, family)
    for area in ("vision", "projector"):
        assert s.areas[area].trainable == s.areas[area].params > 0
    for area in ("llm", "lm_head", "other"):
        assert s.areas[area].trainable == 0
    assert s.lora_modules == ()
    assert s.quantized_modules == ()


VISION_LORA = {
    "qwen2-vl": {"attn.qkv", "mlp.fc1", "mlp.fc2"},
    "qwen2.5-vl": {"attn.qkv", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"},
}


@pytest.mark.parametrize("family_name", FAMILY_NAMES)
def test_r4_adapters_sit_on_vision_blocks_and_llm_only(demo_model_dirs, family_name: str) -> None:
    model, family = prepared(demo_model_dirs[family_name], BUILTIN_RECIPES["r4-joint"], family_name)
    s = summarize_trainables_by_area(model, family)
    vision = [m for m in s.lora_modules if family.area_of(m) == "vision"]
    llm = [m for m in s.lora_modules if family.area_of(m) == "llm"]
    assert len(vision) + len(llm) == len(s.lora_modules)
    blocks = re.compile(r"model\.visual\.blocks\.\d+\.(.+)$")
    assert {blocks.match(m).group(1) for m in vision} == VISION_LORA[family_name]
    assert all(m.startswith("model.language_model.layers.") for m in llm)
    assert not any("merger" in m for m in s.lora_modules)
    assert s.areas["projector"].trainable == 0
    assert all(".lora_" in n for ns in trainable_by_area(model, family).values() for n in ns)


def test_guard_refuses_the_seed_bug_model_layers(qwen2_vl_dir: Path) -> None:
    """The original bug: an LLM pattern in the pre-4.52 layout trains nothing in the LLM."""
    recipe = TrainingRecipe(
        name="seed-bug", llm=AreaPlan(mode="full", patterns=(r"model\.layers\.",))
    )
    model = load_model_for_recipe(qwen2_vl_dir, recipe, CPU)
    with pytest.raises(GuardError, match=r"llm pattern .* matches no parameter"):
        prepare_trainables(model, recipe, FAMILIES["qwen2-vl"])


def test_guard_refuses_pattern_outside_its_area(qwen2_vl_dir: Path) -> None:
    recipe = TrainingRecipe(name="leak", llm=AreaPlan(mode="full", patterns=(r"model\.",)))
    model = load_model_for_recipe(qwen2_vl_dir, recipe, CPU)
    with pytest.raises(GuardError, match=r"matches outside llm: model\.visual"):
        prepare_trainables(model, recipe, FAMILIES["qwen2-vl"])


def test_guard_refuses_lora_target_matching_nothing(qwen2_vl_dir: Path) -> None:
    # `proj` (attention output) exists in both families; removing it from the family
    # table's model by asking a tiny model without vision blocks is not possible, so use a
    # family whose names do not fit: Qwen2.5-VL's gate_proj on a Qwen2-VL checkpoint.
    recipe = TrainingRecipe(name="wrong", vision=AreaPlan(mode="lora", targets=("gate_proj",)))
    model = load_model_for_recipe(qwen2_vl_dir, recipe, CPU)
    with pytest.raises(BadInput, match="'gate_proj' is not known for qwen2-vl"):
        prepare_trainables(model, recipe, FAMILIES["qwen2-vl"])
    qwen25 = FAMILIES["qwen2.5-vl"]
    with pytest.raises(GuardError, match="vision LoRA target 'gate_proj' matches no module"):
        prepare_trainables(model, recipe, qwen25)


def test_guard_refuses_a_frozen_area_with_trainable_params(qwen2_vl_dir: Path) -> None:
    from vlmtui.core.recipes.policy import guard

    recipe = BUILTIN_RECIPES["r2-vision-only"]
    family = FAMILIES["qwen2-vl"]
    model = prepare_trainables(load_model_for_recipe(qwen2_vl_dir, recipe, CPU), recipe, family)
    model.lm_head.weight.requires_grad_(True)
    with pytest.raises(GuardError, match="lm_head is frozen in the recipe but has"):
        guard(model, recipe, family)


def test_diagnostics(qwen25_vl_dir: Path) -> None:
    recipe = BUILTIN_RECIPES["r2-vision-only"]
    model = load_model_for_recipe(qwen25_vl_dir, recipe, CPU)
    linears = dict(list_linear_modules(model))
    assert "model.visual.merger.mlp.0" in linears
    hits = find_modules_by_pattern(model, r"model\.visual\.blocks\.\d+\.mlp\.down_proj")
    assert hits and all(h.startswith("model.visual.blocks.") for h in hits)
    # PEFT's list semantics match the bare suffix in both towers: the bug class itself.
    bare = [n for n in linears if n.endswith("down_proj")]
    assert {FAMILIES["qwen2.5-vl"].area_of(n) for n in bare} == {"vision", "llm"}
    table = parameter_table(model)
    assert table[0][0] and isinstance(table[0][1], tuple)


def test_per_area_learning_rate_groups(qwen2_vl_dir: Path) -> None:
    from vlmtui.core.training.optimizer import build_optimizer
    from vlmtui.core.training.prepare import prepare_stage

    recipe = replace(
        BUILTIN_RECIPES["r4-joint"],
        vision=replace(BUILTIN_RECIPES["r4-joint"].vision, learning_rate=1e-5),
    )
    stage = prepare_stage(qwen2_vl_dir, recipe, CPU)
    optimizer, names = build_optimizer(stage, recipe)
    lrs = sorted(g["lr"] for g in optimizer.param_groups)
    assert lrs == [1e-5, recipe.learning_rate]
    assert len(names) == sum(len(g["params"]) for g in optimizer.param_groups)
