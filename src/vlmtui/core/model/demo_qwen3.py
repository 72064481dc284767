"""Tiny configs and processors of the Qwen3-VL / Qwen3.5 demo checkpoints (see `demo.py`).

Same text width as the Qwen2 demos (hidden 64, 4 heads / 2 KV heads, head_dim 16), with each
family's own structure kept at its smallest: Qwen3-VL has one DeepStack merger; Qwen3.5 has
4 LLM layers so both layer kinds exist (layers 0-2 linear attention, layer 3 full attention);
the MoE demos have 4 experts, top-2. Qwen3-VL and Qwen3.5 tie the word embeddings (like their
2B/4B and 0.8B-4B checkpoints), the MoE demos do not.

The vision tower uses 16-pixel patches, so the image factor is 32: a 112x112 image is
resized to 128x128 (the nearest multiple within `MAX_PIXELS`), 64 patches, 16 image tokens.
"""

from __future__ import annotations

from typing import Any

from vlmtui.core.families import QWEN3_5, QWEN3_5_MOE, QWEN3_VL, QWEN3_VL_MOE, Family

QWEN3_FAMILIES = (QWEN3_VL, QWEN3_VL_MOE, QWEN3_5, QWEN3_5_MOE)
PATCH_SIZE = 16
MERGE_SIZE = 2
TEMPORAL_PATCH_SIZE = 2
MIN_PIXELS = 64 * 64
MAX_PIXELS = 128 * 128

TEXT: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-6,
}
MOE: dict[str, Any] = {"num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32}
# Qwen3.5 rotates a quarter of each head in the checkpoints; here half of 16 = 8 dims, so the
# interleaved mrope sections sum to 4.
QWEN3_5_TEXT: dict[str, Any] = {
    "num_hidden_layers": 4,
    "linear_num_key_heads": 2,
    "linear_num_value_heads": 4,
    "linear_key_head_dim": 16,
    "linear_value_head_dim": 16,
    "linear_conv_kernel_dim": 4,
    "rope_parameters": {
        "rope_type": "default",
        "rope_theta": 10000000.0,
        "mrope_section": [2, 1, 1],
        "mrope_interleaved": True,
        "partial_rotary_factor": 0.5,
    },
}
QWEN3_VL_TEXT: dict[str, Any] = {
    "num_hidden_layers": 2,
    "rope_parameters": {
        "rope_type": "default",
        "rope_theta": 5000000.0,
        "mrope_section": [4, 2, 2],
        "mrope_interleaved": True,
    },
}
VISION: dict[str, Any] = {
    "depth": 2,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_heads": 2,
    "out_hidden_size": 64,
    "patch_size": PATCH_SIZE,
    "spatial_merge_size": MERGE_SIZE,
    "temporal_patch_size": TEMPORAL_PATCH_SIZE,
    "num_position_embeddings": 64,
    "hidden_act": "gelu_pytorch_tanh",
}


def is_qwen3(family: Family) -> bool:
    return family in QWEN3_FAMILIES


def build_processor(tokenizer: Any, chat_template: str) -> Any:
    """`Qwen3VLProcessor` (what all four families load): Qwen2-VL image processor and
    Qwen3-VL video processor with 16-pixel patches, at a small resolution."""
    from transformers import Qwen3VLProcessor
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

    common: dict[str, Any] = {
        "patch_size": PATCH_SIZE,
        "merge_size": MERGE_SIZE,
        "temporal_patch_size": TEMPORAL_PATCH_SIZE,
    }
    image = Qwen2VLImageProcessor(min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS, **common)
    video = Qwen3VLVideoProcessor(
        size={"shortest_edge": MIN_PIXELS, "longest_edge": MAX_PIXELS}, **common
    )
    return Qwen3VLProcessor(
        image_processor=image,
        tokenizer=tokenizer,
        video_processor=video,
        chat_template=chat_template,
    )


def build_config(family: Family, text_ids: dict[str, int], token_ids: dict[str, int]) -> Any:
    """The family's config class with the tiny sizes; `text_ids` are bos/eos/pad/vocab_size."""
    import transformers

    moe = family in (QWEN3_VL_MOE, QWEN3_5_MOE)
    hybrid = family in (QWEN3_5, QWEN3_5_MOE)
    text = {**TEXT, **(QWEN3_5_TEXT if hybrid else QWEN3_VL_TEXT), **text_ids}
    if moe:
        text.update(MOE)
        text["mlp_only_layers"] = []
        if hybrid:
            text["shared_expert_intermediate_size"] = 32
        else:
            text["decoder_sparse_step"] = 1
    tied = not moe
    text["tie_word_embeddings"] = tied
    vision = {**VISION, "deepstack_visual_indexes": [] if hybrid else [0]}
    config_cls = getattr(
        transformers, family.model_class.replace("ForConditionalGeneration", "Config")
    )
    return config_cls(text_config=text, vision_config=vision, tie_word_embeddings=tied, **token_ids)
