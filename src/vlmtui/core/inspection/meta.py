"""Applying recipes to a model built on the meta device: what trains, at what size.

The tree in `tree.py` only shows a marking; this module computes it. The trainable set
comes from the very functions the trainer runs (`policy.prepare_trainables`: LoRA injection
with PEFT, the freeze policy and the pre-flight guard), applied to the real transformers
model built on the meta device (`metaprep.py`, quantization included). The per-parameter
results (`ParamInfo`) feed the memory estimate.

The TUI keeps one `ModelInspector` per model; see `tree.py` for typical use.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from vlmtui.core.families import AREAS, Family
from vlmtui.core.inspection.checkpoint import mtp_head_params
from vlmtui.core.inspection.memory import (
    MemoryAssumptions,
    MemoryEstimate,
    ModelDims,
    ParamInfo,
    alternatives,
    dims_from_config,
    estimate_memory,
)
from vlmtui.core.inspection.metaprep import marking_and_params, prepare_meta_stage
from vlmtui.core.inspection.tree import Marking, ModelTree
from vlmtui.core.model.resolve import ModelRef, build_meta_model, resolve_model
from vlmtui.core.recipes.notes import lora_by_layer_kind
from vlmtui.core.recipes.policy import TrainableSummary
from vlmtui.core.recipes.recipe import TrainingRecipe


@dataclass(frozen=True)
class StageResult:
    """One single-stage recipe applied to the meta model by the training code path."""

    index: int
    """1-based stage number (1 for a single-stage recipe)."""
    recipe: TrainingRecipe
    summary: TrainableSummary
    """`policy.summarize_trainables_by_area` of the prepared model (what the guard checked)."""
    marking: Marking
    params: tuple[ParamInfo, ...] = field(repr=False)
    """Every unique parameter with dtype and trainability as training sets them."""
    guard: str = ""
    """The pre-flight guard's verdict (it passed; a refusal raises instead)."""
    notes: tuple[str, ...] = ()
    """What the guard reports beside the verdict (`policy.summary_notes`)."""

    def memory(self, dims: ModelDims, assumptions: MemoryAssumptions) -> MemoryEstimate:
        """The GPU memory estimate of this stage under the given training shape."""
        return estimate_memory(
            self.params,
            dims,
            replace(
                assumptions,
                gradient_checkpointing=assumptions.gradient_checkpointing
                or self.recipe.gradient_checkpointing,
                lora_dropout=self.recipe.lora.dropout if self.recipe.uses_lora else 0.0,
                compute_dtype=_dtype_name(self.recipe),
            ),
            vision_on_backward=self.recipe.vision.mode != "frozen"
            or self.recipe.projector.mode != "frozen",
            vision_trains=self.recipe.vision.mode != "frozen",
            lora_inputs_per_layer=_per_block(self.marking, "llm", dims.layers),
            vision_lora_inputs_per_block=_per_block(self.marking, "vision", dims.vision_layers),
        )

    def alternatives(self, dims: ModelDims, assumptions: MemoryAssumptions) -> list[str]:
        """When this stage does not fit: the strategies and sequence lengths that would."""
        if self.memory(dims, assumptions).fits is not False:
            return []
        return alternatives(lambda a: self.memory(dims, a), assumptions)

    def to_dict(self) -> dict[str, Any]:
        d = self.summary.to_dict()
        return {
            "stage": self.index,
            "recipe": self.recipe.name,
            **d,
            "quantized_modules": list(self.summary.quantized_modules),
            "quantization": self.recipe.quantization,
            "guard": self.guard,
            "notes": list(self.notes),
            "lora_by_layer_kind": lora_by_layer_kind(
                self.summary.lora_modules, self.summary.layer_kinds
            ),
            "trainable_names": list(self.summary.trainable_names),
        }


def _per_block(marking: Marking, area: str, blocks: int) -> int:
    prefix = "model.language_model." if area == "llm" else "model.visual.blocks."
    total = sum(w for n, w in marking.lora_in_features.items() if n.startswith(prefix))
    return total // blocks if blocks else 0


def _dtype_name(recipe: TrainingRecipe) -> str:
    return "bfloat16" if recipe.compute_dtype == "auto" else recipe.compute_dtype


@dataclass(frozen=True)
class Inspection:
    """A model inspected under a recipe: one StageResult per stage (r3 has two)."""

    model: ModelRef
    recipe: TrainingRecipe | None
    """None: the bare model, nothing trains."""
    stages: tuple[StageResult, ...]
    dims: ModelDims
    base_summary: TrainableSummary | None
    """The bare model's per-area counts (nothing trainable); set only without a recipe."""
    mtp_params: int = 0
    """Parameters of the checkpoint's multi-token-prediction head, which transformers does
    not build (Qwen3.5/3.6): in the published count, never loaded or trained."""

    @property
    def marking(self) -> Marking:
        """What the recipe trains over all its stages."""
        name = self.recipe.name if self.recipe else ""
        return Marking.union((s.marking for s in self.stages), name)

    @property
    def trainable_names(self) -> list[str]:
        """Every parameter name any stage trains, sorted (no PEFT prefix)."""
        return sorted({n for s in self.stages for n in s.summary.trainable_names})

    def memory(self, assumptions: MemoryAssumptions) -> list[MemoryEstimate]:
        """One estimate per stage."""
        return [s.memory(self.dims, assumptions) for s in self.stages]

    def to_dict(self, assumptions: MemoryAssumptions | None = None) -> dict[str, Any]:
        """The `vlmtui inspect --json` object (DESIGN.md's keys plus extras).

        `total_params` counts LoRA adapters too (as the guard's summary does); `base_params`
        is the model without them. For a multi-stage recipe, `total_params` and each area's
        `params` are the last stage's model; `trainable_params`, area `trainable`,
        `lora_modules` and `trainable_names` cover every stage (a parameter trained in two
        stages counts once).
        `stages` has each stage on its own.
        """
        last = self.stages[-1].summary if self.stages else self.base_summary
        assert last is not None
        out: dict[str, Any] = {
            "model": self.model.name,
            "source": self.model.source,
            "family": self.model.family.name,
            "recipe": self.recipe.name if self.recipe else None,
            "total_params": last.total_params,
            "base_params": (
                sum(p.numel for p in self.stages[-1].params if not p.lora)
                if self.stages
                else last.total_params
            ),
            "mtp_params": self.mtp_params,
            "tied_head": last.tied_head or None,
            "layer_kinds": {str(i): k for i, k in sorted(last.layer_kinds.items())},
        }
        out["checkpoint_params"] = out["base_params"] + self.mtp_params
        sizes: dict[str, int] = {}
        for s in self.stages:
            for p in s.params:
                if p.trainable:
                    sizes[p.name] = p.numel
        area_of = self.model.family.area_of
        trained = {a: 0 for a in AREAS}
        for n, k in sizes.items():
            trained[area_of(n)] += k
        out["trainable_params"] = sum(sizes.values())
        out["areas"] = {a: {"params": last.areas[a].params, "trainable": trained[a]} for a in AREAS}
        lora: list[str] = []
        for s in self.stages:
            lora.extend(m for m in s.summary.lora_modules if m not in lora)
        out["lora_modules"] = lora
        out["trainable_names"] = self.trainable_names
        out["quantized_modules"] = sorted(
            {m for s in self.stages for m in s.summary.quantized_modules}
        )
        out["guard"] = "; ".join(s.guard for s in self.stages) if self.stages else None
        out["stages"] = [s.to_dict() for s in self.stages]
        if assumptions is not None and self.stages:
            out["memory"] = [
                {**m.to_dict(), "would_fit": s.alternatives(self.dims, assumptions)}
                for s, m in zip(self.stages, self.memory(assumptions), strict=True)
            ]
        return out


def guard_verdict(summary: TrainableSummary, recipe: TrainingRecipe) -> str:
    """The passed guard's verdict as one line."""
    modes = ", ".join(f"{a} {recipe.area(a).mode}" for a in ("vision", "projector", "llm"))
    q = (
        f"; {len(summary.quantized_modules)} LLM linears {recipe.quantization}, none outside"
        if recipe.quantized
        else ""
    )
    return f"passed: every area as the recipe says ({modes}); lm_head and other frozen{q}"


class ModelInspector:
    """One model: its tree built once, each recipe's result computed once and cached.

    Not thread-safe; the TUI should call it from one worker.
    """

    def __init__(self, model: str | ModelRef, recipe_files: Iterable[Any] = ()) -> None:
        self.ref = model if isinstance(model, ModelRef) else resolve_model(model)
        self.recipe_files = tuple(recipe_files)
        self._spare: Any = None
        self._tree: ModelTree | None = None
        self._dims: ModelDims | None = None
        self._base_summary: TrainableSummary | None = None
        self._mtp = 0
        self._cache: dict[TrainingRecipe, Inspection] = {}

    @property
    def family(self) -> Family:
        return self.ref.family

    def _ensure_base(self) -> None:
        if self._tree is not None:
            return
        import torch

        model = build_meta_model(self.ref, torch.bfloat16)
        self._tree = ModelTree.from_model(model, self.family, self.ref.name)
        self._dims = dims_from_config(model.config)
        self._mtp = mtp_head_params(model, self.family)
        self._spare = model

    def base_summary(self) -> TrainableSummary:
        """Per-area counts of the bare model (nothing trainable)."""
        if self._base_summary is None:
            from vlmtui.core.recipes.policy import summarize_trainables_by_area

            self._ensure_base()
            model = self._spare
            if model is None:
                import torch

                model = build_meta_model(self.ref, torch.bfloat16)
            model.requires_grad_(False)
            self._base_summary = summarize_trainables_by_area(model, self.family)
            model.requires_grad_(True)  # as from_pretrained leaves it
        return self._base_summary

    def tree(self) -> ModelTree:
        """The model's structure (unmarked root in `.root`)."""
        self._ensure_base()
        assert self._tree is not None
        return self._tree

    @property
    def dims(self) -> ModelDims:
        self._ensure_base()
        assert self._dims is not None
        return self._dims

    def _fresh_model(self) -> Any:
        model, self._spare = self._spare, None
        return model

    def inspect(self, recipe: TrainingRecipe | None) -> Inspection:
        """Apply a recipe (each stage on a fresh meta model, like training); cached."""
        self._ensure_base()
        assert self._dims is not None
        if recipe is None:
            return Inspection(self.ref, None, (), self._dims, self.base_summary(), self._mtp)
        if recipe in self._cache:
            return self._cache[recipe]
        from vlmtui.core.recipes.catalog import stage_recipes
        from vlmtui.core.recipes.policy import summarize_trainables_by_area, summary_notes

        stages = []
        for i, stage in enumerate(stage_recipes(recipe, self.recipe_files), start=1):
            done = self._cache.get(stage)
            if done is not None and len(done.stages) == 1:  # a stage inspected on its own
                stages.append(replace(done.stages[0], index=i))
                continue
            model = prepare_meta_stage(self.ref, stage, self._fresh_model())
            summary = summarize_trainables_by_area(model, self.family)
            marking, params = marking_and_params(model, self.family, stage.name)
            stages.append(
                StageResult(
                    index=i,
                    recipe=stage,
                    summary=summary,
                    marking=marking,
                    params=params,
                    guard=guard_verdict(summary, stage),
                    notes=tuple(summary_notes(summary, stage, self.family)),
                )
            )
            del model
        result = Inspection(self.ref, recipe, tuple(stages), self._dims, None, self._mtp)
        self._cache[recipe] = result
        return result
