"""GPU memory estimate for training a recipe on a model, per GPU, for ddp, fsdp or a split model.

Pure arithmetic over the parameters of the prepared meta model (their dtypes and
trainability exactly as training sets them) and the model's dimensions; nothing is
allocated. The constants, with their sources, are in `memory_model.py`.

The formula (bytes; n = a parameter's element count; N = GPUs):

weights
    Every unique parameter (tied embeddings once) at its dtype's size, read from the
    prepared model: bf16/fp16 2, fp32 4. `compute_dtype = auto` means bf16 (a GPU). Quantized
    recipes keep every weight that is not 4-bit in the compute dtype (`upcast_norms` puts
    norms in fp32). 4-bit NF4 (blocksize 64, double quant): ceil(n/2) packed + ceil(n/64)
    one-byte absmax + 4·ceil(n/16384) fp32 second-level absmax, ≈ 0.516 bytes per
    parameter; without double quant ceil(n/2) + 4·ceil(n/64). 8-bit: n + 4 per output row.
LoRA weights, gradients, optimizer
    LoRA adapters at their dtype (fp32). Gradients: each trainable parameter once more at its
    dtype. AdamW: two states per trainable parameter at its dtype.
optimizer step temporaries
    foreach AdamW: one more copy of a state (torch's `_foreach_sqrt` of exp_avg_sq); fused
    AdamW (what vlmtui's Trainer uses): none. They exist only during the step, after
    backward has freed the activations, so the peak counts max(activations, temporaries).
activations
    b samples × s tokens (image tokens included), one S×S image per sample, a = 2 bytes
    (bf16/fp16 autocast) or 4. SDPA/flash attention (no s×s matrix). Every tensor a layer
    keeps for backward is counted (an upper end). LLM layer (hidden h, K = kv_heads·head_dim,
    MLP width i): (6h + 2K + 4i)·a per token; a LoRA-adapted linear of input width n adds
    n·a (its input after dropout) plus n bytes of dropout mask when dropout > 0. LLM total:
    b·s·[L·layer + 2h·a]; with gradient checkpointing b·s·[(L + 2)·h·a + layer] (each
    layer's input, one layer recomputed). Loss (`memory_model.loss_bytes`): vlmtui trains
    through TRL's fused LM head, a 4096 × 32768 tile plus b·s·h·(a + 4); the model's own
    loss (transformers) keeps b·s·V·12. Vision tower, only when vision or projector trains:
    P = (S/patch)² patches per image; per block and patch (8d + m·i_v)·a, m = 4 for a gated
    MLP (Qwen2.5-VL), 2 otherwise; merger 4d·a per patch; with checkpointing P·[blocks·d·a +
    block]. Frozen below the trainable part, nothing is kept. Quantized weights add one
    dequantized copy of the largest at a (bitsandbytes 0.50: a 4-bit linear with more than a
    few rows of input runs dequantize + F.linear, and its backward `dequantize_4bit`s again;
    an 8-bit one's backward scales CB to a; one linear at a time).
strategies
    ddp: every GPU holds everything. fsdp (FSDP2 full shard, blocks = LLM decoder layers and
    vision blocks): weights, LoRA, gradients and optimizer /N (NF4 statistics are not
    parameters and stay whole), plus the gathered working set: the root unit (embeddings,
    lm_head, merger: FSDP2 keeps the root unsharded from forward to backward), two blocks
    (one computing, one prefetched) and one block's unsharded gradients. split (device_map
    pipeline): one copy of everything in sum, divided evenly over N; activations too.
overhead (per GPU, `memory_model.overhead_parts`)
    CUDA context 0.5 GiB + cuBLAS/cuDNN workspaces 0.25 GiB + allocator fragmentation (a
    fraction of the counted peak); with ddp over 2+ GPUs, DDP's gradient buckets (one more
    copy of the gradients); with ddp/fsdp over 2+ GPUs, NCCL buffers 0.5 GiB.

total = weights + LoRA + gradients + optimizer + max(activations + gathered, step
temporaries) + overhead, per GPU; it "fits in M GiB per GPU" when total <= M GiB.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from vlmtui.core.inspection.memory_model import (
    CONSTANTS,
    GIB,
    LossImpl,
    OptimizerImpl,
    Strategy,
    dtype_bytes,
    gib,
    human_bytes,
    int8_bytes,
    loss_bytes,
    nf4_bytes,
    optimizer_step_temp,
    overhead_parts,
)
from vlmtui.core.inspection.memory_params import (
    ModelDims,
    ParamInfo,
    dims_from_config,
    gathered_bytes,
    weight_bytes,
)

__all__ = [
    "GIB",
    "ModelDims",
    "ParamInfo",
    "dims_from_config",
    "gathered_bytes",
    "gib",
    "human_bytes",
    "int8_bytes",
    "nf4_bytes",
    "weight_bytes",
]


@dataclass(frozen=True)
class MemoryAssumptions:
    """The training shape and setup the estimate is for. Printed with the estimate."""

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
    gpus: int = 1
    strategy: Strategy = "ddp"
    loss: LossImpl = "fused"
    """`fused`: TRL's fused LM head (vlmtui); `full`: the model's own loss (full fp32 logits)."""
    optimizer: OptimizerImpl = "fused"
    """AdamW implementation: `fused` (vlmtui's Trainer) or `foreach`."""


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes per GPU for one training stage."""

    weights_by_dtype: dict[str, int]
    """Base-model weight bytes by storage kind (`bfloat16`, `float32`, `nf4`, `int8`, …)."""
    lora_weights: int
    gradients: int
    optimizer_states: int
    optimizer_step_temp: int
    activations: int
    activations_detail: dict[str, int]
    """`llm`, `loss`, `lora`, `vision` and `dequant` parts of `activations`."""
    gathered: int
    """FSDP: parameters and gradients unsharded at once (0 otherwise)."""
    overhead_detail: dict[str, int]
    assumptions: MemoryAssumptions
    notes: tuple[str, ...] = field(default=())
    """The assumptions as printable lines."""

    @property
    def weights(self) -> int:
        return sum(self.weights_by_dtype.values())

    @property
    def overhead(self) -> int:
        return sum(self.overhead_detail.values())

    @property
    def allocated(self) -> int:
        """The counted tensors at the peak (what max_memory_allocated would show)."""
        static = self.weights + self.lora_weights + self.gradients + self.optimizer_states
        return static + max(self.activations + self.gathered, self.optimizer_step_temp)

    @property
    def total(self) -> int:
        return self.allocated + self.overhead

    @property
    def total_all_gpus(self) -> int:
        return self.total * self.assumptions.gpus

    @property
    def fits(self) -> bool | None:
        """Whether the total fits the GPU size of the assumptions (None when none was given)."""
        gpu = self.assumptions.gpu_mem_gib
        return None if gpu is None else self.total <= gpu * GIB

    def verdict(self) -> str:
        """The plain one-line answer, e.g. `fits in 24 GiB per GPU (needs ≈ 18.2 GiB)`."""
        a = self.assumptions
        need = f"needs ≈ {gib(self.total)} GiB"
        if a.gpus > 1:
            need += f" on each of {a.gpus} GPUs ({a.strategy})"
        if a.gpu_mem_gib is None:
            return f"{need} per GPU (give --gpu-mem for a verdict)"
        word = "fits" if self.fits else "does NOT fit"
        return f"{word} in {a.gpu_mem_gib:g} GiB per GPU ({need})"

    def to_dict(self) -> dict[str, Any]:
        a = self.assumptions
        return {
            "strategy": a.strategy,
            "gpus": a.gpus,
            "weights_by_dtype": dict(self.weights_by_dtype),
            "weights": self.weights,
            "lora_weights": self.lora_weights,
            "gradients": self.gradients,
            "optimizer_states": self.optimizer_states,
            "optimizer_step_temp": self.optimizer_step_temp,
            "activations": self.activations,
            "activations_detail": dict(self.activations_detail),
            "gathered": self.gathered,
            "overhead": self.overhead,
            "overhead_detail": dict(self.overhead_detail),
            "allocated": self.allocated,
            "total": self.total,
            "total_all_gpus": self.total_all_gpus,
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
                "loss": a.loss,
                "optimizer": a.optimizer,
                "notes": list(self.notes),
                "constants": [c.to_dict() for c in CONSTANTS],
            },
        }


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
    loss = loss_bytes(a.loss, tokens, dims.vocab, dims.hidden, act)
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
    return {"llm": llm, "loss": loss, "lora": lora, "vision": vision}


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
    """The whole estimate for one training stage, per GPU."""
    params = list(params)
    a = assumptions
    fsdp = a.strategy == "fsdp" and a.gpus > 1
    split = a.gpus if a.strategy == "split" else 1
    by_kind, lora = weight_bytes(params, a.gpus if fsdp else 1)
    grads = sum(p.numel * dtype_bytes(p.dtype) for p in params if p.trainable)
    if fsdp:
        grads = -(-grads // a.gpus)
    acts = activation_bytes(
        dims,
        a,
        vision_on_backward=vision_on_backward,
        vision_trains=vision_trains,
        lora_inputs_per_layer=lora_inputs_per_layer,
        vision_lora_inputs_per_block=vision_lora_inputs_per_block,
    )
    if split > 1:
        by_kind = {k: -(-v // split) for k, v in by_kind.items()}
        lora, grads = -(-lora // split), -(-grads // split)
        acts = {k: -(-v // split) for k, v in acts.items()}
    acts["dequant"] = max((p.numel for p in params if p.quant), default=0) * dtype_bytes(
        a.compute_dtype
    )
    parts = MemoryEstimate(
        weights_by_dtype=by_kind,
        lora_weights=lora,
        gradients=grads,
        optimizer_states=2 * grads,
        optimizer_step_temp=optimizer_step_temp(a.optimizer, 2 * grads),
        activations=sum(acts.values()),
        activations_detail=acts,
        gathered=gathered_bytes(params) if fsdp else 0,
        overhead_detail={},
        assumptions=a,
        notes=_notes(dims, a, vision_on_backward, vision_trains),
    )
    return replace(
        parts, overhead_detail=overhead_parts(parts.allocated, a.strategy, a.gpus, grads)
    )


def _notes(
    dims: ModelDims, a: MemoryAssumptions, vision_on_backward: bool, vision_trains: bool
) -> tuple[str, ...]:
    patches = (a.image_size // dims.patch_size) ** 2
    layout = {
        "ddp": "data parallel: every GPU holds the whole model",
        "fsdp": "FSDP full shard: weights, gradients and optimizer divided over the GPUs, "
        "plus the root unit and two blocks gathered",
        "split": "model split over the GPUs (device_map): one copy in sum, divided evenly",
    }[a.strategy]
    return (
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
        "loss: "
        + (
            "TRL's fused LM head (no full logits)"
            if a.loss == "fused"
            else "full fp32 logits (the model's own loss)"
        ),
        f"AdamW ({a.optimizer}): 2 states per trainable parameter at its dtype",
        f"{layout}; {a.gpus} GPU{'s' if a.gpus > 1 else ''}",
    )


def alternatives(
    estimate: Callable[[MemoryAssumptions], MemoryEstimate], a: MemoryAssumptions
) -> list[str]:
    """What would fit the GPU size when `a` does not: fsdp over more GPUs, checkpointing,
    shorter sequences. Only what `vlmtui train` runs (not `split`, a device_map layout that
    other frameworks use and the estimate offers for comparison)."""
    if a.gpu_mem_gib is None:
        return []
    found: list[str] = []
    for n in (2, 4, 8):
        if a.strategy == "fsdp" and n <= a.gpus:
            continue
        m = estimate(replace(a, strategy="fsdp", gpus=n))
        if m.fits:
            found.append(f"with --strategy fsdp over {n} GPUs ≈ {gib(m.total)} GiB")
            break
    if not a.gradient_checkpointing:
        m = estimate(replace(a, gradient_checkpointing=True))
        if m.fits:
            found.append(f"with gradient checkpointing ≈ {gib(m.total)} GiB")
    seq = a.seq_len // 2
    while seq >= 256:
        m = estimate(replace(a, seq_len=seq))
        if m.fits:
            found.append(f"at --seq-len {seq} ≈ {gib(m.total)} GiB")
            break
        seq //= 2
    return found
