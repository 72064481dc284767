"""Loading a model for a recipe: dtype, device, quantization of the frozen LLM only.

bitsandbytes skip lists fail silently when transformers renames modules (FACTS.md:
`["visual"]` stopped protecting the vision tower in 5.x), so after loading we check the
result ourselves: any quantized module outside the LLM is an error, never a warning.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlmtui.core.errors import BadInput, WorkFailed
from vlmtui.core.families import Family, family_for_config
from vlmtui.core.recipes.recipe import TrainingRecipe
from vlmtui.core.rundir import (
    WEIGHTS_JSON,
    last_step_event,
    read_events,
    read_json,
    read_status,
)

# Module-name prefixes bitsandbytes must leave in full precision (transformers >= 4.52 names).
QUANT_SKIP_MODULES = ["model.visual", "lm_head"]


@dataclass(frozen=True)
class Device:
    """Where a process trains: `cpu` or a CUDA device index (after CUDA_VISIBLE_DEVICES)."""

    kind: str
    index: int = 0

    @property
    def torch_device(self) -> str:
        return "cpu" if self.kind == "cpu" else f"cuda:{self.index}"

    @property
    def is_cuda(self) -> bool:
        return self.kind == "cuda"


def detect_device() -> Device:
    """The device this process should use; honours torchrun's LOCAL_RANK."""
    import torch

    if torch.cuda.is_available():
        return Device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return Device("cpu")


def read_model_config(model_path: Path) -> dict[str, Any]:
    import json

    cfg = Path(model_path) / "config.json"
    try:
        if not cfg.is_file():  # absent, or a FIFO whose read would block
            raise FileNotFoundError(cfg)
        data = json.loads(cfg.read_text(encoding="utf-8"))
    except OSError:
        raise BadInput(f"{model_path}: not a model directory (no readable config.json)") from None
    except ValueError as exc:
        raise BadInput(f"{cfg}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise BadInput(f"{cfg}: expected a JSON object")
    return data


def family_of_checkpoint(model_path: Path) -> Family:
    return family_for_config(read_model_config(model_path), str(Path(model_path) / "config.json"))


WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
"""What `from_pretrained` loads a checkpoint's weights from (one of them)."""


def check_checkpoint(model_path: Path) -> Family:
    """A checkpoint to load, checked before a run directory or eval.json is written: its
    config builds the model (on the meta device, as `inspect` does), it has weights and its
    processor loads.
    Found later, either is a traceback from `from_pretrained` after the run began."""
    from vlmtui.core.model.resolve import build_meta_model, resolve_model

    family = family_of_checkpoint(model_path)
    build_meta_model(resolve_model(model_path))
    if not any((Path(model_path) / name).is_file() for name in WEIGHT_FILES):
        raise BadInput(f"{model_path}: no weights (none of {', '.join(WEIGHT_FILES)})")
    try:
        load_processor(model_path)
    except Exception as exc:  # transformers raises OSError, ValueError, KeyError... for this
        detail = " ".join(str(exc).split())
        detail = detail if len(detail) <= 200 else detail[:197] + "..."
        raise BadInput(
            f"{model_path}: cannot load its processor (tokenizer and image processor): "
            f"{type(exc).__name__}: {detail}"
        ) from None
    return family


def compute_dtype(recipe: TrainingRecipe, device: Device) -> Any:
    import torch

    if recipe.compute_dtype == "auto":
        return torch.bfloat16 if device.is_cuda else torch.float32
    return getattr(torch, recipe.compute_dtype)


def quantization_config(recipe: TrainingRecipe, dtype: Any, quant_storage: Any = None) -> Any:
    """bitsandbytes settings; `quant_storage` is the dtype 4-bit weights are packed in (None:
    bnb's uint8; FSDP needs a float dtype, see `sharding.loading_kwargs`)."""
    if not recipe.quantized:
        return None
    from transformers import BitsAndBytesConfig

    if recipe.quantization == "4bit":
        storage = {"bnb_4bit_quant_storage": quant_storage} if quant_storage is not None else {}
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype,
            llm_int8_skip_modules=QUANT_SKIP_MODULES,
            **storage,
        )
    return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=QUANT_SKIP_MODULES)


def model_class(family: Family) -> Any:
    """The transformers class that loads `family`. For a family with float32 parameters
    (Qwen3.5's A_log and gated norm), a same-named subclass whose `_keep_in_fp32_modules_strict`
    makes from_pretrained load them in float32 whatever the compute dtype, as the
    checkpoints store them (a bf16 round trip would lose their precision)."""
    return _model_class(family.model_class, family.fp32_params)


@functools.cache
def _model_class(name: str, fp32_params: tuple[str, ...]) -> Any:
    import transformers

    cls = getattr(transformers, name)
    if not fp32_params:
        return cls
    keep = sorted({p.removesuffix(".weight") for p in fp32_params})
    attrs = {"_keep_in_fp32_modules_strict": keep, "__module__": cls.__module__}
    return type(cls.__name__, (cls,), attrs)


def keep_fp32_params(model: Any, family: Family) -> None:
    """Cast the family's float32 parameters back to float32 (a model built in bf16)."""
    import torch

    for name, param in model.named_parameters():
        if family.is_fp32_param(name) and param.dtype != torch.float32:
            param.data = param.data.to(torch.float32)


def quantized_outside_llm(model: Any, family: Family) -> list[str]:
    from vlmtui.core.recipes.policy import is_quantized_module, strip_peft

    return [
        strip_peft(n)
        for n, m in model.named_modules()
        if is_quantized_module(m) and family.area_of(strip_peft(n)) != "llm"
    ]


def load_model_for_recipe(
    model_path: Path,
    recipe: TrainingRecipe,
    device: Device,
    family: Family | None = None,
    quant_storage: Any = None,
    placement: str | None = None,
) -> Any:
    """The base model, ready for `policy.prepare_trainables`.

    bf16 on GPU, float32 on CPU. A quantized recipe gets its LLM linears in 4-bit NF4 (or
    8-bit); vision, projector and lm_head stay unquantized, which is checked after loading,
    and in the compute dtype (see `prepare_quantized`).
    A family's float32 parameters (Qwen3.5's A_log, gated norm) load in float32.
    """
    family = family or family_of_checkpoint(model_path)
    dtype = compute_dtype(recipe, device)
    model_cls = model_class(family)
    # `placement`: where the weights are read to, when not onto the training device (an fsdp
    # run reads them to the CPU and shards them onto the devices).
    where = placement or device.torch_device
    kwargs: dict[str, Any] = {"dtype": dtype, "device_map": {"": where}}
    qconf = quantization_config(recipe, dtype, quant_storage)
    if qconf is not None:
        kwargs["quantization_config"] = qconf
    model = model_cls.from_pretrained(str(model_path), **kwargs)
    if qconf is not None:
        wrong = quantized_outside_llm(model, family)
        if wrong:
            raise BadInput(
                f"quantization reached {len(wrong)} modules outside the LLM "
                f"(first: {wrong[0]}); refusing to train a degraded model"
            )
        prepare_quantized(model, recipe)
    if recipe.gradient_checkpointing:
        enable_checkpointing(model)
    model.config.use_cache = False
    return model


def prepare_quantized(model: Any, recipe: TrainingRecipe) -> Any:
    """What a quantized model needs before LoRA, in place of PEFT's
    `prepare_model_for_kbit_training`.

    That function casts every parameter that is not 4-bit to fp32. With a bf16 compute dtype
    this only costs memory (on a 72B model, 6 GiB more for frozen vision, projector, embedding,
    lm_head and norms): a frozen weight gets no update that bf16 could round away, and the
    same weights are bf16 in every unquantized recipe. The fp32 cast dates from fp16
    training, where the loss scaler needs fp32 master weights for what trains. What remains
    needed of it:
    - every base parameter frozen (the freeze policy then unfreezes what the recipe trains);
    - norms in fp32 only when the recipe asks (`upcast_norms`);
    - input gradients for checkpointing: done by `enable_checkpointing`.
    LoRA weights come out fp32 from PEFT (`autocast_adapter_dtype`); `keep_adapters_fp32`
    restores that after TRL casts them.
    """
    import torch

    model.requires_grad_(False)
    if recipe.upcast_norms:
        for module in model.modules():
            if type(module).__name__.endswith("Norm"):
                for p in module.parameters(recurse=False):
                    p.data = p.data.to(torch.float32)
    return model


def enable_checkpointing(model: Any) -> None:
    """Non-reentrant activation checkpointing on every block (LLM layers and vision blocks).

    Non-reentrant, because reentrant checkpointing drops the gradient of a block whose inputs
    do not require grad, which is every block above a frozen embedding under LoRA. Input
    gradients are switched on as well (transformers does that itself for `input_ids`
    models), so the embedding output carries grad whichever checkpoint flavour a caller
    (the Trainer enables checkpointing again from its config) picks.
    """
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    if not getattr(model, "_require_grads_hooks", None):
        model.enable_input_require_grads()


def keep_adapters_fp32(model: Any) -> None:
    """Trainable parameters back to fp32 after TRL's SFTTrainer cast them to bf16.

    TRL casts the trainable parameters of a quantized model to bf16 (the QLoRA paper's
    choice); vlmtui keeps LoRA weights, their gradients and AdamW states in fp32, as the
    memory estimate counts them. Same Parameter objects, so the optimizer keeps them.
    """
    import torch

    for p in model.parameters():
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.to(torch.float32)


def load_processor(model_path: Path) -> Any:
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(str(model_path))


def unfinished_reason(run_dir: Path) -> str:
    """Why a run has no final weights, and what to do about it."""
    state = (read_status(run_dir) or {}).get("state")
    if state is None:
        return "no finished weights (weights.json missing)"
    event = last_step_event(read_events(run_dir))
    at = f" at step {event['step']}" if event else ""
    if state in ("stopped", "failed"):
        return (
            f"no final weights: the run {state}{at}; finish it with `vlmtui train --resume` "
            "(same recipe, model and data, this directory as --output), then evaluate it"
        )
    return f"no final weights yet: the run is {state}{at}; evaluate it when it has finished"


def read_run_object(path: Path) -> dict[str, Any] | None:
    """A run file's JSON object; None when the file is absent. vlmtui writes these whole
    (atomic renames), so one that is not a JSON object was damaged or written by something
    else: BadInput saying so."""
    if not path.exists():
        return None
    data = read_json(path)
    if not isinstance(data, dict):
        raise BadInput(f"{path}: not a JSON object (damaged, or not written by vlmtui)")
    return data


def weights_record(run_dir: Path) -> dict[str, Any]:
    """A finished run's weights.json, checked: an edited or damaged one was a KeyError or
    AttributeError traceback in `eval`."""
    path = Path(run_dir) / WEIGHTS_JSON
    record = read_run_object(path)
    if record is None:
        raise BadInput(f"{run_dir}: {unfinished_reason(Path(run_dir))}")
    if record.get("kind") not in ("full", "adapter"):
        raise BadInput(f"{path}: kind: expected 'full' or 'adapter', got {record.get('kind')!r}")
    for key in ("path", "base_model") if record["kind"] == "adapter" else ("path",):
        if not isinstance(record.get(key), str) or not record[key]:
            raise BadInput(f"{path}: {key}: expected a path, got {record.get(key)!r}")
    return record


def load_for_inference(run_dir: Path) -> tuple[Any, Any, Family]:
    """A finished run's model (adapter applied, or full weights), its processor and family.

    A LoRA run trained on a 4-bit base is evaluated on the unquantized base in the compute
    dtype: the adapter is the same, and generation does not pay bitsandbytes' dequantisation.
    """
    record = weights_record(run_dir)
    device = detect_device()
    import torch

    dtype = torch.bfloat16 if device.is_cuda else torch.float32
    path = Path(record["path"])
    if record["kind"] == "full":
        family = family_of_checkpoint(path)
        model_cls = model_class(family)
        model = model_cls.from_pretrained(str(path), dtype=dtype, device_map=device.torch_device)
    else:
        base = Path(record["base_model"])
        family = family_of_checkpoint(base)
        model_cls = model_class(family)
        model = model_cls.from_pretrained(str(base), dtype=dtype, device_map=device.torch_device)
        full = path / "full_params.safetensors"
        if full.exists():
            from safetensors.torch import load_file

            # A partial state dict (the fully trained areas only): every key must land.
            unexpected = model.load_state_dict(load_file(str(full)), strict=False).unexpected_keys
            if unexpected:
                raise WorkFailed(f"{full}: keys the model does not have: {unexpected[:3]}")
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(path)).merge_and_unload()
    model.eval()
    return model, load_processor(path), family
