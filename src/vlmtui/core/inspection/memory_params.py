"""What the memory estimate reads from a model: its parameters (storage per kind, FSDP shards,
gathered blocks) and its dimensions."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from vlmtui.core.inspection.memory_model import dtype_bytes, int8_bytes, nf4_bytes, nf4_parts

BLOCK_RE = re.compile(r"^(model\.language_model\.layers\.\d+|model\.visual\.blocks\.\d+)\.")
"""The units FSDP wraps: LLM decoder layers and vision blocks; everything else is the root."""


@dataclass(frozen=True)
class ParamInfo:
    """One unique parameter of a prepared model, as the estimate needs it."""

    name: str
    """Parameter name without PEFT's prefix."""
    numel: int
    """Logical element count (a 4-bit weight counts its unpacked size)."""
    dtype: str
    """torch dtype name without `torch.` (`bfloat16`); ignored for quantized weights."""
    trainable: bool
    lora: bool = False
    """A LoRA adapter parameter."""
    quant: str = ""
    """`4bit` or `8bit` for a bitsandbytes linear's weight, else empty."""
    rows: int = 0
    """Output rows of a quantized weight (8-bit keeps one fp32 scale per row)."""
    double_quant: bool = True
    """4-bit only: absmax values quantized again (bitsandbytes `compress_statistics`)."""

    @property
    def kind(self) -> str:
        """Storage kind: `nf4`, `int8` or the dtype."""
        return {"4bit": "nf4", "8bit": "int8"}.get(self.quant, self.dtype)

    @property
    def nbytes(self) -> int:
        if self.quant == "4bit":
            return nf4_bytes(self.numel, self.double_quant)
        if self.quant == "8bit":
            return int8_bytes(self.numel, self.rows)
        return self.numel * dtype_bytes(self.dtype)

    def sharded_bytes(self, gpus: int) -> int:
        """Bytes per GPU under FSDP: NF4 statistics are attributes, not parameters, so whole."""
        if self.quant == "4bit":
            packed, stats = nf4_parts(self.numel, self.double_quant)
            return -(-packed // gpus) + stats
        return -(-self.nbytes // gpus)


def weight_bytes(params: Iterable[ParamInfo], gpus: int = 1) -> tuple[dict[str, int], int]:
    """(base weight bytes by storage kind, LoRA weight bytes), FSDP-sharded over `gpus`."""
    by_kind: dict[str, int] = {}
    lora = 0
    for p in params:
        size = p.nbytes if gpus == 1 else p.sharded_bytes(gpus)
        if p.lora:
            lora += size
        else:
            by_kind[p.kind] = by_kind.get(p.kind, 0) + size
    return by_kind, lora


def gathered_bytes(params: Iterable[ParamInfo]) -> int:
    """FSDP2's unsharded working set: the root unit, two blocks and one block's gradients."""
    root = 0
    blocks: dict[str, list[int]] = {}
    for p in params:
        m = BLOCK_RE.match(p.name)
        if m is None:
            root += p.nbytes
            continue
        size = blocks.setdefault(m.group(1), [0, 0])
        size[0] += p.nbytes
        if p.trainable:
            size[1] += p.numel * dtype_bytes(p.dtype)
    biggest = max((s[0] for s in blocks.values()), default=0)
    grads = max((s[1] for s in blocks.values()), default=0)
    return root + 2 * biggest + grads


@dataclass(frozen=True)
class ModelDims:
    """The dimensions the activation estimate needs, read from the model config."""

    hidden: int
    layers: int
    intermediate: int
    kv_dim: int
    """num_key_value_heads × head_dim."""
    vocab: int
    vision_width: int
    vision_layers: int
    vision_intermediate: int
    vision_gated_mlp: bool
    patch_size: int
    merge_size: int


def dims_from_config(config: Any) -> ModelDims:
    """ModelDims from a transformers config object of any supported family (defaults applied)."""
    text = getattr(config, "text_config", None) or config
    vision = config.vision_config
    heads = text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
    kv_heads = getattr(text, "num_key_value_heads", None) or heads
    if hasattr(vision, "embed_dim"):  # Qwen2-VL: embed_dim is the encoder width
        width = vision.embed_dim
        inter = int(width * vision.mlp_ratio)
        gated = False
    else:  # Qwen2.5-VL / Qwen3-VL: hidden_size is the encoder width
        width = vision.hidden_size
        inter = vision.intermediate_size
        gated = not hasattr(vision, "deepstack_visual_indexes")  # Qwen3's fc1/fc2 MLP is not
    llm_inter = getattr(text, "intermediate_size", None)
    if llm_inter is None:  # MoE without a dense MLP: the experts a token runs, shared included
        llm_inter = text.moe_intermediate_size * text.num_experts_per_tok + getattr(
            text, "shared_expert_intermediate_size", 0
        )
    return ModelDims(
        hidden=text.hidden_size,
        layers=text.num_hidden_layers,
        intermediate=llm_inter,
        kv_dim=kv_heads * head_dim,
        vocab=text.vocab_size,
        vision_width=width,
        vision_layers=vision.depth,
        vision_intermediate=inter,
        vision_gated_mlp=gated,
        patch_size=vision.patch_size,
        merge_size=vision.spatial_merge_size,
    )
