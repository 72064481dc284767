"""How a multi-process run spreads the model: data-parallel (`ddp`) or sharded (`fsdp`).

`ddp` keeps a whole model on every process. `fsdp` is FSDP2 (`fully_shard`) through the
Trainer's accelerate integration: every decoder layer and every vision block is its own
unit, fully sharded (parameters re-sharded after each forward), frozen parameters included.
The unit classes are read from the model itself (one block of each tower), so a family whose
classes are renamed by a transformers release cannot silently fall back to one unit holding
the whole model. Checkpoints are gathered whole (FULL_STATE_DICT), so `eval` and a following
stage load them like any unsharded run's.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Any, Literal

from vlmtui.core.errors import BadInput, WorkFailed
from vlmtui.core.families import BLOCK_PREFIX, PEFT_PREFIX

if TYPE_CHECKING:
    from vlmtui.core.model.loading import Device
    from vlmtui.core.recipes.recipe import TrainingRecipe

Strategy = Literal["ddp", "fsdp"]
STRATEGIES: tuple[Strategy, ...] = ("ddp", "fsdp")
DEFAULT_STRATEGY: Strategy = "ddp"

_BLOCK_RE = {area: re.compile(rf"{prefix}\.0") for area, prefix in BLOCK_PREFIX.items()}


def check_strategy(value: str, where: str = "--strategy") -> Strategy:
    if value not in STRATEGIES:
        raise BadInput(f"{where}: expected one of {', '.join(STRATEGIES)}, got {value!r}")
    return value


def wrap_class_names(model: Any) -> tuple[str, ...]:
    """Class names of the first LLM decoder layer and the first vision block of `model`
    (sorted; PEFT-wrapped or not). WorkFailed when a tower's first block is not found."""
    found: dict[str, str] = {}
    for name, module in model.named_modules():
        bare = name.removeprefix(PEFT_PREFIX)
        for area, pattern in _BLOCK_RE.items():
            if area not in found and pattern.fullmatch(bare):
                found[area] = type(module).__name__
    missing = sorted(set(_BLOCK_RE) - set(found))
    if missing:
        raise WorkFailed(f"fsdp: no {' or '.join(missing)} blocks found to shard in the model")
    return tuple(sorted(found.values()))


def fsdp_config(wrap_classes: tuple[str, ...], rank0_loading: bool = False) -> dict[str, Any]:
    """The Trainer's `fsdp_config` for FSDP2 over the given block classes; `rank0_loading`:
    the model was loaded on rank 0 only (see `loading_kwargs`) and is broadcast shard-wise."""
    return {
        "version": 2,
        # True is FSDP2's full shard: parameters are freed again after each unit's forward.
        "reshard_after_forward": True,
        "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
        "transformer_layer_cls_to_wrap": list(wrap_classes),
        # Gathered on rank 0 at every save: a checkpoint is a plain whole-model checkpoint.
        "state_dict_type": "FULL_STATE_DICT",
        "cpu_ram_efficient_loading": rank0_loading,
        # The recipe's gradient_checkpointing (transformers, non-reentrant) stays in charge,
        # so a recipe means the same under ddp and fsdp.
        "activation_checkpointing": False,
    }


def trainer_kwargs(strategy: Strategy, model: Any, recipe: TrainingRecipe) -> dict[str, Any]:
    """Extra `TrainingArguments` for `strategy` (none for ddp)."""
    if strategy == "ddp":
        return {}
    config = fsdp_config(wrap_class_names(model), rank0_loading=not recipe.quantized)
    return {"fsdp": True, "fsdp_config": config}


def loading_kwargs(strategy: Strategy, recipe: TrainingRecipe, device: Device) -> dict[str, Any]:
    """Extra `load_model_for_recipe` arguments for `strategy` (none for ddp).

    fsdp, unquantized: every rank reads the checkpoint into CPU memory (not onto its GPU);
    accelerate (`cpu_ram_efficient_loading`) then moves the model to the meta device, shards
    it and sends each rank its shards of rank 0's weights, so no GPU ever holds a whole
    model. Each process does hold a whole copy in host memory while loading: building the
    other ranks on the meta device instead made the Trainer's final save fail (a gloo
    collective size mismatch, torch 2.14 / accelerate 1.15), so that is not done.
    fsdp, 4-bit: every rank loads (quantizing happens on the GPU as the weights arrive, and
    accelerate does not broadcast bitsandbytes weights), with the 4-bit weights packed in the
    compute dtype, as in the QLoRA-FSDP recipe, because `fully_shard` only shards floating
    tensors (accelerate leaves uint8-packed weights whole on every rank)."""
    from vlmtui.core.model.loading import compute_dtype

    if strategy != "fsdp":
        return {}
    if recipe.quantized:
        return {"quant_storage": compute_dtype(recipe, device)}
    import torch.distributed as dist

    os.environ["ACCELERATE_USE_FSDP"] = "true"
    os.environ["FSDP_CPU_RAM_EFFICIENT_LOADING"] = "true"
    if not dist.is_initialized():
        # What accelerate would start later; started now so that loading can see the ranks.
        dist.init_process_group("cuda:nccl,cpu:gloo" if device.is_cuda else "gloo")
    return {"placement": "cpu"}


def allow_fsdp_on_cpu(strategy: Strategy, on_cpu: bool) -> None:
    """Let FSDP run on CPU processes too (installed once per process; for tests and CPU runs).

    accelerate 1.15 switches a process group to its FSDP plugin only for accelerator device
    kinds (MULTI_GPU, MULTI_XPU, ...), not MULTI_CPU, so a CPU run would silently fall back
    to DDP. `fully_shard` itself works on the CPU under gloo (FACTS.md); here the step
    accelerate takes for GPUs is taken for the CPU as well, each time the shared state is
    re-read (every `AcceleratorState()` copies MULTI_CPU back from the process state), and
    only when an FSDP plugin was given. On a GPU, or under ddp, this does nothing."""
    if strategy != "fsdp" or not on_cpu:
        return
    from accelerate.state import AcceleratorState
    from accelerate.utils import DistributedType

    original = AcceleratorState.__init__
    if getattr(original, "_vlmtui_cpu_fsdp", False):
        return

    def init(self: Any, *args: Any, fsdp_plugin: Any = None, **kwargs: Any) -> None:
        original(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
        plugin = fsdp_plugin or getattr(self, "fsdp_plugin", None)
        if plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
            self.distributed_type = DistributedType.FSDP
            self.fsdp_plugin = plugin

    init._vlmtui_cpu_fsdp = True  # type: ignore[attr-defined]
    AcceleratorState.__init__ = init


def is_sharded(model: Any) -> bool:
    """True when `fully_shard` has been applied to the model (its parameters are DTensors)."""
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in model.parameters())


def gathered_state_dict(model: Any, trainable_only: bool = False) -> dict[str, Any]:
    """The whole (unsharded) tensors of a sharded model, on the CPU, on rank 0; {} elsewhere.

    A collective: every rank must call it, in the same order. `trainable_only` gathers only
    the parameters with requires_grad (all an adapter save needs), not the frozen base; else
    the model's `state_dict()` (persistent buffers included, tied weights under each name)."""
    import torch.distributed as dist
    from torch.distributed.tensor import DTensor

    rank0 = not dist.is_initialized() or dist.get_rank() == 0
    if trainable_only:
        tensors = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    else:
        tensors = list(model.state_dict().items())
    out: dict[str, Any] = {}
    for name, tensor in tensors:
        full = tensor.full_tensor() if isinstance(tensor, DTensor) else tensor
        if rank0:
            out[name] = full.detach().cpu().contiguous()
    return out
