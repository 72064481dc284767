"""Loading a model for a recipe: dtype, device, quantization of the frozen LLM only.

bitsandbytes skip lists fail silently when transformers renames modules (FACTS.md:
`["visual"]` stopped protecting the vision tower in 5.x), so after loading we check the
result ourselves: any quantized module outside the LLM is an error, never a warning.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlmtui.core.errors import BadInput
from vlmtui.core.families import Family, family_for_config
from vlmtui.core.recipes.recipe import TrainingRecipe
from vlmtui.core.rundir import WEIGHTS_JSON, read_json

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
        return json.loads(cfg.read_text(encoding="utf-8"))
    except OSError:
        raise BadInput(f"{model_path}: not a model directory (no readable config.json)") from None
    except ValueError as exc:
        raise BadInput(f"{cfg}: not valid JSON ({exc})") from None


def family_of_checkpoint(model_path: Path) -> Family:
    return family_for_config(read_model_config(model_path), str(Path(model_path) / "config.json"))


def compute_dtype(recipe: TrainingRecipe, device: Device) -> Any:
    import torch

    if recipe.compute_dtype == "auto":
        return torch.bfloat16 if device.is_cuda else torch.float32
    return getattr(torch, recipe.compute_dtype)


def quantization_config(recipe: TrainingRecipe, dtype: Any) -> Any:
    if not recipe.quantized:
        return None
    from transformers import BitsAndBytesConfig

    if recipe.quantization == "4bit":
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype,
            llm_int8_skip_modules=QUANT_SKIP_MODULES,
        )
    return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=QUANT_SKIP_MODULES)


def quantized_outside_llm(model: Any, family: Family) -> list[str]:
    from vlmtui.core.recipes.policy import is_quantized_module, strip_peft

    return [
        strip_peft(n)
        for n, m in model.named_modules()
        if is_quantized_module(m) and family.area_of(strip_peft(n)) != "llm"
    ]


def load_model_for_recipe(
    model_path: Path, recipe: TrainingRecipe, device: Device, family: Family | None = None
) -> Any:
    """The base model, ready for `policy.prepare_trainables`.

    bf16 on GPU, float32 on CPU. A quantized recipe gets its LLM linears in 4-bit NF4 (or
    8-bit) and `prepare_model_for_kbit_training`; vision, projector and lm_head stay in full
    precision, which is checked after loading.
    """
    import transformers

    family = family or family_of_checkpoint(model_path)
    dtype = compute_dtype(recipe, device)
    model_cls = getattr(transformers, family.model_class)
    kwargs: dict[str, Any] = {"dtype": dtype, "device_map": {"": device.torch_device}}
    qconf = quantization_config(recipe, dtype)
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
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=recipe.gradient_checkpointing
        )
    elif recipe.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    model.config.use_cache = False
    return model


def load_processor(model_path: Path) -> Any:
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(str(model_path))


def load_for_inference(run_dir: Path) -> tuple[Any, Any, Family]:
    """A finished run's model (adapter applied, or full weights), its processor and family.

    A LoRA run trained on a 4-bit base is evaluated on the unquantized base in the compute
    dtype: the adapter is the same, and generation does not pay bitsandbytes' dequantisation.
    """
    import transformers

    record = read_json(Path(run_dir) / WEIGHTS_JSON)
    if not record:
        raise BadInput(f"{run_dir}: no finished weights (weights.json missing)")
    device = detect_device()
    import torch

    dtype = torch.bfloat16 if device.is_cuda else torch.float32
    path = Path(record["path"])
    if record["kind"] == "full":
        family = family_of_checkpoint(path)
        model_cls = getattr(transformers, family.model_class)
        model = model_cls.from_pretrained(str(path), dtype=dtype, device_map=device.torch_device)
    else:
        base = Path(record["base_model"])
        family = family_of_checkpoint(base)
        model_cls = getattr(transformers, family.model_class)
        model = model_cls.from_pretrained(str(base), dtype=dtype, device_map=device.torch_device)
        full = path / "full_params.safetensors"
        if full.exists():
            from safetensors.torch import load_file

            model.load_state_dict(load_file(str(full)), strict=False)
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(path)).merge_and_unload()
    model.eval()
    return model, load_processor(path), family
