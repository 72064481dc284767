"""The constants of the memory estimate, each with its source, and the formulas built on them.

`memory.py` applies these to a prepared model; `vlmtui inspect --json` lists every constant
under `memory[].assumptions.constants` with the source given here.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

GIB = 1024**3
MIB = 1024**2

Strategy = Literal["ddp", "fsdp", "split"]
STRATEGIES: tuple[Strategy, ...] = ("ddp", "fsdp", "split")
LossImpl = Literal["fused", "full"]
OptimizerImpl = Literal["fused", "foreach"]

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
class Constant:
    """One number the estimate assumes, and where it comes from."""

    name: str
    value: float
    unit: str
    source: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


CUDA_CONTEXT = Constant(
    "cuda_context",
    0.5 * GIB,
    "bytes per GPU",
    "CUDA context and the kernel images of torch, cuBLAS and cuDNN, outside PyTorch's "
    "allocator (nvidia-smi counts it, torch.cuda.max_memory_reserved does not); with lazy "
    "module loading (CUDA_MODULE_LOADING=LAZY, PyTorch's default since CUDA 11.7) a training "
    "process on A100/H100 sits at 0.4-0.6 GiB before its first tensor",
)
WORKSPACES = Constant(
    "workspaces",
    0.25 * GIB,
    "bytes per GPU",
    "cuBLAS and cuBLASLt workspaces, one per (thread, stream) handle: PyTorch's default "
    "CUBLAS_WORKSPACE_CONFIG is 32 MiB on Hopper (4 MiB x 8), and the forward and autograd "
    "threads hold one each; plus cuDNN's workspace for the vision patch embedding's conv",
)
FRAGMENTATION = Constant(
    "fragmentation",
    0.08,
    "fraction of the allocated peak",
    "caching-allocator reserve above the allocated peak (max_memory_reserved minus "
    "max_memory_allocated): freed blocks stay cached and a cached block serves only requests "
    "no larger than itself, so loading transients and per-step activation and gradient sizes "
    "leave segments no later request fills. 8 % puts the five public measurements in "
    "tests/test_memory_calibration.py at estimate/measured 0.92-1.12",
)
NCCL_BUFFERS = Constant(
    "nccl_buffers",
    0.5 * GIB,
    "bytes per GPU, multi-GPU ddp/fsdp",
    "NCCL's communicator buffers, allocated outside PyTorch: NCCL_BUFFSIZE 4 MiB per channel "
    "and peer, up to 32 channels on NVLink, send and receive",
)
DDP_BUCKETS = Constant(
    "ddp_gradient_buckets",
    1.0,
    "x gradient bytes, ddp over 2+ GPUs",
    "DistributedDataParallel copies gradients into flat all-reduce buckets; the Trainer keeps "
    "gradient_as_bucket_view=False, so the buckets are a second copy of all gradients "
    "(torch.nn.parallel.DistributedDataParallel docstring, gradient_as_bucket_view)",
)
FOREACH_TEMP = Constant(
    "adamw_foreach_temporaries",
    1.0,
    "x optimizer-state bytes of one state",
    "torch/optim/adam.py _multi_tensor_adam (AdamW is Adam with decoupled weight decay): "
    "exp_avg_sq_sqrt = torch._foreach_sqrt(device_exp_avg_sqs) allocates a copy of every "
    "second-moment state for the step, all parameters of a device and dtype at once; the "
    "other foreach ops are in place. The fused kernel (_fused_adamw_, transformers 5's "
    "default adamw_torch_fused with torch >= 2.8, what vlmtui trains with) has none",
)
FUSED_LOSS_TILE = Constant(
    "fused_loss_tile",
    4096 * 32768,
    "tokens x vocabulary entries",
    "TRL 1.16 SFTTrainer computes the loss with a fused LM head "
    "(trl/kernels/chunked_logprob.py): the labelled positions go through lm_head in tiles "
    "of TOKEN_CHUNK_SIZE 4096 tokens x 32768 vocabulary entries at the compute dtype, never "
    "the full logits; backward keeps an fp32 gradient of the selected hidden states",
)
FULL_LOGITS_BYTES = Constant(
    "full_logits_bytes",
    12,
    "bytes per token and vocabulary entry",
    "transformers 5 ForCausalLMLoss (loss/loss_utils.py) upcasts the whole sequence's logits "
    "with logits.float() and runs cross_entropy, whose log_softmax keeps its fp32 output for "
    "backward; backward then holds that output, nll_loss's fp32 gradient and log_softmax's "
    "fp32 gradient at once (4 + 4 + 4; the bf16 logits are freed with the outputs before "
    "backward). Frameworks that call the model's own loss pay this",
)
CONSTANTS = (
    CUDA_CONTEXT,
    WORKSPACES,
    FRAGMENTATION,
    NCCL_BUFFERS,
    DDP_BUCKETS,
    FOREACH_TEMP,
    FUSED_LOSS_TILE,
    FULL_LOGITS_BYTES,
)


def gib(n: float) -> str:
    """Bytes as GiB with one decimal (two below 1 GiB)."""
    v = n / GIB
    return f"{v:.2f}" if v < 1 else f"{v:.1f}"


def human_bytes(n: float) -> str:
    """`812 KiB`, `35.2 MiB`, `33.7 GiB`."""
    for unit, size in (("GiB", GIB), ("MiB", MIB), ("KiB", 1024)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def dtype_bytes(dtype: str) -> int:
    try:
        return DTYPE_BYTES[dtype.removeprefix("torch.")]
    except KeyError:
        raise ValueError(f"no byte size known for dtype {dtype!r}") from None


def nf4_parts(numel: int, double_quant: bool = True) -> tuple[int, int]:
    """(packed 4-bit bytes, absmax statistics bytes) of one NF4 weight, blocksize 64."""
    blocks = math.ceil(numel / NF4_BLOCK)
    packed = math.ceil(numel / 2)
    if double_quant:
        return packed, blocks + 4 * math.ceil(blocks / NESTED_BLOCK)
    return packed, 4 * blocks


def nf4_bytes(numel: int, double_quant: bool = True) -> int:
    """Storage of one 4-bit NF4 weight with bitsandbytes' blockwise absmax (blocksize 64)."""
    return sum(nf4_parts(numel, double_quant))


def int8_bytes(numel: int, rows: int) -> int:
    """Storage of one LLM.int8 weight: a byte per element plus an fp32 scale per row."""
    return numel + 4 * rows


def loss_bytes(impl: LossImpl, tokens: int, vocab: int, hidden: int, act: int) -> int:
    """Peak memory of the loss over `tokens` positions (all assumed labelled: an upper end)."""
    if impl == "full":
        return int(tokens * vocab * FULL_LOGITS_BYTES.value)
    tile = min(tokens, 4096) * min(vocab, 32768) * act
    # the selected hidden states (saved for backward) and their fp32 gradient
    return tile + tokens * hidden * (act + 4)


def optimizer_step_temp(impl: OptimizerImpl, state_bytes: int) -> int:
    """Temporaries of one AdamW step; `state_bytes` covers both states."""
    return int(FOREACH_TEMP.value * state_bytes / 2) if impl == "foreach" else 0


def overhead_parts(allocated: int, strategy: Strategy, gpus: int, gradients: int) -> dict[str, int]:
    """Per-GPU memory outside the counted tensors; `allocated` is the counted per-GPU peak."""
    multi = gpus > 1 and strategy != "split"
    parts = {
        "cuda_context": int(CUDA_CONTEXT.value),
        "workspaces": int(WORKSPACES.value),
        "ddp_buckets": int(DDP_BUCKETS.value * gradients) if multi and strategy == "ddp" else 0,
        "nccl": int(NCCL_BUFFERS.value) if multi else 0,
    }
    parts["fragmentation"] = int(FRAGMENTATION.value * (allocated + parts["ddp_buckets"]))
    return parts
