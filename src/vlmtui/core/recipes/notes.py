"""What the guard says beside pass/refuse: ties, LLM parameters that stay out of 4-bit, the
layer kinds and experts a recipe reaches. Facts of the prepared model, read by the guard's
verdict, `vlmtui inspect` and the TUI alike.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from vlmtui.core.families import EXPERTS_TARGET, Family, strip_prefix
from vlmtui.core.recipes.recipe import TrainingRecipe

NOT_4BIT_REASONS = {
    "experts": "fused MoE experts (3-D parameters, not nn.Linear: bitsandbytes leaves them "
    "in the compute dtype)",
    "router": "MoE router (not nn.Linear)",
    "fp32": "A_log and gated norm (kept in float32 as the checkpoints store them)",
    "embedding": "token embedding",
    "conv": "linear-attention conv1d (not nn.Linear)",
    "other": "norms, biases and other small parameters",
}


def tied_head(model: Any) -> str:
    """The parameter lm_head's weight is (`…embed_tokens.weight`) when tied, else ""."""
    first: dict[int, str] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        base = strip_prefix(name)
        if id(param) in first and base.startswith("lm_head."):
            return strip_prefix(first[id(param)])
        first.setdefault(id(param), name)
    return ""


def not_4bit_reason(name: str, family: Family) -> str:
    """Why an LLM parameter that is not a quantized linear's weight stays unquantized."""
    if family.is_expert_param(name):
        return "experts"
    if family.is_router_param(name):
        return "router"
    if family.is_fp32_param(name):
        return "fp32"
    if ".embed_tokens." in name:
        return "embedding"
    if ".linear_attn.conv1d." in name:
        return "conv"
    return "other"


def lora_by_layer_kind(
    lora_modules: Iterable[str], layer_kinds: Mapping[int, str]
) -> dict[str, dict[str, int]]:
    """Layer kind -> {module path inside the layer: adapted layers}, for the LLM's adapters."""
    out: dict[str, dict[str, int]] = {}
    prefix = "model.language_model.layers."
    for name in lora_modules:
        if not name.startswith(prefix):
            continue
        index, _, inner = name[len(prefix) :].partition(".")
        kind = layer_kinds.get(int(index), "full-attention")
        row = out.setdefault(kind, {})
        row[inner] = row.get(inner, 0) + 1
    return out


def guard_notes(
    recipe: TrainingRecipe,
    family: Family,
    *,
    tied: str,
    not_4bit: Mapping[str, int],
    layer_kinds: Mapping[int, str],
) -> list[str]:
    """Facts the guard reports with its verdict (each one line)."""
    notes: list[str] = []
    if tied:
        state = "train together" if recipe.llm.mode == "full" else "both stay frozen"
        notes.append(f"lm_head and {tied} are one tensor (tied), counted once: {state}")
    llm = recipe.llm
    if llm.mode == "lora":
        absent = family.absent_targets("llm", llm.targets)
        if absent:
            notes.append(
                f"{', '.join(absent)}: {family.name} has no dense MLP, so these adapt nothing"
            )
        if family.expert_params:
            if EXPERTS_TARGET in llm.targets:
                notes.append("routed experts: LoRA on every expert (target_parameters)")
            else:
                notes.append(f"routed experts frozen (opt in with the {EXPERTS_TARGET!r} target)")
        if family.router_params:
            trains = "router" in llm.also_full
            notes.append("router trains in full" if trains else "router frozen")
    kinds = sorted(set(layer_kinds.values()))
    if len(kinds) > 1:
        counts = ", ".join(
            f"{sum(1 for k in layer_kinds.values() if k == kind)} {kind}" for kind in kinds
        )
        notes.append(f"LLM layers: {counts}")
    if not_4bit:
        total = sum(not_4bit.values())
        parts = "; ".join(f"{NOT_4BIT_REASONS[k]} {v:,}" for k, v in not_4bit.items() if v)
        bits = recipe.quantization.removesuffix("bit")
        notes.append(f"{total:,} LLM parameters are not {bits}-bit: {parts}")
    return notes
