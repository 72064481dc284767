"""A model's module tree, marked with what a recipe trains, and the views over it.

This is the data structure the TUI and `vlmtui inspect` show: `ModelTree` is a model's
module structure built once (from a meta or real model, PEFT wrappers folded away), `mark`
gives the `ModuleNode` tree for one recipe's `Marking`, and `collapse`, `filter_nodes`,
`group_names` and `diff_trees` are the views the two front ends render. Nothing here imports
torch or applies a recipe; `inspection.py` computes the markings by preparing a meta model
the way training does.

Typical use (the TUI keeps one `inspection.ModelInspector` per model)::

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


def regex_problem(pattern: str) -> str | None:
    """What is wrong with a module-path regex, or None when it compiles."""
    try:
        re.compile(pattern)
    except re.error as exc:
        return str(exc)
    return None


def compile_filter(pattern: str, flag: str = "--filter") -> re.Pattern[str]:
    """A module-path regex (`--filter`, `--expand`, the app's filter box), or BadInput naming
    the flag and what is wrong with the pattern."""
    problem = regex_problem(pattern)
    if problem is not None:
        raise BadInput(f"{flag}: {pattern!r} is not a valid regex ({problem})")
    return re.compile(pattern)


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
