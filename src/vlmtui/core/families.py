"""What differs between model families: parameter areas, LoRA target names, box format.

Every rule that maps a parameter or module name to an area lives here, so the trainer, the
inspector and the TUI cannot disagree about what "the vision tower" is. LoRA targets are
built as full-name regexes anchored at each tower's blocks: a bare suffix such as
`down_proj` would also hit Qwen2.5-VL's vision MLP.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from vlmtui.core.errors import BadInput

AREAS = ("vision", "projector", "llm", "lm_head", "other")
TRAINABLE_AREAS = ("vision", "projector", "llm")

# PEFT wraps the model: parameter names gain this prefix (and LoRA layers `.base_layer`).
PEFT_PREFIX = "base_model.model."

LLM_TARGETS: Mapping[str, str] = {
    "q_proj": "self_attn.q_proj",
    "k_proj": "self_attn.k_proj",
    "v_proj": "self_attn.v_proj",
    "o_proj": "self_attn.o_proj",
    "gate_proj": "mlp.gate_proj",
    "up_proj": "mlp.up_proj",
    "down_proj": "mlp.down_proj",
}
DEFAULT_LLM_TARGETS = tuple(LLM_TARGETS)
DEFAULT_VISION_TARGETS = ("qkv", "fc1", "fc2")


@dataclass(frozen=True)
class Family:
    """One model family and the naming rules of its transformers implementation."""

    name: str
    """Short id used on the command line and in recipes (`qwen2-vl`)."""
    model_types: tuple[str, ...]
    """`config.model_type` values that belong to this family."""
    model_class: str
    """transformers class that builds the full model."""
    vision_targets: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Recipe vision target name -> module paths inside one vision block."""
    box_format: str = "qwen2"
    """`qwen2`: 0-1000 tuples in special tokens; `qwen2.5`: JSON bbox_2d in resized pixels."""

    def area_of(self, name: str) -> str:
        """Area of a parameter or module name, with or without PEFT's prefix."""
        if name.startswith(PEFT_PREFIX):
            name = name[len(PEFT_PREFIX) :]
        if name.startswith("model.visual.merger.") or name == "model.visual.merger":
            return "projector"
        if name.startswith("model.visual.") or name == "model.visual":
            return "vision"
        if name.startswith("model.language_model.") or name == "model.language_model":
            return "llm"
        if name.startswith("lm_head.") or name == "lm_head":
            return "lm_head"
        return "other"

    def lora_target_paths(self, area: str, targets: tuple[str, ...]) -> list[tuple[str, str]]:
        """(recipe target name, module path inside a block) for each of an area's targets."""
        table: Mapping[str, str | tuple[str, ...]]
        table = self.vision_targets if area == "vision" else LLM_TARGETS
        if area not in ("vision", "llm"):
            raise BadInput(f"LoRA is supported on the vision and llm areas, not {area!r}")
        out: list[tuple[str, str]] = []
        for target in targets:
            if target not in table:
                known = ", ".join(table)
                raise BadInput(
                    f"{area} LoRA target {target!r} is not known for {self.name} (known: {known})"
                )
            paths = table[target]
            for path in (paths,) if isinstance(paths, str) else paths:
                out.append((target, path))
        return out

    def lora_regex(self, area: str, targets: tuple[str, ...]) -> str:
        """Full-name regex (PEFT `re.fullmatch`) for an area's LoRA targets, anchored per tower."""
        paths = sorted({re.escape(p) for _, p in self.lora_target_paths(area, targets)})
        block = BLOCK_PREFIX[area]
        return rf"{block}\.\d+\.(?:{'|'.join(paths)})"

    def target_regexes(self, area: str, targets: tuple[str, ...]) -> dict[str, str]:
        """One anchored regex per recipe target name, so the guard can check each one matched."""
        by_target: dict[str, list[str]] = {}
        for target, path in self.lora_target_paths(area, targets):
            by_target.setdefault(target, []).append(re.escape(path))
        block = BLOCK_PREFIX[area]
        return {t: rf"{block}\.\d+\.(?:{'|'.join(ps)})" for t, ps in by_target.items()}


BLOCK_PREFIX = {
    "vision": r"model\.visual\.blocks",
    "llm": r"model\.language_model\.layers",
}

QWEN2_VL = Family(
    name="qwen2-vl",
    model_types=("qwen2_vl",),
    model_class="Qwen2VLForConditionalGeneration",
    vision_targets={
        "qkv": ("attn.qkv",),
        "proj": ("attn.proj",),
        "fc1": ("mlp.fc1",),
        "fc2": ("mlp.fc2",),
        "mlp": ("mlp.fc1", "mlp.fc2"),
    },
    box_format="qwen2",
)

# Qwen2.5-VL's vision MLP is gated like the LLM's: fc1 maps to gate/up, fc2 to down, so the
# same recipe means the same thing (the block's MLP input and output) in both families.
QWEN2_5_VL = Family(
    name="qwen2.5-vl",
    model_types=("qwen2_5_vl",),
    model_class="Qwen2_5_VLForConditionalGeneration",
    vision_targets={
        "qkv": ("attn.qkv",),
        "proj": ("attn.proj",),
        "fc1": ("mlp.gate_proj", "mlp.up_proj"),
        "fc2": ("mlp.down_proj",),
        "gate_proj": ("mlp.gate_proj",),
        "up_proj": ("mlp.up_proj",),
        "down_proj": ("mlp.down_proj",),
        "mlp": ("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"),
    },
    box_format="qwen2.5",
)

FAMILIES: dict[str, Family] = {f.name: f for f in (QWEN2_VL, QWEN2_5_VL)}


def family_by_name(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise BadInput(f"unknown model family {name!r} (known: {', '.join(FAMILIES)})") from None


def family_for_config(config: Any, source: str = "config") -> Family:
    """Family of a transformers config object or a config.json dict."""
    model_type = config.get("model_type") if isinstance(config, dict) else config.model_type
    for fam in FAMILIES.values():
        if model_type in fam.model_types:
            return fam
    supported = ", ".join(t for f in FAMILIES.values() for t in f.model_types)
    raise BadInput(
        f"{source}: model_type {model_type!r} is not a supported family (supported: {supported})"
    )
