"""Qwen3-VL, Qwen3-VL-MoE, Qwen3.5 and Qwen3.5-MoE on their shipped configs (meta device).

Each recipe goes through the trainer's own path (`policy.prepare_trainables` on the real
transformers class built on the meta device, quantized the way from_pretrained quantizes), and
the LoRA module sets are compared with sets built independently from the config's layer count,
layer kinds and vision depth. Models are built once per module (`inspector`).
"""

from __future__ import annotations

import json
import re
from dataclasses import replace

import pytest

from vlmtui.cli import main
from vlmtui.core.errors import BadInput
from vlmtui.core.families import FAMILIES
from vlmtui.core.inspection.meta import ModelInspector
from vlmtui.core.recipes.parse import recipe_from_dict
from vlmtui.core.recipes.recipe import BUILTIN_RECIPES, AreaPlan

RECIPES = ["r1-llm-only", "r2-vision-only", "r3-two-stage", "r4-joint"]
# The smallest shipped config of each family.
SMALLEST = {
    "qwen3-vl": "Qwen/Qwen3-VL-2B-Instruct",
    "qwen3-vl-moe": "Qwen/Qwen3-VL-30B-A3B-Instruct",
    "qwen3.5": "Qwen/Qwen3.5-0.8B",
    "qwen3.5-moe": "Qwen/Qwen3.5-35B-A3B",
}
ATTENTION = {
    "full_attention": {
        "self_attn.q_proj",
        "self_attn.k_proj",
        "self_attn.v_proj",
        "self_attn.o_proj",
    },
    "linear_attention": {
        "linear_attn.in_proj_qkv",
        "linear_attn.in_proj_z",
        "linear_attn.out_proj",
    },
}
MLP = {
    "qwen3-vl": {"mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"},
    "qwen3-vl-moe": set(),  # routed experts only; opt-in through `experts`
    "qwen3.5": {"mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"},
    "qwen3.5-moe": {
        "mlp.shared_expert.gate_proj",
        "mlp.shared_expert.up_proj",
        "mlp.shared_expert.down_proj",
    },
}
VISION_R4 = {"attn.qkv", "mlp.linear_fc1", "mlp.linear_fc2"}

_inspectors: dict[str, ModelInspector] = {}


def inspector(model_id: str) -> ModelInspector:
    if model_id not in _inspectors:
        _inspectors[model_id] = ModelInspector(model_id)
    return _inspectors[model_id]


def layer_types(model_id: str) -> list[str]:
    text = inspector(model_id).ref.config["text_config"]
    return text.get("layer_types") or ["full_attention"] * text["num_hidden_layers"]


def expected_llm_lora(model_id: str) -> set[str]:
    family = inspector(model_id).family.name
    return {
        f"model.language_model.layers.{i}.{m}"
        for i, kind in enumerate(layer_types(model_id))
        for m in ATTENTION[kind] | MLP[family]
    }


def expected_vision_lora(model_id: str) -> set[str]:
    depth = inspector(model_id).ref.config["vision_config"]["depth"]
    return {f"model.visual.blocks.{i}.{m}" for i in range(depth) for m in VISION_R4}


def test_areas_and_anchored_vision_targets() -> None:
    fam = FAMILIES["qwen3-vl"]
    assert fam.area_of("model.visual.deepstack_merger_list.2.linear_fc1.weight") == "projector"
    assert fam.area_of("model.visual.merger.linear_fc2.bias") == "projector"
    assert fam.area_of("model.visual.patch_embed.proj.weight") == "vision"
    assert fam.area_of("model.visual.pos_embed.weight") == "vision"
    assert FAMILIES["qwen3.5"].area_of("model.visual.deepstack_merger_list.0.norm") == "vision"
    rx = re.compile(fam.lora_regex("vision", ("qkv", "proj", "fc1", "fc2")) or "")
    assert rx.fullmatch("model.visual.blocks.26.mlp.linear_fc1")
    assert rx.fullmatch("model.visual.blocks.0.attn.proj")
    for trap in (
        "model.visual.merger.linear_fc1",
        "model.visual.deepstack_merger_list.0.linear_fc1",
        "model.visual.patch_embed.proj",
    ):
        assert not rx.fullmatch(trap), trap


def test_target_names_are_checked_per_family() -> None:
    with pytest.raises(BadInput, match="'experts' is not known for qwen3-vl"):
        FAMILIES["qwen3-vl"].lora_target_paths("llm", ("experts",))
    with pytest.raises(BadInput, match=r"'router' is not known for qwen3\.5 "):
        FAMILIES["qwen3.5"].full_part_regex("llm", "router")
    assert FAMILIES["qwen3-vl-moe"].absent_targets("llm", ("q_proj", "gate_proj")) == ["gate_proj"]
    assert FAMILIES["qwen3.5-moe"].expert_targets("llm", ("q_proj", "experts")) == [
        "mlp.experts.gate_up_proj",
        "mlp.experts.down_proj",
    ]


def test_also_full_needs_lora_mode() -> None:
    ok = recipe_from_dict(
        "moe",
        {
            "extends": "r1-llm-only",
            "llm": {"targets": ["q_proj", "experts"], "also_full": ["router"]},
        },
        "t.toml",
        BUILTIN_RECIPES,
    )
    assert ok.llm == AreaPlan(mode="lora", targets=("q_proj", "experts"), also_full=("router",))
    with pytest.raises(BadInput, match="also_full needs mode 'lora'"):
        recipe_from_dict(
            "bad", {"llm": {"mode": "full", "also_full": ["router"]}}, "t.toml", BUILTIN_RECIPES
        )


@pytest.mark.parametrize("family_name", sorted(SMALLEST))
@pytest.mark.parametrize("recipe_name", RECIPES)
def test_guard_passes_with_exact_lora_sets(family_name: str, recipe_name: str) -> None:
    model_id = SMALLEST[family_name]
    insp = inspector(model_id)
    assert insp.family.name == family_name
    result = insp.inspect(BUILTIN_RECIPES[recipe_name])
    llm, vision = expected_llm_lora(model_id), expected_vision_lora(model_id)
    expected = {
        "r1-llm-only": [llm],
        "r2-vision-only": [set()],
        "r3-two-stage": [set(), llm],
        "r4-joint": [vision | llm],
    }[recipe_name]
    assert [set(s.summary.lora_modules) for s in result.stages] == expected
    for stage in result.stages:
        assert stage.guard.startswith("passed")
        areas = stage.summary.areas
        assert areas["lm_head"].trainable == 0 and areas["other"].params == 0
        if stage.recipe.name == "r2-vision-only":
            trained = {insp.family.area_of(n) for n in stage.summary.trainable_names}
            assert trained == {"vision", "projector"}
            assert areas["vision"].trainable == areas["vision"].params
            assert areas["projector"].trainable == areas["projector"].params
        else:
            assert all(".lora_" in n for n in stage.summary.trainable_names)
        if stage.recipe.quantized:
            quantized = set(stage.summary.quantized_modules)
            assert {insp.family.area_of(m) for m in quantized} == {"llm"}
            assert not any(".experts" in m or m.endswith(".gate") for m in quantized)


def test_qwen3_vl_8b_r4_exact() -> None:
    result = inspector("Qwen/Qwen3-VL-8B-Instruct").inspect(BUILTIN_RECIPES["r4-joint"])
    lora = result.stages[0].summary.lora_modules
    vision = [m for m in lora if m.startswith("model.visual.")]
    assert len(vision) == 81 and set(vision) == expected_vision_lora("Qwen/Qwen3-VL-8B-Instruct")
    assert not any("merger" in m for m in lora)
    assert len([m for m in lora if m.startswith("model.language_model.")]) == 252


@pytest.mark.parametrize("family_name", ["qwen3-vl-moe", "qwen3.5-moe"])
def test_experts_target_and_router_train(family_name: str) -> None:
    model_id = SMALLEST[family_name]
    insp = inspector(model_id)
    r1 = BUILTIN_RECIPES["r1-llm-only"]
    recipe = replace(
        r1,
        name="r1-experts",
        llm=replace(r1.llm, targets=(*r1.llm.targets, "experts"), also_full=("router",)),
        lora=replace(r1.lora, dropout=0.0),  # PEFT cannot drop out a fused expert's input
    )
    with pytest.raises(BadInput, match=r"'experts' needs lora\.dropout = 0, got 0\.05"):
        insp.inspect(replace(recipe, lora=r1.lora))
    stage = insp.inspect(recipe).stages[0]
    layers = len(layer_types(model_id))
    experts = {
        f"model.language_model.layers.{i}.mlp.experts.{p}"
        for i in range(layers)
        for p in ("gate_up_proj", "down_proj")
    }
    assert set(stage.summary.lora_modules) == expected_llm_lora(model_id) | experts
    full = {n for n in stage.summary.trainable_names if ".lora_" not in n}
    assert full == {f"model.language_model.layers.{i}.mlp.gate.weight" for i in range(layers)}
    assert "routed experts: LoRA on every expert (target_parameters)" in stage.notes
    assert "router trains in full" in stage.notes


def test_moe_experts_stay_bf16_under_4bit_and_are_reported() -> None:
    from vlmtui.core.inspection.memory import MemoryAssumptions

    insp = inspector("Qwen/Qwen3-VL-30B-A3B-Instruct")
    stage = insp.inspect(BUILTIN_RECIPES["r1-llm-only"]).stages[0]
    # 48 layers x (gate_up 128x1536x2048 + down 128x2048x768) and 48 routers 128x2048
    experts = 48 * (128 * 1536 * 2048 + 128 * 2048 * 768)
    assert stage.summary.not_quantized["experts"] == experts
    assert stage.summary.not_quantized["router"] == 48 * 128 * 2048
    total = sum(stage.summary.not_quantized.values())
    note = next(n for n in stage.notes if "not 4-bit" in n)
    assert note.startswith(f"{total:,} LLM parameters are not 4-bit") and f"{experts:,}" in note
    memory = stage.memory(insp.dims, MemoryAssumptions())
    # Experts count at bf16; so does every other frozen non-4-bit weight, since quantized
    # recipes no longer upcast them (issue 12): only the adapters are fp32.
    assert memory.weights_by_dtype["bfloat16"] >= 2 * experts
    assert memory.weights_by_dtype.get("float32", 0) < 0.01 * sum(memory.weights_by_dtype.values())


def test_qwen35_keeps_a_log_and_gated_norm_fp32() -> None:
    # 3,840 = the F32 count of the published Qwen3.5-9B safetensors (SOURCES.md).
    insp = inspector("Qwen/Qwen3.5-9B")
    r1 = insp.inspect(BUILTIN_RECIPES["r1-llm-only"]).stages[0]
    assert r1.summary.not_quantized["fp32"] == 3840
    r4 = insp.inspect(BUILTIN_RECIPES["r4-joint"]).stages[0]
    fp32 = [p for p in r4.params if p.dtype == "float32" and not p.lora]
    assert sum(p.numel for p in fp32) == 3840
    assert {p.name.rsplit(".", 2)[-2] + "." + p.name.rsplit(".", 1)[-1] for p in fp32} == {
        "linear_attn.A_log",
        "norm.weight",
    }


def test_tree_keeps_layer_kinds_apart() -> None:
    from vlmtui.core.inspection.views import collapse

    insp = inspector("Qwen/Qwen3.5-0.8B")
    stage = insp.inspect(BUILTIN_RECIPES["r1-llm-only"]).stages[0]
    root = collapse(insp.tree().mark(stage.marking))
    layers = root.find("model").find("language_model").find("layers")  # type: ignore[union-attr]
    assert layers is not None
    runs = [
        (c.short, {g.short for g in c.children} & {"self_attn", "linear_attn"})
        for c in layers.children
    ]
    assert runs[:2] == [("0–2", {"linear_attn"}), ("3", {"self_attn"})]
    assert len(runs) == 12  # 6 x (three linear-attention layers, one full-attention layer)


def test_inspect_json_reports_layer_kinds_and_notes(capsys) -> None:
    rc = main(["inspect", "Qwen/Qwen3.5-0.8B", "--recipe", "r1-llm-only", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert data["checkpoint_params"] == 873_438_784
    assert data["tied_head"] == "model.language_model.embed_tokens.weight"
    kinds = data["stages"][0]["lora_by_layer_kind"]
    assert kinds["linear-attention"]["linear_attn.in_proj_qkv"] == 18
    assert kinds["full-attention"]["self_attn.q_proj"] == 6
    notes = data["stages"][0]["notes"]
    assert any(n.startswith("lm_head and model.language_model.embed_tokens.weight") for n in notes)
    assert "LLM layers: 6 full-attention, 18 linear-attention" in notes


@pytest.mark.slow
@pytest.mark.parametrize(
    "model_id",
    [
        "Qwen/Qwen3-VL-4B-Instruct",
        "Qwen/Qwen3-VL-8B-Instruct",
        "Qwen/Qwen3-VL-32B-Instruct",
        "Qwen/Qwen3-VL-235B-A22B-Instruct",
        "Qwen/Qwen3.5-2B",
        "Qwen/Qwen3.5-4B",
        "Qwen/Qwen3.5-9B",
        "Qwen/Qwen3.5-27B",
        "Qwen/Qwen3.5-122B-A10B",
        "Qwen/Qwen3.5-397B-A17B",
        "Qwen/Qwen3.6-27B",
        "Qwen/Qwen3.6-35B-A3B",
    ],
)
def test_guard_passes_r1_to_r4_on_every_shipped_config(model_id: str) -> None:
    insp = inspector(model_id)
    llm, vision = expected_llm_lora(model_id), expected_vision_lora(model_id)
    for name, lora in (("r1-llm-only", llm), ("r2-vision-only", set()), ("r4-joint", vision | llm)):
        stage = insp.inspect(BUILTIN_RECIPES[name]).stages[0]
        assert set(stage.summary.lora_modules) == lora, name
    assert len(insp.inspect(BUILTIN_RECIPES["r3-two-stage"]).stages) == 2
    _inspectors.pop(model_id)  # the large ones are not needed again


def test_the_not_quantized_note_names_the_recipes_bit_width() -> None:
    insp = inspector("Qwen/Qwen3-VL-30B-A3B-Instruct")
    recipe = replace(BUILTIN_RECIPES["r1-llm-only"], name="r1-8bit", quantization="8bit")
    notes = insp.inspect(recipe).stages[0].notes
    assert any("LLM parameters are not 8-bit" in n for n in notes), notes
    assert not any("not 4-bit" in n for n in notes), notes
