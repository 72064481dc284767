"""A meta model prepared for a recipe exactly as training prepares it, and read back.

Split from `meta.py` (which caches results per model and recipe) because this is the part
that touches torch, transformers and PEFT: the trainable set comes from the very functions
the trainer runs (`policy.prepare_trainables`: LoRA injection with PEFT, the freeze policy
and the pre-flight guard). Quantized recipes get the same bitsandbytes module replacement
`from_pretrained` performs before loading weights (transformers' quantizer, same
`BitsAndBytesConfig` and skip list as `loading.py`) and `loading.prepare_quantized`, so
4-bit modules, dtypes and names match training.
"""

from __future__ import annotations

from typing import Any

from vlmtui.core.families import Family
from vlmtui.core.inspection.memory import ParamInfo
from vlmtui.core.inspection.tree import QUANT_CLASSES, Marking
from vlmtui.core.model.resolve import ModelRef, build_meta_model, skip_init
from vlmtui.core.recipes.recipe import TrainingRecipe


def _quantize_meta(model: Any, recipe: TrainingRecipe, family: Family, dtype: Any) -> Any:
    """The module replacement from_pretrained does before loading quantized weights."""
    import torch
    from transformers.quantizers import AutoHfQuantizer

    from vlmtui.core.model.loading import prepare_quantized, quantization_config

    quantizer = AutoHfQuantizer.from_config(quantization_config(recipe, dtype), pre_quantized=False)
    with torch.device("meta"):
        quantizer.preprocess_model(model, device_map={"": "cuda:0"}, dtype=dtype)
    quantizer.postprocess_model(model)
    # from_pretrained fills the new linears' biases from the checkpoint in the compute dtype;
    # on meta they keep the float32 the empty modules were built with.
    for module in model.modules():
        bias = getattr(module, "bias", None)
        if type(module).__name__ in QUANT_CLASSES and bias is not None:
            bias.data = bias.data.to(dtype)
    return prepare_quantized(model, recipe)


def marking_and_params(
    model: Any, family: Family, recipe_name: str
) -> tuple[Marking, tuple[ParamInfo, ...]]:
    """What a prepared model trains (the `Marking`) and every parameter's size, dtype and
    quantization (for the memory estimate), read off the model's modules and parameters."""
    from vlmtui.core.recipes.policy import is_lora_param, param_numel, strip_peft, unique_parameters

    trainable: set[str] = set()
    lora: dict[str, int] = {}
    lora_train: dict[str, int] = {}
    infos: list[ParamInfo] = []
    quant: dict[str, str] = {}
    lora_in: dict[str, int] = {}
    quant_rows: dict[str, tuple[str, int, bool]] = {}
    for mname, module in model.named_modules():
        kind = QUANT_CLASSES.get(type(module).__name__)
        base = strip_peft(mname)
        if kind:
            quant[base] = kind
            w = module.weight
            dq = bool(getattr(w, "compress_statistics", True))
            quant_rows[base + ".weight"] = (kind, int(module.out_features), dq)
        if hasattr(module, "lora_A") and len(module.lora_A) > 0 and hasattr(module, "in_features"):
            lora_in[base] = int(module.in_features)
    for pname, p in unique_parameters(model):
        n = param_numel(p)
        full = strip_peft(pname)
        is_lora = is_lora_param(pname)
        dtype = str(p.dtype).removeprefix("torch.")
        q = quant_rows.get(full) if not is_lora else None
        infos.append(
            ParamInfo(
                name=full,
                numel=n,
                dtype=dtype,
                trainable=bool(p.requires_grad),
                lora=is_lora,
                quant=q[0] if q else "",
                rows=q[1] if q else 0,
                double_quant=q[2] if q else True,
            )
        )
        if is_lora:
            owner = full.split(".lora_", 1)[0]
            lora[owner] = lora.get(owner, 0) + n
            if p.requires_grad:
                lora_train[owner] = lora_train.get(owner, 0) + n
        elif p.requires_grad:
            trainable.add(full)
    marking = Marking(
        recipe=recipe_name,
        trainable=frozenset(trainable),
        lora_params=lora,
        lora_trainable=lora_train,
        lora_in_features=lora_in,
        quant=quant,
    )
    return marking, tuple(infos)


def prepare_meta_stage(ref: ModelRef, recipe: TrainingRecipe, model: Any = None) -> Any:
    """A meta model prepared for one single-stage recipe exactly as training prepares it.

    Raises policy.GuardError (BadInput) when the guard refuses the recipe.
    """
    import torch

    from vlmtui.core.model.loading import Device, compute_dtype, keep_fp32_params
    from vlmtui.core.recipes.policy import prepare_trainables

    dtype = compute_dtype(recipe, Device("cuda"))
    if model is None:
        model = build_meta_model(ref, dtype)
    elif next(model.parameters()).dtype != dtype:
        model = model.to(dtype)
    keep_fp32_params(model, ref.family)
    # New modules (4-bit linears, LoRA adapters) are created on the meta device with their
    # initialisers skipped: PEFT would otherwise initialise adapters on the CPU first (seconds
    # for a 72B model). Names, shapes, dtypes and requires_grad are unaffected.
    with skip_init():
        if recipe.quantized:
            model = _quantize_meta(model, recipe, ref.family, dtype)
        with torch.device("meta"):
            return prepare_trainables(model, recipe, ref.family)
