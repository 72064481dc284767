"""GPU memory estimate for training a recipe on a model: weights, gradients, optimizer, activations.

Pure arithmetic over the parameters of the prepared meta model (their dtypes and
trainability exactly as training sets them) and the model's dimensions; nothing is
allocated. Per GPU, for data-parallel training (each GPU holds the whole model).

The formula (bytes; n = a parameter's element count):

weights
    Every unique parameter (tied embeddings once) at its dtype's size, read from the
    prepared model: bf16/fp16 2, fp32 4. `compute_dtype = auto` means bf16 (training on a
    GPU). A quantized recipe runs PEFT's `prepare_model_for_kbit_training`, which casts every
    parameter that is not 4-bit to fp32, so vision, projector, embeddings, norms and lm_head
    count 4 bytes there; fused MoE experts (not nn.Linear, so not 4-bit) stay in the compute
    dtype (`loading.prepare_for_kbit_training`) and count 2.
    4-bit NF4 linear weight (bitsandbytes, blocksize 64, double quantization):
    ceil(n/2) packed bytes + ceil(n/64) one-byte absmax codes + 4·ceil(n/16384) fp32
    second-level absmax, about 0.516 bytes per parameter (4.13 bits). Without double
    quantization: ceil(n/2) + 4·ceil(n/64). 8-bit linear weight: n + 4 per output row.
LoRA weights
    The adapters' parameters at their dtype (PEFT keeps them in fp32): for a linear of
    shape (out, in), r·(in + out) parameters.
gradients
    Each trainable parameter once more, at its own dtype.
optimizer
    AdamW: two states (exp_avg, exp_avg_sq) per trainable parameter, at its dtype.
activations
    Per micro-batch of b samples of s tokens each (image tokens included), one image of
    S×S pixels per sample; a = 2 bytes (bf16/fp16 autocast) or 4 (fp32). Attention is
    SDPA/flash (no s×s matrix is kept). Every tensor a layer keeps for backward is counted
    (an upper-end assumption).
    LLM layer (hidden h, K = kv_heads·head_dim, MLP width i): (6h + 2K + 4i)·a per token.
    LoRA adds, per adapted linear with input width n: n·a (its input after dropout) plus n
    bytes of dropout mask when dropout > 0.
    LLM total: b·s·[L·layer + 2h·a] + logits b·s·V·(a + 4 + 4) (logits, their fp32 copy and
    the fp32 log-softmax the loss keeps).
    Vision tower (only when vision or projector trains; otherwise it runs with nothing on
    the backward path and keeps nothing): P = (S / patch)² patches per image; per block and
    patch (8d + m·i_v)·a, m = 4 for a gated MLP (Qwen2.5-VL), 2 otherwise (Qwen2-VL); merger
    4d·a per patch.
    Gradient checkpointing keeps only each layer's input (h·a per token) plus one layer's
    full activations during recomputation.
overhead
    1 GiB for the CUDA context and allocator slack.

total = weights + LoRA weights + gradients + optimizer + activations + overhead; it
"fits in N GiB per GPU" when total <= N GiB.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

GIB = 1024**3
OVERHEAD_BYTES = GIB
DTYPE_BYTES = {
    "float32": 4,
    "float": 4,
    "bfloat16": 2,
    "float16": 2,
    "half": 2,
    "float64": 8,
    "int8": 1,
    "uint8": 1,
}
NF4_BLOCK = 64
NESTED_BLOCK = 256


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


@dataclass(frozen=True)
class MemoryAssumptions:
    """The training shape the estimate is for. Printed with the estimate."""

    batch_size: int = 1
    """Samples per micro-batch per GPU."""
    seq_len: int = 1024
    """Tokens per sample, image tokens included."""
    image_size: int = 448
    """Side of the (square) input image in pixels; one image per sample."""
    gradient_checkpointing: bool = False
    compute_dtype: str = "bfloat16"
    """Autocast dtype of activations."""
    lora_dropout: float = 0.0
    gpu_mem_gib: float | None = None
    """GPU size to test the total against; None: no verdict."""


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes per GPU for one training stage."""

    weights_by_dtype: dict[str, int]
    """Base-model weight bytes by storage kind (`bfloat16`, `float32`, `nf4`, `int8`, …)."""
    lora_weights: int
    gradients: int
    optimizer_states: int
    activations: int
    activations_detail: dict[str, int]
    """`llm`, `logits`, `lora`, `vision` parts of `activations`."""
    overhead: int
    assumptions: MemoryAssumptions
    notes: tuple[str, ...] = field(default=())
    """The assumptions as printable lines."""

    @property
    def weights(self) -> int:
        return sum(self.weights_by_dtype.values())

    @property
    def total(self) -> int:
        return (
            self.weights
            + self.lora_weights
            + self.gradients
            + self.optimizer_states
            + self.activations
            + self.overhead
        )

    @property
    def fits(self) -> bool | None:
        """Whether the total fits the GPU size of the assumptions (None when none was given)."""
        gpu = self.assumptions.gpu_mem_gib
        return None if gpu is None else self.total <= gpu * GIB

    def verdict(self) -> str:
        """The plain one-line answer, e.g. `fits in 24 GiB per GPU (needs ≈ 18.2 GiB)`."""
        need = f"needs ≈ {gib(self.total)} GiB"
        gpu = self.assumptions.gpu_mem_gib
        if gpu is None:
            return f"{need} per GPU (give --gpu-mem for a verdict)"
        word = "fits" if self.fits else "does NOT fit"
        return f"{word} in {gpu:g} GiB per GPU ({need})"

    def to_dict(self) -> dict[str, Any]:
        a = self.assumptions
        return {
            "weights_by_dtype": dict(self.weights_by_dtype),
            "weights": self.weights,
            "lora_weights": self.lora_weights,
            "gradients": self.gradients,
            "optimizer_states": self.optimizer_states,
            "activations": self.activations,
            "activations_detail": dict(self.activations_detail),
            "overhead": self.overhead,
            "total": self.total,
            "gpu_mem_gib": a.gpu_mem_gib,
            "fits": self.fits,
            "verdict": self.verdict(),
            "assumptions": {
                "batch_size": a.batch_size,
                "seq_len": a.seq_len,
                "image_size": a.image_size,
                "gradient_checkpointing": a.gradient_checkpointing,
                "compute_dtype": a.compute_dtype,
                "lora_dropout": a.lora_dropout,
                "notes": list(self.notes),
            },
        }


def gib(n: int | float) -> str:
    """Bytes as GiB with one decimal (two below 1 GiB)."""
    v = n / GIB
    return f"{v:.2f}" if v < 1 else f"{v:.1f}"


def human_bytes(n: int | float) -> str:
    """`812 KiB`, `35.2 MiB`, `33.7 GiB`."""
    for unit, size in (("GiB", GIB), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def nf4_bytes(numel: int, double_quant: bool = True) -> int:
    """Storage of one 4-bit NF4 weight with bitsandbytes' blockwise absmax (blocksize 64)."""
    blocks = math.ceil(numel / NF4_BLOCK)
    packed = math.ceil(numel / 2)
    if double_quant:
        return packed + blocks + 4 * math.ceil(blocks / NESTED_BLOCK)
    return packed + 4 * blocks


def int8_bytes(numel: int, rows: int) -> int:
    """Storage of one LLM.int8 weight: a byte per element plus an fp32 scale per row."""
    return numel + 4 * rows


def dtype_bytes(dtype: str) -> int:
    try:
        return DTYPE_BYTES[dtype.removeprefix("torch.")]
    except KeyError:
        raise ValueError(f"no byte size known for dtype {dtype!r}") from None


def weight_bytes(params: Iterable[ParamInfo]) -> tuple[dict[str, int], int]:
    """(base weight bytes by storage kind, LoRA weight bytes)."""
    by_kind: dict[str, int] = {}
    lora = 0
    for p in params:
        if p.quant == "4bit":
            kind, size = "nf4", nf4_bytes(p.numel, p.double_quant)
        elif p.quant == "8bit":
            kind, size = "int8", int8_bytes(p.numel, p.rows)
        else:
            kind, size = p.dtype, p.numel * dtype_bytes(p.dtype)
        if p.lora:
            lora += size
        else:
            by_kind[kind] = by_kind.get(kind, 0) + size
    return by_kind, lora


def activation_bytes(
    dims: ModelDims,
    a: MemoryAssumptions,
    *,
    vision_on_backward: bool,
    vision_trains: bool,
    lora_inputs_per_layer: int,
    vision_lora_inputs_per_block: int = 0,
) -> dict[str, int]:
    """The activation parts (bytes), see the module docstring for the formula.

    `lora_inputs_per_layer`: sum of the input widths of the LoRA-adapted linears in one LLM
    layer (0 without LLM LoRA); `vision_lora_inputs_per_block` the same for a vision block.
    """
    act = dtype_bytes(a.compute_dtype)
    tokens = a.batch_size * a.seq_len
    mask = 1 if a.lora_dropout > 0 else 0
    layer = (6 * dims.hidden + 2 * dims.kv_dim + 4 * dims.intermediate) * act
    lora_layer = lora_inputs_per_layer * (act + mask)
    if a.gradient_checkpointing:
        # Only each layer's input stays; one layer is recomputed (with its adapters) at a time.
        llm = tokens * ((dims.layers + 2) * dims.hidden * act + layer)
        lora = tokens * lora_layer
    else:
        llm = tokens * (dims.layers * layer + 2 * dims.hidden * act)
        lora = tokens * dims.layers * lora_layer
    logits = tokens * dims.vocab * (act + 4 + 4)
    vision = 0
    if vision_on_backward:
        patches = a.batch_size * (a.image_size // dims.patch_size) ** 2
        d = dims.vision_width
        merger = patches * 4 * d * act
        if vision_trains:
            m = 4 if dims.vision_gated_mlp else 2
            block = (8 * d + m * dims.vision_intermediate) * act
            block += vision_lora_inputs_per_block * (act + mask)
            if a.gradient_checkpointing:
                vision = patches * (dims.vision_layers * d * act + block) + merger
            else:
                vision = patches * dims.vision_layers * block + merger
        else:
            vision = merger
    return {"llm": llm, "logits": logits, "lora": lora, "vision": vision}


def estimate_memory(
    params: Iterable[ParamInfo],
    dims: ModelDims,
    assumptions: MemoryAssumptions,
    *,
    vision_on_backward: bool,
    vision_trains: bool,
    lora_inputs_per_layer: int = 0,
    vision_lora_inputs_per_block: int = 0,
) -> MemoryEstimate:
    """The whole estimate for one training stage."""
    params = list(params)
    by_kind, lora = weight_bytes(params)
    grads = sum(p.numel * dtype_bytes(p.dtype) for p in params if p.trainable)
    acts = activation_bytes(
        dims,
        assumptions,
        vision_on_backward=vision_on_backward,
        vision_trains=vision_trains,
        lora_inputs_per_layer=lora_inputs_per_layer,
        vision_lora_inputs_per_block=vision_lora_inputs_per_block,
    )
    a = assumptions
    patches = (a.image_size // dims.patch_size) ** 2
    notes = [
        f"batch {a.batch_size} × {a.seq_len} tokens per GPU (image tokens included), "
        f"one {a.image_size}×{a.image_size} image per sample "
        f"({patches} patches, {patches // dims.merge_size**2} LLM tokens)",
        f"activations in {a.compute_dtype}, SDPA/flash attention (no s×s scores kept), "
        + (
            "gradient checkpointing on" if a.gradient_checkpointing else "no gradient checkpointing"
        ),
        "vision activations kept: "
        + (
            "all blocks (vision trains)"
            if vision_trains
            else "merger only"
            if vision_on_backward
            else "none (nothing below the LLM trains)"
        ),
        "AdamW: 2 states per trainable parameter at its dtype; gradients at its dtype",
        "data parallel: every GPU holds the whole model; +1 GiB CUDA context/allocator slack",
    ]
    return MemoryEstimate(
        weights_by_dtype=by_kind,
        lora_weights=lora,
        gradients=grads,
        optimizer_states=2 * grads,
        activations=sum(acts.values()),
        activations_detail=acts,
        overhead=OVERHEAD_BYTES,
        assumptions=assumptions,
        notes=tuple(notes),
    )


def dims_from_config(config: Any) -> ModelDims:
    """ModelDims from a Qwen2-VL / Qwen2.5-VL transformers config object (defaults applied)."""
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
