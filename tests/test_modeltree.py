"""The module tree API: structure built once, marked per recipe, collapsed, filtered, diffed.

Uses the shipped 2B/3B configs on the meta device (no weights, well under a second each).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from vlmtui.core.errors import BadInput
from vlmtui.core.recipes.catalog import get_recipe
from vlmtui.core.recipes.recipe import BUILTIN_RECIPES

Q2 = "Qwen/Qwen2-VL-2B-Instruct"
Q25 = "Qwen/Qwen2.5-VL-3B-Instruct"


@pytest.fixture(scope="module")
def q2():
    from vlmtui.core.inspection.meta import ModelInspector

    return ModelInspector(Q2)


@pytest.fixture(scope="module")
def q25():
    from vlmtui.core.inspection.meta import ModelInspector

    return ModelInspector(Q25)


def marked(insp, recipe_name: str):
    return insp.tree().mark(insp.inspect(BUILTIN_RECIPES[recipe_name]).marking)


def test_tree_counts_and_tied_head(q2) -> None:
    root = q2.tree().root
    assert root.name == "" and root.cls == "Qwen2VLForConditionalGeneration"
    assert root.total_params == 2_208_985_600
    assert root.trainable_params == 0 and root.state == "frozen"
    # total = own + children, everywhere
    for node in root.walk():
        assert node.total_params == node.own_params + sum(c.total_params for c in node.children)
    embed = root.find("model.language_model.embed_tokens")
    head = root.find("lm_head")
    assert head is not None and embed is not None
    assert head.own_params == 0 and head.shared_params == embed.total_params == 151936 * 1536
    assert head.area == "lm_head" and root.find("model.visual.merger").area == "projector"


def test_nodes_are_frozen_dataclasses(q2) -> None:
    root = q2.tree().root
    with pytest.raises(dataclasses.FrozenInstanceError):
        root.state = "full"  # type: ignore[misc]


def test_collapse_repeated_blocks(q2) -> None:
    from vlmtui.core.inspection.views import collapse

    root = collapse(q2.tree().root)
    blocks = root.find("model.visual.blocks")
    assert blocks is not None and len(blocks.children) == 1
    run = blocks.children[0]
    assert (run.repeat, run.short, run.label) == (32, "0–31", "0–31 ×32")
    assert run.members[0] == "model.visual.blocks.0" and len(run.members) == 32
    assert run.total_params == 19_677_440  # per member
    layers = root.find("model.language_model.layers")
    assert [c.repeat for c in layers.children] == [28]
    # expand keeps the members apart
    expanded = collapse(q2.tree().root, expand=lambda n: n.name.endswith("layers"))
    assert len(expanded.find("model.language_model.layers").children) == 28
    assert len(expanded.find("model.visual.blocks").children) == 1


def test_marking_r2_full_vision_and_projector(q2) -> None:
    root = marked(q2, "r2-vision-only")
    visual = root.find("model.visual")
    assert visual.state == "full" and visual.trainable_params == visual.total_params
    assert root.find("model.visual.merger").state == "full"
    assert root.find("model.language_model").state == "frozen"
    assert root.state == "mixed"


def test_marking_r4_lora_on_both_towers(q2) -> None:
    root = marked(q2, "r4-joint")
    qkv = root.find("model.visual.blocks.0.attn.qkv")
    assert qkv.state == "lora" and qkv.lora_params == 16 * (1280 + 3840)
    assert root.find("model.visual.blocks.0.attn.proj").state == "frozen"
    assert root.find("model.visual.blocks.0").state == "lora"
    assert root.find("model.visual.merger").state == "frozen"
    q = root.find("model.language_model.layers.3.self_attn.q_proj")
    assert q.state == q.own_state == "lora" and q.trainable_params == q.lora_params
    assert root.find("model.language_model.layers.3.input_layernorm").state == "frozen"


def test_r1_marks_llm_linears_4bit_only(q25) -> None:
    """Qwen2.5-VL's vision MLP is named like the LLM's: r1 must not touch it."""
    result = q25.inspect(BUILTIN_RECIPES["r1-llm-only"])
    stage = result.stages[0]
    assert len(stage.summary.lora_modules) == 36 * 7
    assert all(m.startswith("model.language_model.layers.") for m in stage.summary.lora_modules)
    assert set(stage.marking.quant) == set(stage.summary.lora_modules)
    assert set(stage.marking.quant.values()) == {"4bit"}
    root = q25.tree().mark(stage.marking)
    assert root.find("model.visual.blocks.0.mlp.gate_proj").state == "frozen"
    assert root.find("model.visual.blocks.0.mlp.gate_proj").quant == ""
    assert root.find("model.language_model.layers.0.mlp.gate_proj").quant == "4bit"
    assert root.find("model.visual").trainable_params == 0
    # The structure is recipe-independent: 4-bit linears are Linear in the tree.
    assert root.find("model.language_model.layers.0.mlp.gate_proj").cls == "Linear"


def test_tree_from_prepared_model_is_the_base_structure(q25) -> None:
    from vlmtui.core.inspection.metaprep import prepare_meta_stage
    from vlmtui.core.inspection.tree import ModelTree

    prepared = prepare_meta_stage(q25.ref, BUILTIN_RECIPES["r1-llm-only"])
    tree = ModelTree.from_model(prepared, q25.family)
    base = q25.tree().root
    got = [(n.name, n.cls, n.own_params, n.shared_params) for n in tree.root.walk()]
    want = [(n.name, n.cls, n.own_params, n.shared_params) for n in base.walk()]
    assert got == want


def test_partial_pattern_breaks_the_run(q2, tmp_path: Path) -> None:
    from vlmtui.core.inspection.views import collapse

    f = tmp_path / "r.toml"
    f.write_text(
        '[recipe.last-blocks]\nvision = { mode = "full", patterns = ["model\\\\.visual\\\\.blocks'
        '\\\\.(30|31)\\\\."] }\n',
        encoding="utf-8",
    )
    recipe = get_recipe("last-blocks", [f])
    root = collapse(q2.tree().mark(q2.inspect(recipe).marking))
    runs = root.find("model.visual.blocks").children
    assert [(r.short, r.repeat, r.state) for r in runs] == [
        ("0–29", 30, "frozen"),
        ("30–31", 2, "full"),
    ]
    assert root.find("model.visual").state == "mixed"


def test_filter_nodes_and_bad_regex(q2) -> None:
    from vlmtui.core.inspection.views import filter_nodes, group_names

    root = marked(q2, "r1-llm-only")
    hits = filter_nodes(root, r"self_attn\.q_proj$")
    assert len(hits) == 28 and all(h.state == "lora" for h in hits)
    grouped = group_names((h.name, h.state) for h in hits)
    assert grouped == [("model.language_model.layers.{0–27}.self_attn.q_proj", 28, "lora")]
    with pytest.raises(BadInput, match="not a valid regex"):
        filter_nodes(root, "blocks.(")


def test_group_names_ranges() -> None:
    from vlmtui.core.inspection.views import group_names

    items = [(f"a.b.{i}.c", "x") for i in (0, 1, 2, 5, 7, 8)] + [("a.z", "y"), ("a.b.3.c", "q")]
    assert group_names(items) == [
        ("a.b.{0–2,5,7–8}.c", 6, "x"),
        ("a.z", 1, "y"),
        ("a.b.3.c", 1, "q"),
    ]


def test_diff_r2_vs_r1(q2) -> None:
    from vlmtui.core.inspection.views import diff_trees

    changes = diff_trees(marked(q2, "r2-vision-only"), marked(q2, "r1-llm-only"))
    by_name = {c.name: c for c in changes}
    assert by_name["model.visual"].before == "full" and by_name["model.visual"].after == "frozen"
    attn = by_name["model.language_model.layers.{0–27}.self_attn"]
    assert (attn.before, attn.after, attn.count) == ("frozen", "lora", 28)
    # norms do not change: not listed, and nothing under model.visual is listed twice
    assert not any("layernorm" in c.name for c in changes)
    assert not any(c.name.startswith("model.visual.") for c in changes)
    assert diff_trees(marked(q2, "r4-joint"), marked(q2, "r4-joint")) == []


def test_multi_stage_marking_is_the_union(q2) -> None:
    result = q2.inspect(BUILTIN_RECIPES["r3-two-stage"])
    assert [s.recipe.name for s in result.stages] == ["r2-vision-only", "r1-llm-only"]
    root = q2.tree().mark(result.marking)
    assert root.find("model.visual").state == "full"
    assert root.find("model.language_model.layers.0.self_attn.q_proj").state == "lora"
    assert result.trainable_names == sorted(
        set(result.stages[0].summary.trainable_names)
        | set(result.stages[1].summary.trainable_names)
    )


def test_inspector_caches_per_recipe(q2) -> None:
    a = q2.inspect(BUILTIN_RECIPES["r4-joint"])
    assert q2.inspect(BUILTIN_RECIPES["r4-joint"]) is a
    assert q2.tree() is q2.tree()


def test_tree_to_dict_roundtrips_counts(q2) -> None:
    from vlmtui.core.inspection.views import collapse

    d = collapse(marked(q2, "r4-joint")).to_dict()
    assert d["total_params"] == 2_208_985_600 and d["state"] == "lora"
    visual = d["children"][0]["children"][0]
    assert visual["name"] == "model.visual"
    blocks = next(c for c in visual["children"] if c["short"] == "blocks")
    assert blocks["children"][0]["repeat"] == 32
