"""A model's module tree, marked with what a recipe trains.

This is the data structure the TUI and `vlmtui inspect` show: `ModelTree` is a model's
module structure built once (from a meta or real model, PEFT wrappers folded away), and `mark`
gives the `ModuleNode` tree for one recipe's `Marking`; `views.py` holds the views the two
front ends render (`collapse`, `filter_nodes`, `group_names`, `diff_trees`). Nothing here
imports torch or applies a recipe; `meta.py` computes the markings by preparing a meta model
the way training does.

Typical use (the TUI keeps one `inspection.ModelInspector` per model)::

    insp = ModelInspector("Qwen/Qwen2-VL-72B-Instruct")
    tree = insp.tree()                       # structure, built once per model
    result = insp.inspect(get_recipe("r1-llm-only"))   # cached per recipe
    root = tree.mark(result.stages[0].marking)         # cheap: one pass over the tree
    shown = views.collapse(root)             # `blocks.0–31 ×32` style repeat runs
    for node in shown.walk(): ...

Counts in a `ModuleNode` are parameters of the base model (`own_params`, `total_params`);
LoRA adapter parameters a recipe adds are in `lora_params` and, when they train, in
`trainable_params`. Tied parameters (lm_head sharing the embedding) count once, at the
module that registers them first; the other module shows them in `shared_params`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from vlmtui.core.families import Family

STATES = ("frozen", "full", "lora", "mixed")
"""Trainable state of a module: nothing trains / every base parameter trains (no adapters) /
adapters train and no base parameter does / anything else (part trains, or full and LoRA)."""

_PEFT_INTERNAL = re.compile(r"\.(?:lora_[A-Za-z_]+|base_layer)(?:\.|$)")
QUANT_CLASSES = {"Linear4bit": "4bit", "Linear8bitLt": "8bit"}
"""bitsandbytes linear class name -> the `quant` tag a `ModuleNode` / `Marking` carries."""


# --- the tree ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ModuleNode:
    """One module of the model (or a run of identical sibling modules, see `repeat`).

    For a collapsed run (`repeat > 1`) every count describes ONE member (they are identical
    by construction); multiply by `repeat` for the run. `children` are the first member's.
    """

    name: str
    """Full dotted module path as the base model names it (no PEFT prefix); "" for the root.
    For a collapsed run: the first member's path."""
    short: str
    """Last path component (`q_proj`, `3`); for a collapsed run the index range `0–31`."""
    cls: str
    """Class name in the base model (`Linear`, `Qwen2VLDecoderLayer`); see `quant`."""
    area: str
    """`vision`, `projector`, `llm`, `lm_head` or `other` (`families.Family.area_of`)."""
    own_params: int
    """Base parameters registered directly on this module."""
    total_params: int
    """Base parameters of this module and all its descendants."""
    shared_params: int = 0
    """Parameters registered here that are the same tensor as one counted elsewhere (ties)."""
    trainable_params: int = 0
    """Parameters that train under the marking, adapters included, in the whole subtree."""
    lora_params: int = 0
    """LoRA adapter parameters in the whole subtree (0 unmarked / without LoRA)."""
    state: str = "frozen"
    """Subtree state, one of STATES."""
    own_state: str = "frozen"
    """State of this module's own parameters and adapters only."""
    quant: str = ""
    """`4bit` / `8bit` when training replaces this linear with a bitsandbytes one."""
    children: tuple[ModuleNode, ...] = ()
    repeat: int = 1
    """Number of identical consecutive siblings this node stands for (see `collapse`)."""
    members: tuple[str, ...] = ()
    """For a collapsed run: every member's path, in order; empty otherwise."""

    @property
    def label(self) -> str:
        """`q_proj`, or `0–31 ×32` for a collapsed run."""
        return f"{self.short} ×{self.repeat}" if self.repeat > 1 else self.short

    def walk(self) -> Iterator[ModuleNode]:
        """This node and all descendants, depth first, in module order."""
        stack = [self]
        while stack:
            node = stack.pop()
            yield node
            stack.extend(reversed(node.children))

    def find(self, name: str) -> ModuleNode | None:
        """The descendant with this full path (uncollapsed trees), or None."""
        node: ModuleNode | None = self
        if name == self.name:
            return self
        for part in name.split("."):
            assert node is not None
            node = next((c for c in node.children if c.short == part), None)
            if node is None:
                return None
        return node

    def to_dict(self) -> dict[str, Any]:
        """JSON-able nested dict (children included)."""
        out: dict[str, Any] = {
            "name": self.name,
            "short": self.short,
            "class": self.cls,
            "area": self.area,
            "own_params": self.own_params,
            "total_params": self.total_params,
            "trainable_params": self.trainable_params,
            "lora_params": self.lora_params,
            "state": self.state,
        }
        if self.shared_params:
            out["shared_params"] = self.shared_params
        if self.quant:
            out["quant"] = self.quant
        if self.repeat > 1:
            out["repeat"] = self.repeat
            out["members"] = list(self.members)
        out["children"] = [c.to_dict() for c in self.children]
        return out


@dataclass(frozen=True)
class Marking:
    """What one recipe (stage) trains, by module: everything `ModelTree.mark` needs."""

    recipe: str
    trainable: frozenset[str]
    """Base parameter names (no PEFT prefix, no `.base_layer`) that train in full."""
    lora_params: Mapping[str, int] = field(default_factory=dict)
    """Module path -> adapter parameters on it."""
    lora_trainable: Mapping[str, int] = field(default_factory=dict)
    """Module path -> adapter parameters on it that train."""
    lora_in_features: Mapping[str, int] = field(default_factory=dict)
    """Module path -> input width of the adapted linear (for the activation estimate)."""
    quant: Mapping[str, str] = field(default_factory=dict)
    """Module path -> `4bit` / `8bit`."""

    @staticmethod
    def empty(recipe: str = "") -> Marking:
        return Marking(recipe=recipe, trainable=frozenset())

    @staticmethod
    def union(markings: Iterable[Marking], recipe: str) -> Marking:
        """Everything any of the markings trains (a multi-stage recipe seen as a whole)."""
        ms = list(markings)
        merged: dict[str, dict[str, Any]] = {
            k: {} for k in ("lora_params", "lora_trainable", "lora_in_features", "quant")
        }
        for m in ms:
            for k, d in merged.items():
                d.update(getattr(m, k))
        return Marking(
            recipe=recipe, trainable=frozenset().union(*(m.trainable for m in ms)), **merged
        )


def _state(params: int, trainable_base: int, lora: int, lora_trainable: int) -> str:
    if trainable_base == 0 and lora_trainable == 0:
        return "frozen"
    if lora_trainable == 0 and trainable_base == params:
        return "full"
    if trainable_base == 0 and lora_trainable == lora:
        return "lora"
    return "mixed"


@dataclass(frozen=True)
class _Module:
    name: str
    short: str
    cls: str
    params: tuple[tuple[str, int], ...]
    """(full parameter name, numel) registered here, counted here."""
    shared: int
    children: tuple[str, ...]


@dataclass(frozen=True)
class ModelTree:
    """A model's module structure, built once; `mark` gives the tree for a recipe."""

    model: str
    family: Family
    root: ModuleNode
    """The unmarked tree: every module frozen, no adapters."""
    _modules: Mapping[str, _Module] = field(repr=False, compare=False)

    @staticmethod
    def from_model(model: Any, family: Family, name: str = "") -> ModelTree:
        """Structure of a (meta or real) model. PEFT wrappers and their adapters are folded
        into the module they wrap, so a prepared model gives the base model's structure."""
        from vlmtui.core.recipes.policy import is_lora_param, param_numel, strip_peft

        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        classes: dict[str, str] = {}
        kids: dict[str, list[str]] = {}
        for mname, module in base.named_modules():
            if mname and _PEFT_INTERNAL.search(mname):
                continue
            inner = getattr(module, "base_layer", None)
            cls = type(inner if inner is not None else module).__name__
            # The structure is the base model's: a bitsandbytes linear is a Linear there
            # (a marking's `quant` says when a recipe quantizes it).
            classes[mname] = "Linear" if cls in QUANT_CLASSES else cls
            if mname:
                parent = mname.rpartition(".")[0]
                kids.setdefault(parent, []).append(mname)
        params: dict[str, list[tuple[str, int]]] = {}
        shared: dict[str, int] = {}
        seen: set[int] = set()
        for pname, p in base.named_parameters(remove_duplicate=False):
            if is_lora_param(pname):
                continue
            full = strip_peft(pname)
            owner = full.rpartition(".")[0]
            if id(p) in seen:
                shared[owner] = shared.get(owner, 0) + param_numel(p)
                continue
            seen.add(id(p))
            params.setdefault(owner, []).append((full, param_numel(p)))
        modules = {
            n: _Module(
                name=n,
                short=n.rpartition(".")[2],
                cls=c,
                params=tuple(params.get(n, ())),
                shared=shared.get(n, 0),
                children=tuple(kids.get(n, ())),
            )
            for n, c in classes.items()
        }
        root = _mark(modules, family, Marking.empty())
        return ModelTree(model=name, family=family, root=root, _modules=modules)

    def mark(self, marking: Marking) -> ModuleNode:
        """The tree with trainable counts and states for a marking. One pass, no torch."""
        return _mark(self._modules, self.family, marking)


def _mark(modules: Mapping[str, _Module], family: Family, marking: Marking) -> ModuleNode:
    trainable = marking.trainable

    def build(name: str) -> tuple[ModuleNode, int, int]:
        m = modules[name]
        own = sum(n for _, n in m.params)
        own_train = sum(n for pn, n in m.params if pn in trainable)
        own_lora = marking.lora_params.get(name, 0)
        own_lora_train = marking.lora_trainable.get(name, 0)
        built = [build(c) for c in m.children]
        children = tuple(b[0] for b in built)
        total = own + sum(c.total_params for c in children)
        train_base = own_train + sum(b[1] for b in built)
        lora_train = own_lora_train + sum(b[2] for b in built)
        lora = own_lora + sum(c.lora_params for c in children)
        node = ModuleNode(
            name=name,
            short=m.short,
            cls=m.cls,
            area=family.area_of(name) if name else "other",
            own_params=own,
            total_params=total,
            shared_params=m.shared,
            trainable_params=train_base + lora_train,
            lora_params=lora,
            state=_state(total, train_base, lora, lora_train),
            own_state=_state(own, own_train, own_lora, own_lora_train),
            quant=marking.quant.get(name, ""),
            children=children,
        )
        return node, train_base, lora_train

    return build("")[0]
