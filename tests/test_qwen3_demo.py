"""Tiny demo checkpoints of the Qwen3 families: real classes, processor saved and loaded offline,
each family's own structure (DeepStack, hybrid layers, experts), an image forward pass."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from vlmtui.cli import main

FAMILIES = {
    # family: (model class, tied lm_head, tokenizer class AutoProcessor picks for the type)
    "qwen3-vl": ("Qwen3VLForConditionalGeneration", True, "Qwen2Tokenizer"),
    "qwen3-vl-moe": ("Qwen3VLMoeForConditionalGeneration", False, "Qwen2Tokenizer"),
    "qwen3.5": ("Qwen3_5ForConditionalGeneration", True, "Qwen3_5Tokenizer"),
    "qwen3.5-moe": ("Qwen3_5MoeForConditionalGeneration", False, "Qwen3_5Tokenizer"),
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_demo_loads_offline_and_runs_an_image(family, qwen3_demo_dirs, monkeypatch) -> None:
    import torch
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model_cls, tied, tok_cls = FAMILIES[family]
    path = qwen3_demo_dirs[family]
    model = AutoModelForImageTextToText.from_pretrained(path)
    processor = AutoProcessor.from_pretrained(path)
    assert type(model).__name__ == model_cls
    assert type(processor).__name__ == "Qwen3VLProcessor"
    assert type(processor.video_processor).__name__ == "Qwen3VLVideoProcessor"
    assert type(processor.tokenizer).__name__ == tok_cls
    assert model.config.tie_word_embeddings is tied
    same = model.lm_head.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    assert same is tied

    names = {n for n, _ in model.named_parameters()}
    layer = "model.language_model.layers"
    assert ("model.visual.deepstack_merger_list.0.linear_fc1.weight" in names) is (
        family.startswith("qwen3-vl")
    )
    if family.startswith("qwen3.5"):
        assert {f"{layer}.{i}.linear_attn.A_log" for i in range(3)} <= names
        assert f"{layer}.3.self_attn.q_proj.weight" in names
        assert f"{layer}.3.linear_attn.A_log" not in names
    if family.endswith("moe"):
        assert f"{layer}.0.mlp.experts.gate_up_proj" in names
        assert f"{layer}.0.mlp.gate.weight" in names
    assert ("mlp.shared_expert" in " ".join(names)) is (family == "qwen3.5-moe")

    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Detect."}]},
        {"role": "assistant", "content": [{"type": "text", "text": "red square"}]},
    ]
    text = processor.apply_chat_template(messages, tokenize=False)
    image = Image.new("RGB", (112, 112), (200, 30, 30))
    batch = processor(text=[text], images=[image], return_tensors="pt")
    assert batch["image_grid_thw"].tolist() == [[1, 8, 8]]  # resized to 128 px / 16
    image_pad = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert int((batch["input_ids"] == image_pad).sum()) == 16  # 8*8 / 2**2
    with torch.no_grad():
        out = model(**batch, labels=batch["input_ids"])
    assert math.isfinite(out.loss.item()) and out.loss.item() > 0


def test_demo_cli_writes_a_qwen35_checkpoint(tmp_path: Path, capsys) -> None:
    out = tmp_path / "q35"
    assert main(["demo", "model", str(out), "--family", "qwen3.5"]) == 0
    assert (out / "config.json").is_file() and (out / "processor_config.json").is_file()
    rc = main(["inspect", str(out), "--recipe", "r1-llm-only", "--json"])
    assert rc == 0
