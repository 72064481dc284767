"""Views over a marked module tree: what the TUI and `vlmtui inspect` render.

`tree.py` holds the data (`ModelTree`, `ModuleNode`, `Marking`); this module holds the ways the
two front ends look at it, so both show the same thing: `collapse` (repeated blocks as one
`blocks.0–31 ×32` node), `filter_nodes` and `compile_filter` (module-path regexes),
`group_names` (index ranges for lists of paths) and `diff_trees` (modules whose trainable state
differs between two recipes). Pure functions of `ModuleNode` trees; no torch.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

from vlmtui.core.errors import BadInput
from vlmtui.core.inspection.tree import ModuleNode


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
