"""Two recipes on one model, compared: what `vlmtui inspect --diff` and the app's compare show.

The front ends only render; what differs (per-area mode and counts, setup and peak memory,
modules whose trainable state changes) is decided here once, so the CLI's table and its JSON
agree; module changes come from `views.diff_trees`, which the app's compare (working on cached
markings) calls too. Works on `meta.Inspection` results; no torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from vlmtui.core.families import AREAS
from vlmtui.core.inspection.views import StateChange, diff_trees

if TYPE_CHECKING:
    from vlmtui.core.inspection.memory import MemoryAssumptions, MemoryEstimate
    from vlmtui.core.inspection.meta import Inspection
    from vlmtui.core.inspection.tree import ModelTree

_RECIPE_AREAS = ("vision", "projector", "llm")


def state_changes(tree: ModelTree, a: Inspection, b: Inspection) -> tuple[StateChange, ...]:
    """Modules whose trainable state differs between two recipes (all stages of each)."""
    return tuple(diff_trees(tree.mark(a.marking), tree.mark(b.marking)))


def area_modes(result: Inspection, area: str) -> str:
    """The area's mode over the recipe's stages: `lora`, or `full→lora` when stages differ.
    Areas a recipe has no setting for (lm_head, other) are always frozen."""
    if area not in _RECIPE_AREAS:
        return "frozen"
    ms = [s.recipe.area(area).mode for s in result.stages]
    return "→".join(dict.fromkeys(ms)) if len(set(ms)) > 1 else ms[0]


def _peak(result: Inspection, assumptions: MemoryAssumptions) -> MemoryEstimate:
    return max(result.memory(assumptions), key=lambda m: m.total)


def setup_diff(
    results: list[Inspection], names: list[str], assumptions: MemoryAssumptions
) -> dict[str, Any]:
    """Quantization, compute dtype, checkpointing and peak memory of two recipes, and the
    memory difference (second minus first, bytes per GPU)."""
    out: dict[str, Any] = {}
    for name, res in zip(names, results, strict=True):
        stages = res.stages
        peak = _peak(res, assumptions)
        out[name] = {
            "quantization": "→".join(dict.fromkeys(s.recipe.quantization for s in stages)),
            "compute_dtype": "→".join(dict.fromkeys(s.recipe.compute_dtype for s in stages)),
            "gradient_checkpointing": any(s.recipe.gradient_checkpointing for s in stages),
            "memory_total": peak.total,
            "weights_by_dtype": peak.weights_by_dtype,
        }
    out["memory_difference"] = out[names[1]]["memory_total"] - out[names[0]]["memory_total"]
    return out


@dataclass(frozen=True)
class RecipeDiff:
    """Two recipes on one model: per-area modes and counts, setup, changed modules."""

    model: str
    family: str
    names: tuple[str, str]
    areas: dict[str, tuple[dict[str, Any], dict[str, Any]]]
    """area -> (first recipe's, second's) `{"mode", "params", "trainable", ...}`."""
    setup: dict[str, Any]
    """`setup_diff`'s object."""
    changes: tuple[StateChange, ...]

    @property
    def areas_differ(self) -> list[str]:
        """Areas whose mode or counts differ, in AREAS order."""
        return [area for area, (x, y) in self.areas.items() if x != y]

    def to_json(self) -> dict[str, Any]:
        """The `vlmtui inspect --diff --json` object."""
        n0, n1 = self.names
        return {
            "model": self.model,
            "family": self.family,
            "diff": [n0, n1],
            "areas": {area: {n0: x, n1: y} for area, (x, y) in self.areas.items()},
            "areas_differ": self.areas_differ,
            "setup": self.setup,
            "changes": [
                {
                    "name": c.name,
                    "count": c.count,
                    "class": c.cls,
                    "area": c.area,
                    n0: c.before,
                    n1: c.after,
                    "trainable": {n0: c.trainable_before, n1: c.trainable_after},
                }
                for c in self.changes
            ],
        }


def compare_recipes(
    tree: ModelTree, a: Inspection, b: Inspection, assumptions: MemoryAssumptions
) -> RecipeDiff:
    """`a` and `b`: the same model inspected under two recipes (neither None)."""
    assert a.recipe is not None and b.recipe is not None
    names = [a.recipe.name, b.recipe.name]
    da, db = a.to_dict(), b.to_dict()
    areas = {
        area: (
            {"mode": area_modes(a, area), **da["areas"][area]},
            {"mode": area_modes(b, area), **db["areas"][area]},
        )
        for area in AREAS
    }
    return RecipeDiff(
        model=a.model.name,
        family=a.model.family.name,
        names=(names[0], names[1]),
        areas=areas,
        setup=setup_diff([a, b], names, assumptions),
        changes=state_changes(tree, a, b),
    )
