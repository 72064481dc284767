"""A model's module tree from its config alone, marked with what a recipe trains.

The TUI and `vlmtui inspect` both use this module; the trainer does not, but the trainable
set shown here comes from the very functions the trainer runs (`policy.prepare_trainables`:
LoRA injection with PEFT, the freeze policy and the pre-flight guard), applied to the real
transformers model built on the meta device. Quantized recipes get the same bitsandbytes
module replacement `from_pretrained` performs before loading weights (transformers'
quantizer, same `BitsAndBytesConfig` and skip list as `loading.py`) and PEFT's
`prepare_model_for_kbit_training`, so 4-bit modules, dtypes and names match training.

Typical use (the TUI keeps one `ModelInspector` per model)::

    insp = ModelInspector("Qwen/Qwen2-VL-72B-Instruct")
    tree = insp.tree()                       # structure, built once per model
    result = insp.inspect(get_recipe("r1-llm-only"))   # cached per recipe
    root = tree.mark(result.stages[0].marking)         # cheap: one pass over the tree
    shown = collapse(root)                   # `blocks.0–31 ×32` style repeat runs
    for node in shown.walk(): ...

Counts in a `ModuleNode` are parameters of the base model (`own_params`, `total_params`);
LoRA adapter parameters a recipe adds are in `lora_params` and, when they train, in
`trainable_params`. Tied parameters (lm_head sharing the embedding) count once, at the
module that registers them first; the other module shows them in `shared_params`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from vlmtui.core.errors import BadInput
from vlmtui.core.families import AREAS, Family
from vlmtui.core.memory import (
    MemoryAssumptions,
    MemoryEstimate,
    ModelDims,
    ParamInfo,
    dims_from_config,
    estimate_memory,
)
from vlmtui.core.models import ModelRef, build_meta_model, resolve_model, skip_init
from vlmtui.core.policy import TrainableSummary
from vlmtui.core.recipes import TrainingRecipe

STATES = ("frozen", "full", "lora", "mixed")
"""Trainable state of a module: nothing trains / every base parameter trains (no adapters) /
adapters train and no base parameter does / anything else (part trains, or full and LoRA)."""

_PEFT_INTERNAL = re.compile(r"\.(?:lora_[A-Za-z_]+|base_layer)(?:\.|$)")
_QUANT_CLASSES = {"Linear4bit": "4bit", "Linear8bitLt": "8bit"}


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
        node = self
        if name == node.name:
            return node
        for part in name.split("."):
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
        from vlmtui.core.policy import is_lora_param, param_numel, strip_peft

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
            classes[mname] = "Linear" if cls in _QUANT_CLASSES else cls
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


# --- views: collapse, filter, diff ------------------------------------------------------


def _signatures(root: ModuleNode) -> dict[int, int]:
    """id(node) -> hash of everything shown about it and its subtree (names relative)."""
    sigs: dict[int, int] = {}

    def sig(node: ModuleNode) -> int:
        h = hash(
            (
                node.cls,
                node.own_params,
                node.total_params,
                node.shared_params,
                node.trainable_params,
                node.lora_params,
                node.state,
                node.own_state,
                node.quant,
                node.repeat,
                tuple((c.short, sig(c)) for c in node.children),
            )
        )
        sigs[id(node)] = h
        return h

    sig(root)
    return sigs


def collapse(root: ModuleNode, expand: Callable[[ModuleNode], bool] | None = None) -> ModuleNode:
    """Runs of identical consecutive numbered siblings (`blocks.0` … `blocks.31`) merged into
    one node with `repeat`; a run breaks where the recipe marks members differently. Children
    of a node for which `expand(node)` is true are kept separate."""
    sigs = _signatures(root)

    def go(node: ModuleNode) -> ModuleNode:
        kids = node.children
        if not kids:
            return node
        out: list[ModuleNode] = []
        i = 0
        while i < len(kids):
            first = kids[i]
            j = i + 1
            if first.short.isdigit() and not (expand and expand(node)):
                while (
                    j < len(kids)
                    and kids[j].short.isdigit()
                    and int(kids[j].short) == int(first.short) + (j - i)
                    and sigs[id(kids[j])] == sigs[id(first)]
                ):
                    j += 1
            run = kids[i:j]
            rep = go(first)
            if len(run) > 1:
                rep = replace(
                    rep,
                    short=f"{first.short}–{run[-1].short}",
                    repeat=len(run),
                    members=tuple(k.name for k in run),
                )
            out.append(rep)
            i = j
        return replace(node, children=tuple(out))

    return go(root)


def compile_filter(pattern: str) -> re.Pattern[str]:
    """A --filter regex, or BadInput naming what is wrong with it."""
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise BadInput(f"--filter: {pattern!r} is not a valid regex ({exc})") from None


def filter_nodes(root: ModuleNode, pattern: str | re.Pattern[str]) -> list[ModuleNode]:
    """Modules whose full path matches the regex (`re.search`), in module order."""
    rx = compile_filter(pattern) if isinstance(pattern, str) else pattern
    return [n for n in root.walk() if n.name and rx.search(n.name)]


def _range_text(idx: list[int]) -> str:
    parts: list[str] = []
    start = prev = idx[0]
    for i in [*idx[1:], None]:
        if i is not None and i == prev + 1:
            prev = i
            continue
        parts.append(str(start) if start == prev else f"{start}–{prev}")
        if i is not None:
            start = prev = i
    return ",".join(parts)


_NUM_SEG = re.compile(r"(?<=\.)\d+(?=\.|$)")


def group_names(items: Iterable[tuple[str, Any]]) -> list[tuple[str, int, Any]]:
    """Merge names that differ only in one numeric path segment and have equal keys.

    `[("a.layers.0.q", k), ("a.layers.1.q", k)]` -> `[("a.layers.{0–1}.q", 2, k)]`. Order of
    first appearance is kept.
    """
    groups: dict[tuple[str, int, Any], list[int]] = {}
    singles: dict[tuple[str, int, Any], str] = {}
    order: list[tuple[str, int, Any]] = []
    for name, key in items:
        segs = list(_NUM_SEG.finditer(name))
        if not segs:
            gk = (name, -1, key)
            order.append(gk)
            singles[gk] = name
            continue
        # Vary the outermost numeric segment (the block index); deeper ones stay literal.
        m = segs[0]
        template = name[: m.start()] + "{}" + name[m.end() :]
        gk = (template, 0, key)
        if gk not in groups:
            groups[gk] = []
            order.append(gk)
            singles[gk] = name
        groups[gk].append(int(m.group()))
    out: list[tuple[str, int, Any]] = []
    for gk in order:
        idx = groups.get(gk)
        if not idx or len(idx) == 1:
            out.append((singles[gk], 1, gk[2]))
        else:
            out.append((gk[0].replace("{}", "{" + _range_text(idx) + "}"), len(idx), gk[2]))
    return out


@dataclass(frozen=True)
class StateChange:
    """A module (or area) whose trainable state differs between two markings."""

    name: str
    """Module path; after `group_names` may hold an index range like `layers.{0–79}.q_proj`."""
    cls: str
    area: str
    before: str
    after: str
    trainable_before: int
    trainable_after: int
    count: int = 1
    """How many modules the (grouped) name stands for; counts above are per module."""


def diff_trees(a: ModuleNode, b: ModuleNode) -> list[StateChange]:
    """The highest modules whose whole subtree changes state the same way, grouped by runs.

    `a` and `b` are the same model's tree marked for two recipes (uncollapsed).
    """
    pairs: dict[int, frozenset[tuple[str, str]]] = {}

    def own_lora(n: ModuleNode) -> int:
        return n.lora_params - sum(c.lora_params for c in n.children)

    def collect(x: ModuleNode, y: ModuleNode) -> frozenset[tuple[str, str]]:
        own: set[tuple[str, str]] = set()
        if x.own_params or own_lora(x) or own_lora(y):
            own.add((x.own_state, y.own_state))
        for cx, cy in zip(x.children, y.children, strict=True):
            own |= collect(cx, cy)
        result = frozenset(own)
        pairs[id(x)] = result
        return result

    collect(a, b)
    found: list[tuple[str, Any]] = []

    def report(x: ModuleNode, y: ModuleNode) -> None:
        ps = pairs[id(x)]
        if all(p == q for p, q in ps):
            return
        if len(ps) == 1 and x.name:
            ((before, after),) = ps
            key = (x.cls, x.area, before, after, x.trainable_params, y.trainable_params)
            found.append((x.name, key))
            return
        for cx, cy in zip(x.children, y.children, strict=True):
            report(cx, cy)

    report(a, b)
    return [
        StateChange(name, k[0], k[1], k[2], k[3], k[4], k[5], count)
        for name, count, k in group_names(found)
    ]


# --- inspecting a model under a recipe ----------------------------------------------------


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

    def to_dict(self) -> dict[str, Any]:
        d = self.summary.to_dict()
        return {
            "stage": self.index,
            "recipe": self.recipe.name,
            **d,
            "quantized_modules": list(self.summary.quantized_modules),
            "quantization": self.recipe.quantization,
            "guard": self.guard,
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
        }
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
            out["memory"] = [m.to_dict() for m in self.memory(assumptions)]
        return out


def _quantize_meta(model: Any, recipe: TrainingRecipe, dtype: Any) -> Any:
    """The module replacement from_pretrained does before loading quantized weights."""
    import torch
    from peft import prepare_model_for_kbit_training
    from transformers.quantizers import AutoHfQuantizer

    from vlmtui.core.loading import quantization_config

    quantizer = AutoHfQuantizer.from_config(quantization_config(recipe, dtype), pre_quantized=False)
    with torch.device("meta"):
        quantizer.preprocess_model(model, device_map={"": "cuda:0"}, dtype=dtype)
    quantizer.postprocess_model(model)
    return prepare_model_for_kbit_training(
        model, use_gradient_checkpointing=recipe.gradient_checkpointing
    )


def _marking_and_params(
    model: Any, family: Family, recipe_name: str
) -> tuple[Marking, tuple[ParamInfo, ...]]:
    from vlmtui.core.policy import is_lora_param, param_numel, strip_peft, unique_parameters

    trainable: set[str] = set()
    lora: dict[str, int] = {}
    lora_train: dict[str, int] = {}
    infos: list[ParamInfo] = []
    quant: dict[str, str] = {}
    lora_in: dict[str, int] = {}
    quant_rows: dict[str, tuple[str, int, bool]] = {}
    for mname, module in model.named_modules():
        kind = _QUANT_CLASSES.get(type(module).__name__)
        base = strip_peft(mname)
        if kind:
            quant[base] = kind
            w = module.weight
            dq = bool(getattr(w, "compress_statistics", True))
            quant_rows[base + ".weight"] = (kind, int(module.out_features), dq)
        if hasattr(module, "lora_A") and len(module.lora_A) > 0 and hasattr(module, "in_features"):
            lora_in[base] = int(module.in_features)
    for pname, p in unique_parameters(model):
        n = param_numel(p)
        full = strip_peft(pname)
        is_lora = is_lora_param(pname)
        dtype = str(p.dtype).removeprefix("torch.")
        q = quant_rows.get(full) if not is_lora else None
        infos.append(
            ParamInfo(
                name=full,
                numel=n,
                dtype=dtype,
                trainable=bool(p.requires_grad),
                lora=is_lora,
                quant=q[0] if q else "",
                rows=q[1] if q else 0,
                double_quant=q[2] if q else True,
            )
        )
        if is_lora:
            owner = full.split(".lora_", 1)[0]
            lora[owner] = lora.get(owner, 0) + n
            if p.requires_grad:
                lora_train[owner] = lora_train.get(owner, 0) + n
        elif p.requires_grad:
            trainable.add(full)
    marking = Marking(
        recipe=recipe_name,
        trainable=frozenset(trainable),
        lora_params=lora,
        lora_trainable=lora_train,
        lora_in_features=lora_in,
        quant=quant,
    )
    return marking, tuple(infos)


def guard_verdict(summary: TrainableSummary, recipe: TrainingRecipe) -> str:
    """The passed guard's verdict as one line."""
    modes = ", ".join(f"{a} {recipe.area(a).mode}" for a in ("vision", "projector", "llm"))
    q = (
        f"; {len(summary.quantized_modules)} LLM linears {recipe.quantization}, none outside"
        if recipe.quantized
        else ""
    )
    return f"passed: every area as the recipe says ({modes}); lm_head and other frozen{q}"


def prepare_meta_stage(ref: ModelRef, recipe: TrainingRecipe, model: Any = None) -> Any:
    """A meta model prepared for one single-stage recipe exactly as training prepares it.

    Raises policy.GuardError (BadInput) when the guard refuses the recipe.
    """
    import torch

    from vlmtui.core.loading import Device, compute_dtype
    from vlmtui.core.policy import prepare_trainables

    dtype = compute_dtype(recipe, Device("cuda"))
    if model is None:
        model = build_meta_model(ref, dtype)
    elif next(model.parameters()).dtype != dtype:
        model = model.to(dtype)
    # New modules (4-bit linears, LoRA adapters) are created on the meta device with their
    # initialisers skipped: PEFT would otherwise initialise adapters on the CPU first (seconds
    # for a 72B model). Names, shapes, dtypes and requires_grad are unaffected.
    with skip_init():
        if recipe.quantized:
            model = _quantize_meta(model, recipe, dtype)
        with torch.device("meta"):
            return prepare_trainables(model, recipe, ref.family)


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
        self._spare = model

    def base_summary(self) -> TrainableSummary:
        """Per-area counts of the bare model (nothing trainable)."""
        if self._base_summary is None:
            from vlmtui.core.policy import summarize_trainables_by_area

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
            return Inspection(self.ref, None, (), self._dims, self.base_summary())
        if recipe in self._cache:
            return self._cache[recipe]
        from vlmtui.core.policy import summarize_trainables_by_area
        from vlmtui.core.recipes import stage_recipes

        stages = []
        for i, stage in enumerate(stage_recipes(recipe, self.recipe_files), start=1):
            model = prepare_meta_stage(self.ref, stage, self._fresh_model())
            summary = summarize_trainables_by_area(model, self.family)
            marking, params = _marking_and_params(model, self.family, stage.name)
            stages.append(
                StageResult(
                    index=i,
                    recipe=stage,
                    summary=summary,
                    marking=marking,
                    params=params,
                    guard=guard_verdict(summary, stage),
                )
            )
            del model
        result = Inspection(self.ref, recipe, tuple(stages), self._dims, None)
        self._cache[recipe] = result
        return result
