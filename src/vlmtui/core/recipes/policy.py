"""The trainable set: freeze policy, LoRA injection, per-area summary and the pre-flight guard.

This is the one code path that decides which parameters train. `vlmtui train` runs it on
the loaded model, `vlmtui inspect` and the TUI run it on a meta-device model; both then read
the result back with `summarize_trainables_by_area`. A recipe whose patterns match nothing,
or match outside their area, is refused here before any training step.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from vlmtui.core.errors import BadInput
from vlmtui.core.families import AREAS, PEFT_PREFIX, TRAINABLE_AREAS, Family, llm_layer_kinds
from vlmtui.core.recipes.notes import guard_notes, not_4bit_reason, tied_head
from vlmtui.core.recipes.recipe import TrainingRecipe

BASE_LAYER_RE = re.compile(r"\.base_layer(?=\.|$)")
LORA_PARAM_RE = re.compile(r"\.lora_(?:A|B|embedding_A|embedding_B|magnitude_vector)\.")


class GuardError(BadInput):
    """The pre-flight guard refused a recipe on a model (exit code 2, before training)."""


@dataclass(frozen=True)
class AreaCount:
    params: int
    """Parameters in the area (4-bit weights counted at their unpacked size)."""
    trainable: int
    """Of those, parameters with requires_grad."""


@dataclass(frozen=True)
class TrainableSummary:
    """What a prepared model trains, per area. The same for a meta model and a real one."""

    total_params: int
    trainable_params: int
    areas: dict[str, AreaCount]
    lora_modules: tuple[str, ...]
    """Full module names (without PEFT's prefix) that carry LoRA adapters."""
    trainable_names: tuple[str, ...]
    """Names of trainable parameters, without PEFT's prefix, sorted."""
    quantized_modules: tuple[str, ...] = field(default=())
    """Modules whose weights are 4-bit or 8-bit bitsandbytes linears."""
    tied_head: str = ""
    """The parameter lm_head's weight is one tensor with (tied embeddings), else ""."""
    not_quantized: dict[str, int] = field(default_factory=dict)
    """With quantized linears: LLM parameters left unquantized, by reason
    (`notes.NOT_4BIT_REASONS`). Empty without quantization."""
    layer_kinds: dict[int, str] = field(default_factory=dict)
    """LLM layer index -> `full-attention` / `linear-attention`."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "total_params": self.total_params,
            "trainable_params": self.trainable_params,
            "areas": {
                a: {"params": c.params, "trainable": c.trainable} for a, c in self.areas.items()
            },
            "lora_modules": list(self.lora_modules),
            "tied_head": self.tied_head or None,
            "not_quantized": dict(self.not_quantized),
        }


def strip_peft(name: str) -> str:
    """A parameter or module name as the base model names it."""
    return BASE_LAYER_RE.sub("", name.removeprefix(PEFT_PREFIX))


def param_numel(param: Any) -> int:
    """Logical element count; bitsandbytes packs 4-bit weights two to a byte."""
    quant_state = getattr(param, "quant_state", None)
    if quant_state is not None and getattr(quant_state, "shape", None) is not None:
        n = 1
        for d in quant_state.shape:
            n *= int(d)
        return n
    return int(param.numel())


def unique_parameters(model: Any) -> Iterator[tuple[str, Any]]:
    """named_parameters without repeats: tied embeddings are one tensor, counted once."""
    seen: set[int] = set()
    for name, param in model.named_parameters(remove_duplicate=False):
        if id(param) in seen:
            continue
        seen.add(id(param))
        yield name, param


def is_lora_param(name: str) -> bool:
    return LORA_PARAM_RE.search(name) is not None


def is_quantized_module(module: Any) -> bool:
    """A bitsandbytes linear itself (PEFT's LoRA wrapper around one shares the class name)."""
    cls = type(module)
    return cls.__module__.startswith("bitsandbytes") and cls.__name__ in (
        "Linear4bit",
        "Linear8bitLt",
    )


def list_linear_modules(model: Any) -> list[tuple[str, str]]:
    """(module name, class name) of every linear layer, including quantized ones."""
    out = []
    for name, module in model.named_modules():
        cls = type(module).__name__
        if cls in ("Linear", "Linear4bit", "Linear8bitLt") or cls.endswith("Linear"):
            out.append((name, cls))
    return out


def find_modules_by_pattern(model: Any, pattern: str) -> list[str]:
    """Module names that `re.fullmatch` the pattern — the rule PEFT applies to a string target."""
    rx = re.compile(pattern)
    return [n for n, _ in model.named_modules() if n and rx.fullmatch(n)]


def parameter_table(model: Any) -> list[tuple[str, tuple[int, ...], str, bool]]:
    """(name, shape, dtype, requires_grad) for every unique parameter."""
    return [
        (n, tuple(p.shape), str(p.dtype).removeprefix("torch."), bool(p.requires_grad))
        for n, p in unique_parameters(model)
    ]


def lora_target_regex(recipe: TrainingRecipe, family: Family) -> str | None:
    """One full-name regex for every LoRA module target of the recipe, or None."""
    parts = [
        rx
        for area in TRAINABLE_AREAS
        if recipe.area(area).mode == "lora"
        and (rx := family.lora_regex(area, recipe.area(area).targets)) is not None
    ]
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else "|".join(f"(?:{p})" for p in parts)


def lora_target_parameters(recipe: TrainingRecipe, family: Family) -> list[str]:
    """PEFT `target_parameters` (fused expert parameters) of the recipe's LoRA areas."""
    return [
        p
        for area in TRAINABLE_AREAS
        if recipe.area(area).mode == "lora"
        for p in family.expert_targets(area, recipe.area(area).targets)
    ]


def build_lora_config_for_recipe(recipe: TrainingRecipe, family: Family) -> Any:
    """PEFT LoraConfig with anchored full-name targets, or None when nothing uses LoRA."""
    regex = lora_target_regex(recipe, family)
    params = lora_target_parameters(recipe, family)
    if regex is None and not params:
        return None
    from peft import LoraConfig

    # A fused expert is matched by PEFT as a parameter-name suffix; only LLM layers hold
    # `mlp.experts`, so the suffix cannot reach the vision tower.
    return LoraConfig(
        r=recipe.lora.r,
        lora_alpha=recipe.lora.alpha,
        lora_dropout=recipe.lora.dropout,
        target_modules=regex if regex is not None else [],
        target_parameters=params or None,
        bias="none",
        task_type="CAUSAL_LM",
    )


def check_patterns(model: Any, recipe: TrainingRecipe, family: Family) -> list[str]:
    """Problems with the recipe's patterns on this model, before anything is changed."""
    problems: list[str] = []
    module_names = [n for n, _ in model.named_modules() if n]
    for area in TRAINABLE_AREAS:
        plan = recipe.area(area)
        if plan.mode == "lora":
            for target, rx in family.target_regexes(area, plan.targets).items():
                compiled = re.compile(rx)
                hits = [n for n in module_names if compiled.fullmatch(n)]
                if not hits:
                    problems.append(f"{area} LoRA target {target!r} matches no module")
                outside = [n for n in hits if family.area_of(n) != area]
                if outside:
                    problems.append(
                        f"{area} LoRA target {target!r} matches outside {area}: {outside[0]}"
                    )
            if family.expert_targets(area, plan.targets):
                rx_e = re.compile(family.expert_regex())
                if not any(rx_e.fullmatch(strip_peft(n)) for n, _ in unique_parameters(model)):
                    problems.append(f"{area} LoRA target 'experts' matches no parameter")
                if recipe.lora.dropout:
                    # PEFT's adapter on a 3-D parameter adds lora_B @ lora_A to the weight, so
                    # there is no per-input activation to drop (ParamWrapper refuses dropout).
                    problems.append(
                        f"{area} LoRA target 'experts' needs lora.dropout = 0, "
                        f"got {recipe.lora.dropout:g}"
                    )
        for part in plan.also_full:
            rx_p = re.compile(family.full_part_regex(area, part))
            if not any(rx_p.fullmatch(strip_peft(n)) for n, _ in unique_parameters(model)):
                problems.append(f"{area}.also_full {part!r} matches no parameter")
        for pattern in plan.patterns:
            prx = re.compile(pattern)
            hits = [strip_peft(n) for n, _ in unique_parameters(model) if prx.match(strip_peft(n))]
            if not hits:
                problems.append(f"{area} pattern {pattern!r} matches no parameter")
            outside = [n for n in hits if family.area_of(n) != area]
            if outside:
                problems.append(f"{area} pattern {pattern!r} matches outside {area}: {outside[0]}")
    return problems


def apply_freeze_policy(model: Any, recipe: TrainingRecipe, family: Family) -> None:
    """Set requires_grad on every parameter from the recipe: the single source of truth.

    LoRA parameters train when their area's mode is `lora`; other parameters train when their
    area is `full` and (if the area has patterns) a pattern matches the start of the name,
    or when their area is `lora` and an `also_full` part names them (the MoE router).
    lm_head and unknown areas never train.
    """
    compiled = {a: [re.compile(p) for p in recipe.area(a).patterns] for a in TRAINABLE_AREAS}
    parts = {
        a: [re.compile(family.full_part_regex(a, p)) for p in recipe.area(a).also_full]
        for a in TRAINABLE_AREAS
    }
    for name, param in unique_parameters(model):
        base = strip_peft(name)
        area = family.area_of(base)
        plan = recipe.area(area) if area in TRAINABLE_AREAS else None
        if plan is None:
            trainable = False
        elif is_lora_param(name):
            trainable = plan.mode == "lora"
        elif plan.mode == "lora":
            trainable = any(p.fullmatch(base) for p in parts[area])
        else:
            pats = compiled[area]
            trainable = plan.mode == "full" and (not pats or any(p.match(base) for p in pats))
        if trainable and not (param.is_floating_point() or param.is_complex()):
            trainable = False
        param.requires_grad_(trainable)


def lora_module_name(name: str, module: Any) -> str:
    """The base-model name of what an adapter adapts: the module, or for PEFT's ParamWrapper
    (a fused expert parameter) the parameter (`…mlp.experts.gate_up_proj`)."""
    base = strip_peft(name)
    param = getattr(module, "parameter_name", None)
    return f"{base}.{param}" if param else base


def summarize_trainables_by_area(model: Any, family: Family) -> TrainableSummary:
    counts = {a: [0, 0] for a in AREAS}
    trainable_names = []
    params = list(unique_parameters(model))
    for name, param in params:
        n = param_numel(param)
        area = family.area_of(strip_peft(name))
        counts[area][0] += n
        if param.requires_grad:
            counts[area][1] += n
            trainable_names.append(name.removeprefix(PEFT_PREFIX))
    lora_modules: list[str] = []
    quantized = []
    module_names = []
    for name, module in model.named_modules():
        module_names.append(name)
        if hasattr(module, "lora_A") and len(getattr(module, "lora_A", {})) > 0:
            lora = lora_module_name(name, module)
            if lora not in lora_modules:
                lora_modules.append(lora)
        if is_quantized_module(module):
            quantized.append(strip_peft(name))
    not_quantized: dict[str, int] = {}
    if quantized:
        qset = set(quantized)
        for name, param in params:
            base = strip_peft(name)
            if family.area_of(base) != "llm" or is_lora_param(name):
                continue
            if base.rpartition(".")[0] in qset and base.endswith(".weight"):
                continue
            reason = not_4bit_reason(base, family)
            not_quantized[reason] = not_quantized.get(reason, 0) + param_numel(param)
    areas = {a: AreaCount(params=c[0], trainable=c[1]) for a, c in counts.items()}
    return TrainableSummary(
        total_params=sum(c.params for c in areas.values()),
        trainable_params=sum(c.trainable for c in areas.values()),
        areas=areas,
        lora_modules=tuple(lora_modules),
        trainable_names=tuple(sorted(trainable_names)),
        quantized_modules=tuple(quantized),
        tied_head=tied_head(model),
        not_quantized=not_quantized,
        layer_kinds=llm_layer_kinds(module_names),
    )


def preflight_problems(
    summary: TrainableSummary, recipe: TrainingRecipe, family: Family
) -> list[str]:
    """Everything wrong with a prepared model's trainable set for this recipe."""
    problems = []
    for area in AREAS:
        count = summary.areas[area]
        mode = recipe.area(area).mode if area in TRAINABLE_AREAS else "frozen"
        if mode != "frozen" and count.trainable == 0:
            problems.append(f"{area} is '{mode}' in the recipe but has 0 trainable parameters")
        if mode == "frozen" and count.trainable:
            problems.append(f"{area} is frozen in the recipe but has {count.trainable} trainable")
    other = summary.areas["other"].params
    if other:
        problems.append(f"{other} parameters lie outside the known areas of {family.name}")
    for name in summary.lora_modules:
        area = family.area_of(name)
        if area not in TRAINABLE_AREAS or recipe.area(area).mode != "lora":
            problems.append(f"LoRA adapter outside a LoRA area: {name}")
            break
    for name in summary.quantized_modules:
        if family.area_of(name) != "llm":
            problems.append(f"module outside the LLM is quantized: {name}")
            break
    return problems


def summary_notes(summary: TrainableSummary, recipe: TrainingRecipe, family: Family) -> list[str]:
    """What the guard reports beside its verdict (ties, unquantized LLM parts, layer kinds)."""
    return guard_notes(
        recipe,
        family,
        tied=summary.tied_head,
        not_4bit=summary.not_quantized,
        layer_kinds=summary.layer_kinds,
    )


def prepare_trainables(model: Any, recipe: TrainingRecipe, family: Family) -> Any:
    """Inject LoRA (if any), apply the freeze policy and run the guard. Returns the model to train.

    Raises GuardError with every problem on one line; nothing is trained or written then.
    """
    if recipe.stages:
        raise BadInput(f"recipe {recipe.name!r} has stages; prepare each stage on its own")
    problems = check_patterns(model, recipe, family)
    if problems:
        raise GuardError(f"recipe {recipe.name!r} refused on {family.name}: {'; '.join(problems)}")
    lora_config = build_lora_config_for_recipe(recipe, family)
    if lora_config is not None:
        from peft import get_peft_model

        # On a meta-device model (inspect, the app's tree) the adapters need no initialised
        # values: creating them on meta is 3-4x faster on a 72B model and places the same
        # modules with the same names and requires_grad.
        on_meta = next(model.parameters()).device.type == "meta"
        model = get_peft_model(model, lora_config, low_cpu_mem_usage=on_meta)
    apply_freeze_policy(model, recipe, family)
    guard(model, recipe, family)
    return model


def guard(model: Any, recipe: TrainingRecipe, family: Family) -> TrainableSummary:
    """The pre-flight guard on a prepared model: returns its summary or raises GuardError."""
    summary = summarize_trainables_by_area(model, family)
    problems = preflight_problems(summary, recipe, family)
    if problems:
        raise GuardError(f"recipe {recipe.name!r} refused on {family.name}: {'; '.join(problems)}")
    return summary
