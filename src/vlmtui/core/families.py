"""What differs between model families: parameter areas, LoRA target names, box format.

Every rule that maps a parameter or module name to an area lives here, so the trainer, the
inspector and the TUI cannot disagree about what "the vision tower" is. LoRA targets are
built as full-name regexes anchored at each tower's blocks: a bare suffix such as
`down_proj` would also hit Qwen2.5-VL's vision MLP.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from vlmtui.core.errors import BadInput

AREAS = ("vision", "projector", "llm", "lm_head", "other")
TRAINABLE_AREAS = ("vision", "projector", "llm")

# PEFT wraps the model: parameter names gain this prefix (and LoRA layers `.base_layer`).
PEFT_PREFIX = "base_model.model."

LLM_TARGETS: Mapping[str, tuple[str, ...]] = {
    "q_proj": ("self_attn.q_proj",),
    "k_proj": ("self_attn.k_proj",),
    "v_proj": ("self_attn.v_proj",),
    "o_proj": ("self_attn.o_proj",),
    "gate_proj": ("mlp.gate_proj",),
    "up_proj": ("mlp.up_proj",),
    "down_proj": ("mlp.down_proj",),
}
DEFAULT_LLM_TARGETS = tuple(LLM_TARGETS)
DEFAULT_VISION_TARGETS = ("qkv", "fc1", "fc2")
EXPERTS_TARGET = "experts"
"""LLM LoRA target of the routed MoE experts: fused 3-D parameters, reached through PEFT's
`target_parameters` (they are not nn.Linear modules). Opt-in: no built-in recipe names it."""
ROUTER_PART = "router"
"""Name in `AreaPlan.also_full` that trains the MoE router weights in full (not LoRA-able)."""

BLOCK_PREFIX = {
    "vision": r"model\.visual\.blocks",
    "llm": r"model\.language_model\.layers",
}
LLM_LAYER_RE = re.compile(r"model\.language_model\.layers\.(\d+)\.(self_attn|linear_attn)(?:\.|$)")
LAYER_KINDS = {"self_attn": "full-attention", "linear_attn": "linear-attention"}


def strip_prefix(name: str) -> str:
    """A name without PEFT's wrapper prefix."""
    return name[len(PEFT_PREFIX) :] if name.startswith(PEFT_PREFIX) else name


def llm_layer_kinds(module_names: Iterable[str]) -> dict[int, str]:
    """LLM layer index -> `full-attention` / `linear-attention`, from the modules it holds."""
    kinds: dict[int, str] = {}
    for name in module_names:
        m = LLM_LAYER_RE.match(strip_prefix(name))
        if m:
            kinds[int(m.group(1))] = LAYER_KINDS[m.group(2)]
    return kinds


def _block_regex(area: str, paths: Iterable[str]) -> str:
    return rf"{BLOCK_PREFIX[area]}\.\d+\.(?:{'|'.join(sorted(set(paths)))})"


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
    llm_targets: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: LLM_TARGETS)
    """Recipe LLM target name -> module paths inside one LLM layer. An empty tuple: the
    family has no such module (a dense-MLP target on a MoE model without a shared expert)."""
    box_format: str = "qwen2"
    """`qwen2`: 0-1000 tuples in special tokens; `qwen2.5`: JSON bbox_2d in resized pixels;
    `qwen3`: JSON bbox_2d in 0-1000 relative coordinates."""
    projector_prefixes: tuple[str, ...] = ("model.visual.merger",)
    """Module paths of the projector; the rest of `model.visual` is the vision tower."""
    expert_params: tuple[str, ...] = ()
    """Fused routed-expert parameters inside one LLM layer (PEFT `target_parameters`)."""
    router_params: tuple[str, ...] = ()
    """MoE router parameters inside one LLM layer (trained in full through `also_full`)."""
    fp32_params: tuple[str, ...] = ()
    """Parameters inside one LLM layer the checkpoints store in float32 and training keeps so."""
    mtp_head: bool = False
    """The checkpoints also hold a multi-token-prediction head (`mtp.*`) that transformers
    does not build: it is in the published parameter count, never in the model."""

    def area_of(self, name: str) -> str:
        """Area of a parameter or module name, with or without PEFT's prefix."""
        name = strip_prefix(name)
        for prefix in self.projector_prefixes:
            if name == prefix or name.startswith(prefix + "."):
                return "projector"
        if name.startswith("model.visual.") or name == "model.visual":
            return "vision"
        if name.startswith("model.language_model.") or name == "model.language_model":
            return "llm"
        if name.startswith("lm_head.") or name == "lm_head":
            return "lm_head"
        return "other"

    def known_targets(self, area: str) -> tuple[str, ...]:
        """The recipe target names an area accepts in this family."""
        if area == "vision":
            return tuple(self.vision_targets)
        if area == "llm":
            return (*self.llm_targets, *((EXPERTS_TARGET,) if self.expert_params else ()))
        raise BadInput(f"LoRA is supported on the vision and llm areas, not {area!r}")

    def lora_target_paths(self, area: str, targets: tuple[str, ...]) -> list[tuple[str, str]]:
        """(recipe target name, module path inside a block) for each of an area's module
        targets. `experts` targets parameters (see `expert_targets`), not a module path."""
        known = self.known_targets(area)
        table = self.vision_targets if area == "vision" else self.llm_targets
        out: list[tuple[str, str]] = []
        for target in targets:
            if target not in known:
                raise BadInput(
                    f"{area} LoRA target {target!r} is not known for {self.name} "
                    f"(known: {', '.join(known)})"
                )
            out.extend((target, path) for path in table.get(target, ()))
        return out

    def absent_targets(self, area: str, targets: tuple[str, ...]) -> list[str]:
        """Targets that name no module in this family (`gate_proj` on Qwen3-VL-MoE)."""
        if area != "llm":
            return []
        return [t for t in targets if t in self.llm_targets and not self.llm_targets[t]]

    def expert_targets(self, area: str, targets: tuple[str, ...]) -> list[str]:
        """PEFT `target_parameters` for the area's targets (the fused experts), or []."""
        if area != "llm" or EXPERTS_TARGET not in targets:
            return []
        return list(self.expert_params)

    def lora_regex(self, area: str, targets: tuple[str, ...]) -> str | None:
        """Full-name regex (PEFT `re.fullmatch`) for an area's module targets, anchored per
        tower; None when the targets name no module in this family."""
        paths = [re.escape(p) for _, p in self.lora_target_paths(area, targets)]
        return _block_regex(area, paths) if paths else None

    def target_regexes(self, area: str, targets: tuple[str, ...]) -> dict[str, str]:
        """One anchored regex per recipe target name, so the guard can check each one matched."""
        by_target: dict[str, list[str]] = {}
        for target, path in self.lora_target_paths(area, targets):
            by_target.setdefault(target, []).append(re.escape(path))
        return {t: _block_regex(area, ps) for t, ps in by_target.items()}

    def full_part_regex(self, area: str, part: str) -> str:
        """Full-name regex of the parameters an `also_full` part names."""
        if area == "llm" and part == ROUTER_PART and self.router_params:
            return _block_regex("llm", (re.escape(p) for p in self.router_params))
        known = ROUTER_PART if area == "llm" and self.router_params else "none"
        raise BadInput(f"{area}.also_full: {part!r} is not known for {self.name} (known: {known})")

    def expert_regex(self) -> str:
        """Full-name regex of the fused expert parameters in every LLM layer."""
        return _block_regex("llm", (re.escape(p) for p in self.expert_params))

    def is_expert_param(self, name: str) -> bool:
        """A fused routed-expert parameter (base model name)."""
        return self._in_layer(name, self.expert_params)

    def is_router_param(self, name: str) -> bool:
        return self._in_layer(name, self.router_params)

    def is_fp32_param(self, name: str) -> bool:
        """A parameter the checkpoints keep in float32 (Qwen3.5's A_log and gated norm)."""
        return self._in_layer(name, self.fp32_params)

    def _in_layer(self, name: str, paths: tuple[str, ...]) -> bool:
        if not paths:
            return False
        rx = _block_regex("llm", (re.escape(p) for p in paths))
        return re.fullmatch(rx, strip_prefix(name)) is not None


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

# Qwen3-VL and Qwen3.5 share one vision tower: `attn.qkv`/`attn.proj` and an ungated MLP named
# `linear_fc1`/`linear_fc2`, the same names as the merger's. Anchoring at `model.visual.blocks.N`
# keeps `fc1` off the merger and the DeepStack mergers, and `proj` off `patch_embed.proj`.
QWEN3_VISION_TARGETS: Mapping[str, tuple[str, ...]] = {
    "qkv": ("attn.qkv",),
    "proj": ("attn.proj",),
    "fc1": ("mlp.linear_fc1",),
    "fc2": ("mlp.linear_fc2",),
    "mlp": ("mlp.linear_fc1", "mlp.linear_fc2"),
}
QWEN3_VL_PROJECTOR = ("model.visual.merger", "model.visual.deepstack_merger_list")

# Qwen3.5 is hybrid: three of every four layers are Gated DeltaNet linear attention
# (`linear_attn`), every fourth is full attention (`self_attn`). The attention targets mean
# "this role of attention, in every layer": q_proj also adapts the linear layers' packed q/k/v
# input and their output gate z (full attention's q_proj packs query and output gate too),
# k_proj/v_proj the packed q/k/v input, o_proj the output projection. The per-head decay
# inputs in_proj_b/in_proj_a (16-64 outputs) are adapted only when named.
QWEN3_5_ATTENTION: Mapping[str, tuple[str, ...]] = {
    "q_proj": ("self_attn.q_proj", "linear_attn.in_proj_qkv", "linear_attn.in_proj_z"),
    "k_proj": ("self_attn.k_proj", "linear_attn.in_proj_qkv"),
    "v_proj": ("self_attn.v_proj", "linear_attn.in_proj_qkv"),
    "o_proj": ("self_attn.o_proj", "linear_attn.out_proj"),
    "in_proj_qkv": ("linear_attn.in_proj_qkv",),
    "in_proj_z": ("linear_attn.in_proj_z",),
    "in_proj_b": ("linear_attn.in_proj_b",),
    "in_proj_a": ("linear_attn.in_proj_a",),
    "out_proj": ("linear_attn.out_proj",),
}
QWEN3_EXPERTS = ("mlp.experts.gate_up_proj", "mlp.experts.down_proj")
QWEN3_ROUTER = ("mlp.gate.weight",)
QWEN3_5_FP32 = ("linear_attn.A_log", "linear_attn.norm.weight")

QWEN3_VL = Family(
    name="qwen3-vl",
    model_types=("qwen3_vl",),
    model_class="Qwen3VLForConditionalGeneration",
    vision_targets=QWEN3_VISION_TARGETS,
    box_format="qwen3",
    projector_prefixes=QWEN3_VL_PROJECTOR,
)

# No dense MLP and no shared expert: gate/up/down_proj name nothing here (the guard says so);
# the routed experts train only when a recipe names `experts`.
QWEN3_VL_MOE = Family(
    name="qwen3-vl-moe",
    model_types=("qwen3_vl_moe",),
    model_class="Qwen3VLMoeForConditionalGeneration",
    vision_targets=QWEN3_VISION_TARGETS,
    llm_targets={
        **{k: v for k, v in LLM_TARGETS.items() if v[0].startswith("self_attn.")},
        "gate_proj": (),
        "up_proj": (),
        "down_proj": (),
    },
    box_format="qwen3",
    projector_prefixes=QWEN3_VL_PROJECTOR,
    expert_params=QWEN3_EXPERTS,
    router_params=QWEN3_ROUTER,
)

QWEN3_5 = Family(
    name="qwen3.5",
    model_types=("qwen3_5",),
    model_class="Qwen3_5ForConditionalGeneration",
    vision_targets=QWEN3_VISION_TARGETS,
    llm_targets={
        **QWEN3_5_ATTENTION,
        **{k: v for k, v in LLM_TARGETS.items() if v[0].startswith("mlp.")},
    },
    box_format="qwen3",
    fp32_params=QWEN3_5_FP32,
    mtp_head=True,
)

# The shared expert is an ordinary gated MLP: gate/up/down_proj adapt it in every layer.
QWEN3_5_MOE = Family(
    name="qwen3.5-moe",
    model_types=("qwen3_5_moe",),
    model_class="Qwen3_5MoeForConditionalGeneration",
    vision_targets=QWEN3_VISION_TARGETS,
    llm_targets={
        **QWEN3_5_ATTENTION,
        "gate_proj": ("mlp.shared_expert.gate_proj",),
        "up_proj": ("mlp.shared_expert.up_proj",),
        "down_proj": ("mlp.shared_expert.down_proj",),
    },
    box_format="qwen3",
    expert_params=QWEN3_EXPERTS,
    router_params=QWEN3_ROUTER,
    fp32_params=QWEN3_5_FP32,
    mtp_head=True,
)

FAMILIES: dict[str, Family] = {
    f.name: f for f in (QWEN2_VL, QWEN2_5_VL, QWEN3_VL, QWEN3_VL_MOE, QWEN3_5, QWEN3_5_MOE)
}


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
