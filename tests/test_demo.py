"""Tiny demo checkpoints: real architecture classes, working processor, offline, deterministic."""

from __future__ import annotations

import hashlib
import math
import threading
from pathlib import Path

import pytest

from vlmtui.core.model.demo import SPECIAL_TOKENS, ensure_demo_assets, make_demo_model

FAMILIES = {
    "qwen2-vl": ("Qwen2VLForConditionalGeneration", "Qwen2VLProcessor", False),
    "qwen2.5-vl": ("Qwen2_5_VLForConditionalGeneration", "Qwen2_5_VLProcessor", True),
}


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_demo_model_loads_and_runs_a_forward_pass_with_an_image(family, demo_model_dirs):
    import torch
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model_cls, proc_cls, tied = FAMILIES[family]
    path = demo_model_dirs[family]
    assert sum(f.stat().st_size for f in path.iterdir()) < 5_000_000
    model = AutoModelForImageTextToText.from_pretrained(path)
    processor = AutoProcessor.from_pretrained(path)
    assert type(model).__name__ == model_cls
    assert type(processor).__name__ == proc_cls
    assert type(processor.tokenizer).__name__ == "Qwen2Tokenizer"

    tok, cfg = processor.tokenizer, model.config
    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    assert len(set(ids.values())) == len(SPECIAL_TOKENS)
    for t, i in ids.items():
        assert tok.convert_ids_to_tokens(i) == t
        assert tok.encode(t, add_special_tokens=False) == [i]
    assert cfg.image_token_id == ids["<|image_pad|>"]
    assert cfg.video_token_id == ids["<|video_pad|>"]
    assert cfg.vision_start_token_id == ids["<|vision_start|>"]
    assert cfg.vision_end_token_id == ids["<|vision_end|>"]
    assert cfg.text_config.eos_token_id == tok.eos_token_id == ids["<|im_end|>"]
    assert cfg.text_config.pad_token_id == tok.pad_token_id == ids["<|endoftext|>"]
    assert cfg.text_config.bos_token_id == ids["<|endoftext|>"]
    assert cfg.text_config.vocab_size >= len(tok)
    assert cfg.tie_word_embeddings is tied
    same = model.lm_head.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    assert same is tied

    names = {n for n, _ in model.named_parameters()}
    if family == "qwen2.5-vl":
        for proj in ("gate_proj", "up_proj", "down_proj"):
            assert f"model.visual.blocks.0.mlp.{proj}.weight" in names
        assert cfg.vision_config.fullatt_block_indexes == [1]
    else:
        assert "model.visual.blocks.0.mlp.fc1.weight" in names
    assert "model.visual.merger.mlp.0.weight" in names
    assert {n.split(".")[0] + "." + n.split(".")[1] for n in names} <= {
        "model.visual",
        "model.language_model",
        "lm_head.weight",
    }

    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Detect."}]},
        {"role": "assistant", "content": [{"type": "text", "text": "red square"}]},
    ]
    text = processor.apply_chat_template(messages, tokenize=False)
    assert text.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n")
    assert (
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Detect.<|im_end|>\n" in text
    )
    assert text.endswith("<|im_start|>assistant\nred square<|im_end|>\n")
    image = Image.new("RGB", (112, 112), (200, 30, 30))
    batch = processor(text=[text], images=[image], return_tensors="pt")
    assert batch["image_grid_thw"].tolist() == [[1, 8, 8]]  # 112 px / 14 = 8 patches
    assert int((batch["input_ids"] == ids["<|image_pad|>"]).sum()) == 16  # 8*8 / 2**2
    with torch.no_grad():
        out = model(**batch, labels=batch["input_ids"])
    assert math.isfinite(out.loss.item())
    assert out.loss.item() > 0


def test_demo_model_is_deterministic(tmp_path, qwen25_vl_dir):
    again = make_demo_model(tmp_path / "again", "qwen2.5-vl")
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert _digest(again / name) == _digest(qwen25_vl_dir / name), name


def test_ensure_demo_assets_is_idempotent_and_safe_for_concurrent_callers(tmp_path):
    root = tmp_path / "demo"
    results: list[tuple[Path, Path]] = []
    errors: list[BaseException] = []

    def call() -> None:
        try:
            results.append(ensure_demo_assets(root))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    model_dir, data_dir = root / "model-qwen2-vl", root / "shapes"
    assert results == [(model_dir, data_dir)] * 2
    assert (model_dir / "model.safetensors").is_file()
    assert (data_dir / "train.jsonl").is_file() and (data_dir / "val.jsonl").is_file()
    assert sorted(p.name for p in root.iterdir()) == ["model-qwen2-vl", "shapes"]  # no temp left
    stamp = (model_dir / "model.safetensors").stat().st_mtime_ns
    assert ensure_demo_assets(root) == (model_dir, data_dir)
    assert (model_dir / "model.safetensors").stat().st_mtime_ns == stamp


def test_demo_model_cli_in_process(tmp_path, capsys):
    from vlmtui.cli import main

    assert main(["demo", "model", str(tmp_path / "m"), "--family", "qwen2.5-vl"]) == 0
    assert "qwen2.5-vl" in capsys.readouterr().out
    assert '"model_type": "qwen2_5_vl"' in (tmp_path / "m" / "config.json").read_text()
    with pytest.raises(SystemExit) as exc:
        main(["demo", "model", str(tmp_path / "x"), "--family", "llava"])
    assert exc.value.code == 2
