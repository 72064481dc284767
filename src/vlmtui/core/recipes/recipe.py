"""Training recipes: which areas train and how, the built-ins, and user recipes from TOML.

A recipe is plain data. What it means for a concrete model (which parameters, which LoRA
modules) is decided in `policy.py`, the one place every view of the trainable set comes from.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from vlmtui.core.errors import BadInput
from vlmtui.core.families import DEFAULT_LLM_TARGETS, DEFAULT_VISION_TARGETS, TRAINABLE_AREAS
from vlmtui.core.tomlio import check_keys

MODES = ("frozen", "full", "lora")
QUANTIZATIONS = ("none", "4bit", "8bit")
DTYPES = ("auto", "bfloat16", "float16", "float32")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


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
        ),
        # The projector trains with the encoder: a re-tuned encoder shifts the features the
        # merger maps into the LLM, and a frozen merger could not follow that shift.
        TrainingRecipe(
            name="r2-vision-only",
            description="Full fine-tune of the vision encoder and projector in bf16; LLM frozen",
            vision=AreaPlan(mode="full"),
            projector=AreaPlan(mode="full"),
            learning_rate=2e-5,
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
        ),
    )
}

_TOP_KEYS = {f.name for f in dataclasses.fields(TrainingRecipe)} - {"name", "source"} | {"extends"}
_AREA_KEYS = {f.name for f in dataclasses.fields(AreaPlan)}
_LORA_KEYS = {f.name for f in dataclasses.fields(LoraSettings)}


def _number(where: str, value: Any, kind: type, minimum: float | None = None) -> Any:
    ok = isinstance(value, kind) or (kind is float and isinstance(value, int))
    if not ok or isinstance(value, bool):
        raise BadInput(f"{where}: expected {kind.__name__}, got {value!r}")
    if minimum is not None and value < minimum:
        raise BadInput(f"{where}: must be at least {minimum}, got {value!r}")
    return kind(value)


def _str_list(where: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BadInput(f"{where}: expected a list of strings, got {value!r}")
    return tuple(value)


def _area_from(where: str, base: AreaPlan, data: Any) -> AreaPlan:
    if isinstance(data, str):
        data = {"mode": data}
    if not isinstance(data, dict):
        raise BadInput(f"{where}: expected a table or a mode string, got {data!r}")
    check_keys(where, data, _AREA_KEYS)
    plan = base
    if "mode" in data:
        plan = replace(plan, mode=data["mode"])
        if data["mode"] != "lora" and "targets" not in data:
            plan = replace(plan, targets=())
    if "targets" in data:
        plan = replace(plan, targets=_str_list(f"{where}.targets", data["targets"]))
    if "patterns" in data:
        pats = _str_list(f"{where}.patterns", data["patterns"])
        for p in pats:
            try:
                re.compile(p)
            except re.error as exc:
                raise BadInput(f"{where}.patterns: {p!r} is not a valid regex ({exc})") from None
        plan = replace(plan, patterns=pats)
    if "learning_rate" in data:
        lr = _number(f"{where}.learning_rate", data["learning_rate"], float, 0)
        plan = replace(plan, learning_rate=lr)
    return plan


def recipe_from_dict(
    name: str, data: Mapping[str, Any], source: str, known: Mapping[str, TrainingRecipe]
) -> TrainingRecipe:
    """Build and validate one recipe from a TOML table. Errors name source, recipe and field."""
    where = f"{source}: recipe {name!r}"
    if not NAME_RE.match(name):
        raise BadInput(f"{where}: name must be letters, digits, '.', '_' or '-' (max 64)")
    if not isinstance(data, Mapping):
        raise BadInput(f"{where}: expected a table")
    check_keys(where, data, _TOP_KEYS)
    base = TrainingRecipe(name=name)
    if "extends" in data:
        parent = data["extends"]
        if parent not in known:
            raise BadInput(f"{where}: extends: unknown recipe {parent!r}")
        base = replace(known[parent], description="")
    recipe = replace(base, name=name, source=source)
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        fld = f"{where}: {key}"
        if key == "extends":
            continue
        if key in TRAINABLE_AREAS:
            kwargs[key] = _area_from(f"{where}: {key}", recipe.area(key), value)
        elif key == "lora":
            if not isinstance(value, dict):
                raise BadInput(f"{fld}: expected a table")
            check_keys(fld, value, _LORA_KEYS)
            lora = recipe.lora
            if "r" in value:
                lora = replace(lora, r=_number(f"{fld}.r", value["r"], int, 1))
            if "alpha" in value:
                lora = replace(lora, alpha=_number(f"{fld}.alpha", value["alpha"], int, 1))
            if "dropout" in value:
                lora = replace(lora, dropout=_number(f"{fld}.dropout", value["dropout"], float, 0))
            kwargs["lora"] = lora
        elif key in ("description", "quantization", "compute_dtype"):
            if not isinstance(value, str):
                raise BadInput(f"{fld}: expected a string, got {value!r}")
            kwargs[key] = value
        elif key in ("learning_rate", "epochs", "warmup_ratio"):
            kwargs[key] = _number(fld, value, float, 0)
        elif key in ("max_steps", "batch_size", "grad_accum"):
            kwargs[key] = _number(fld, value, int, 1)
        elif key == "gradient_checkpointing":
            if not isinstance(value, bool):
                raise BadInput(f"{fld}: expected true or false, got {value!r}")
            kwargs[key] = value
        elif key == "stages":
            kwargs[key] = _str_list(fld, value)
    recipe = replace(recipe, **kwargs)
    validate_recipe(recipe, known, where)
    return recipe


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
    if recipe.projector.mode == "lora":
        raise BadInput(f"{where}: projector.mode: 'lora' is not supported (use 'full' or 'frozen')")
    if all(recipe.area(a).mode == "frozen" for a in TRAINABLE_AREAS):
        raise BadInput(f"{where}: every area is frozen, nothing would train")
    if recipe.quantized and recipe.llm.mode == "full":
        raise BadInput(
            f"{where}: quantization: a {recipe.quantization} LLM cannot train in mode 'full'"
        )


def load_recipe_file(path: Path, known: Mapping[str, TrainingRecipe]) -> dict[str, TrainingRecipe]:
    """Recipes of one TOML file: `[recipe.NAME]` tables. Later ones may extend earlier ones."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise BadInput(f"{path}: cannot read recipe file ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise BadInput(f"{path}: not valid TOML ({exc})") from None
    unknown = set(data) - {"recipe"}
    if unknown:
        raise BadInput(f"{path}: unknown top-level key {sorted(unknown)[0]!r} (use [recipe.NAME])")
    tables = data.get("recipe", {})
    if not isinstance(tables, dict):
        raise BadInput(f"{path}: 'recipe' must be a table of [recipe.NAME] tables")
    merged = dict(known)
    out: dict[str, TrainingRecipe] = {}
    for name, table in tables.items():
        if name in BUILTIN_RECIPES:
            raise BadInput(f"{path}: recipe {name!r}: name is taken by a built-in recipe")
        recipe = recipe_from_dict(name, table, str(path), merged)
        merged[name] = out[name] = recipe
    return out


def user_recipe_dir() -> Path:
    from vlmtui.core.paths import config_dir

    return config_dir() / "recipes"


def all_recipes(extra_files: Iterable[Path] = ()) -> dict[str, TrainingRecipe]:
    """Built-ins, then every `*.toml` in the user's recipes folder, then `extra_files`."""
    recipes = dict(BUILTIN_RECIPES)
    folder = user_recipe_dir()
    files = sorted(folder.glob("*.toml")) if folder.is_dir() else []
    for path in [*files, *extra_files]:
        recipes.update(load_recipe_file(Path(path), recipes))
    return recipes


def get_recipe(name: str, extra_files: Iterable[Path] = ()) -> TrainingRecipe:
    recipes = all_recipes(extra_files)
    if name not in recipes:
        raise BadInput(f"unknown recipe {name!r} (known: {', '.join(recipes)})")
    return recipes[name]


def stage_recipes(recipe: TrainingRecipe, extra_files: Iterable[Path] = ()) -> list[TrainingRecipe]:
    """The single-stage recipes a recipe runs, in order (itself when it has no stages)."""
    if not recipe.stages:
        return [recipe]
    known = all_recipes(extra_files)
    known[recipe.name] = recipe
    return [known[s] for s in recipe.stages]


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
