"""`vlmtui inspect` views of what differs between layers: the LLM's layer kinds (Qwen3.5's
linear and full attention) with the adapters each kind gets, and the checkpoint-only MTP head."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any


def checkpoint_line(result: Any) -> str:
    """The model count beside the published checkpoint count (which includes the MTP head)."""
    base = result.to_dict()["base_params"]
    return (
        f"checkpoint: {base + result.mtp_params:,} parameters = model {base:,} + MTP head "
        f"{result.mtp_params:,} (mtp.*: in the checkpoint, not built by transformers, "
        "never trained)"
    )


def layer_kind_table(kinds: Mapping[str, Mapping[str, int]], layer_kinds: Mapping[int, str]) -> Any:
    """LoRA adapters per LLM layer kind: which module of the layer, in how many layers."""
    from rich.table import Table

    table = Table(title="LLM LoRA by layer kind", title_justify="left")
    for col in ("layer kind", "layers", "adapted modules (layers each)"):
        table.add_column(col)
    for kind in sorted(set(layer_kinds.values())):
        layers = [i for i, k in sorted(layer_kinds.items()) if k == kind]
        shown = ", ".join(
            f"{m} ({n})" if n != len(layers) else m for m, n in sorted(kinds.get(kind, {}).items())
        )
        table.add_row(kind, _ranges(layers), shown or "none")
    return table


def layer_kind_tag(node: Any) -> str:
    """` [linear attention]` on a hybrid model's linear-attention layer (and its collapsed
    runs), ` [full attention]` on a Qwen3.5 full-attention layer; else ""."""
    shorts = {c.short for c in node.children}
    if "linear_attn" in shorts:
        return " [yellow]\\[linear attention][/]"
    if "self_attn" in shorts and node.cls.startswith("Qwen3_5"):
        return " [cyan]\\[full attention][/]"
    return ""


def _ranges(idx: list[int]) -> str:
    """`3, 7, …, 31 (8)` for an arithmetic run, `0–27 (28)` for a contiguous one, else the
    count alone."""
    steps = {b - a for a, b in itertools.pairwise(idx)}
    if len(idx) > 2 and steps == {1}:
        return f"{idx[0]}–{idx[-1]} ({len(idx)})"
    if len(idx) > 3 and len(steps) == 1:
        return f"{idx[0]}, {idx[1]}, …, {idx[-1]} ({len(idx)})"
    if len(idx) <= 3:
        return f"{', '.join(map(str, idx))} ({len(idx)})"
    return f"the other {len(idx)}"
