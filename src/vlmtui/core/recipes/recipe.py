"""Training recipes: which areas train and how, the built-ins, and user recipes from TOML.

A recipe is plain data. What it means for a concrete model (which parameters, which LoRA
modules) is decided in `policy.py`, the one place every view of the trainable set comes from.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from vlmtui.core.errors import BadInput
from vlmtui.core.families import DEFAULT_LLM_TARGETS, DEFAULT_VISION_TARGETS, TRAINABLE_AREAS

MODES = ("frozen", "full", "lora")
QUANTIZATIONS = ("none", "4bit", "8bit")
DTYPES = ("auto", "bfloat16", "float16", "float32")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
MAX_COUNT = 2**31 - 1
"""Largest step count, rank, batch or process count accepted (recipe files, --max-steps,
--gpus): past it none is meant, and SQLite, torch and numpy fail on it mid-run instead."""


@dataclass(frozen=True)
class AreaPlan:
    """How one area (vision, projector, llm) trains."""

    mode: str = "frozen"
    """`frozen`, `full` (every parameter trains) or `lora` (adapters on `targets`)."""
    targets: tuple[str, ...] = ()
    """LoRA target names for this area (see `families.py` for each family's names)."""
    patterns: tuple[str, ...] = ()
    """For `full`: regexes anchored at the name start (re.match) selecting part of the area."""
    learning_rate: float | None = None
    """Learning rate of this area's parameters; None uses the recipe's."""
    also_full: tuple[str, ...] = ()
    """For `lora`: named parts of the area trained in full beside the adapters (`router`: the
    MoE router weights, which LoRA cannot reach)."""


@dataclass(frozen=True)
class LoraSettings:
    r: int = 16
    """Adapter rank."""
    alpha: int = 32
    """Scaling numerator (scale = alpha / r)."""
    dropout: float = 0.05
    """Dropout on the adapter input."""


@dataclass(frozen=True)
class TrainingRecipe:
    """One way of fine-tuning a model: a mode per area plus optimisation settings."""

    name: str
    description: str = ""
    vision: AreaPlan = field(default_factory=AreaPlan)
    """The vision encoder blocks and patch embedding (`model.visual.*` minus the merger)."""
    projector: AreaPlan = field(default_factory=AreaPlan)
    """The merger that maps vision features into the LLM (`model.visual.merger.*`)."""
    llm: AreaPlan = field(default_factory=AreaPlan)
    """The language model (`model.language_model.*`); lm_head always stays frozen."""
    lora: LoraSettings = field(default_factory=LoraSettings)
    quantization: str = "none"
    """Quantization of the frozen LLM linears: `none`, `4bit` (NF4, double quant), `8bit`."""
    compute_dtype: str = "auto"
    """`auto`: bfloat16 on GPU, float32 on CPU."""
    learning_rate: float = 2e-4
    max_steps: int | None = None
    """Optimizer steps; None trains for `epochs`."""
    epochs: float = 1.0
    batch_size: int = 1
    grad_accum: int = 1
    gradient_checkpointing: bool = False
    """Recompute each block's activations in backward (non-reentrant) instead of keeping them:
    a 72B model's 80 layers otherwise keep ~26 GiB per 1024 tokens. The built-ins turn it on."""
    upcast_norms: bool = False
    """Quantized recipes: keep the frozen norm weights in fp32 (PEFT's old blanket upcast did
    this for every non-4-bit weight); off keeps them in the compute dtype."""
    warmup_ratio: float = 0.0
    stages: tuple[str, ...] = ()
    """Names of recipes run in order, each starting from the previous stage's saved weights."""
    source: str = "built-in"
    """Where the recipe was defined: `built-in` or a file path."""

    def area(self, name: str) -> AreaPlan:
        return getattr(self, name)

    @property
    def uses_lora(self) -> bool:
        return any(self.area(a).mode == "lora" for a in TRAINABLE_AREAS)

    @property
    def quantized(self) -> bool:
        return self.quantization != "none"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


BUILTIN_RECIPES: dict[str, TrainingRecipe] = {
    r.name: r
    for r in (
        TrainingRecipe(
            name="r1-llm-only",
            description="QLoRA: 4-bit NF4 LLM with LoRA on q,k,v,o,gate,up,down; vision frozen",
            llm=AreaPlan(mode="lora", targets=DEFAULT_LLM_TARGETS),
            quantization="4bit",
            learning_rate=2e-4,
            gradient_checkpointing=True,
        ),
        # Checkpointing covers the vision blocks and the LLM layers alike: the loss sits at the
        # LLM's output, so the vision gradient flows back through every (frozen) LLM layer.
        # The projector trains with the encoder: a re-tuned encoder shifts the features the
        # merger maps into the LLM, and a frozen merger could not follow that shift.
        TrainingRecipe(
            name="r2-vision-only",
            description="Full fine-tune of the vision encoder and projector in bf16; LLM frozen",
            vision=AreaPlan(mode="full"),
            projector=AreaPlan(mode="full"),
            learning_rate=2e-5,
            gradient_checkpointing=True,
        ),
        TrainingRecipe(
            name="r3-two-stage",
            description="Stage 1 = r2-vision-only, then r1-llm-only from stage 1's weights",
            stages=("r2-vision-only", "r1-llm-only"),
        ),
        # Documented choice: bf16 base (no quantization), since both towers carry adapters
        # and 4-bit would only apply to the LLM anyway; LoRA makes the memory small enough.
        TrainingRecipe(
            name="r4-joint",
            description="LoRA on vision blocks (qkv, MLP) and on the LLM; projector frozen",
            vision=AreaPlan(mode="lora", targets=DEFAULT_VISION_TARGETS),
            llm=AreaPlan(mode="lora", targets=DEFAULT_LLM_TARGETS),
            learning_rate=1e-4,
            gradient_checkpointing=True,
        ),
    )
}


def check_count(flag: str, value: int | None) -> None:
    """A count given on the command line (None: not given): 1 to MAX_COUNT, else BadInput."""
    if value is not None and not 1 <= value <= MAX_COUNT:
        bound = "at least 1" if value < 1 else f"at most {MAX_COUNT}"
        raise BadInput(f"{flag}: must be {bound}, got {value}")


def validate_recipe(
    recipe: TrainingRecipe, known: Mapping[str, TrainingRecipe], where: str | None = None
) -> None:
    """Refuse impossible combinations, naming the field."""
    where = where or f"{recipe.source}: recipe {recipe.name!r}"
    if recipe.quantization not in QUANTIZATIONS:
        raise BadInput(
            f"{where}: quantization: unknown value {recipe.quantization!r} "
            f"(one of {', '.join(QUANTIZATIONS)})"
        )
    if recipe.compute_dtype not in DTYPES:
        raise BadInput(
            f"{where}: compute_dtype: unknown value {recipe.compute_dtype!r} "
            f"(one of {', '.join(DTYPES)})"
        )
    for area in ("", *TRAINABLE_AREAS):
        lr = recipe.area(area).learning_rate if area else recipe.learning_rate
        if lr is not None and lr <= 0:
            key = f"{area}.learning_rate" if area else "learning_rate"
            raise BadInput(f"{where}: {key}: must be greater than 0, got {lr!r}")
    if recipe.stages:
        for stage in recipe.stages:
            if stage not in known:
                raise BadInput(f"{where}: stages: unknown recipe {stage!r}")
            if known[stage].stages:
                raise BadInput(f"{where}: stages: {stage!r} is itself multi-stage")
        return
    for area in TRAINABLE_AREAS:
        plan = recipe.area(area)
        if plan.mode not in MODES:
            raise BadInput(
                f"{where}: {area}.mode: unknown mode {plan.mode!r} (one of {', '.join(MODES)})"
            )
        if plan.mode == "lora" and not plan.targets:
            raise BadInput(f"{where}: {area}.targets: mode 'lora' needs at least one target")
        if plan.mode != "lora" and plan.targets:
            raise BadInput(f"{where}: {area}.targets: targets need mode 'lora'")
        if plan.mode != "full" and plan.patterns:
            raise BadInput(f"{where}: {area}.patterns: patterns need mode 'full'")
        if plan.mode != "lora" and plan.also_full:
            raise BadInput(f"{where}: {area}.also_full: also_full needs mode 'lora'")
    if recipe.projector.mode == "lora":
        raise BadInput(f"{where}: projector.mode: 'lora' is not supported (use 'full' or 'frozen')")
    if all(recipe.area(a).mode == "frozen" for a in TRAINABLE_AREAS):
        raise BadInput(f"{where}: every area is frozen, nothing would train")
    if recipe.quantized and recipe.llm.mode == "full":
        raise BadInput(
            f"{where}: quantization: a {recipe.quantization} LLM cannot train in mode 'full'"
        )


def recipe_summary(
    recipe: TrainingRecipe, known: Mapping[str, TrainingRecipe] = BUILTIN_RECIPES
) -> dict[str, Any]:
    """The `vlmtui recipes --json` object (DESIGN.md's contract plus extras).

    A multi-stage recipe reports, per area, the strongest mode any stage uses
    (full > lora > frozen), and its stages in `stages`.
    """
    stages = [known[s] for s in recipe.stages] if recipe.stages else [recipe]
    rank = {"frozen": 0, "lora": 1, "full": 2}

    def mode(area: str) -> str:
        return max((s.area(area).mode for s in stages), key=rank.__getitem__)

    return {
        "name": recipe.name,
        "description": recipe.description,
        "quantized": any(s.quantized for s in stages),
        "quantization": "/".join(s.quantization for s in stages),
        "vision": mode("vision"),
        "projector": mode("projector"),
        "llm": mode("llm"),
        "learning_rate": stages[0].learning_rate if recipe.stages else recipe.learning_rate,
        "stages": [{"name": s.name, **{a: s.area(a).mode for a in TRAINABLE_AREAS}} for s in stages]
        if recipe.stages
        else [],
        "source": recipe.source,
    }
