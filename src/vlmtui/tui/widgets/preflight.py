"""The pre-flight table of the dispatch flow: what each recipe trains and whether it fits."""

from __future__ import annotations

from typing import Any

from rich.table import Table
from rich.text import Text

from vlmtui.tui.widgets.bars import human


def preflight_table(checks: list[Any]) -> Table:
    """Trainable/total per area and the memory estimate vs the GPU, one row per recipe."""
    table = Table(box=None, pad_edge=False, expand=True)
    for col in ("recipe", "device", "vision", "proj", "llm", "trains", "memory"):
        table.add_column(col, no_wrap=col in ("recipe", "device"))
    for c in checks:
        if c.problem:
            table.add_row(c.recipe, c.device, Text(c.problem, style="red"), "", "", "", "")
            continue
        cells = []
        for area in ("vision", "projector", "llm"):
            t, n = c.areas.get(area, (0, 0))
            cells.append(Text(f"{human(t)}/{human(n)}", style="bold" if t else "dim"))
        mem: Text
        if c.memory_gib is None:
            mem = Text("?")
        elif c.strategy == "fsdp":
            # The estimate holds a whole model per GPU; sharded, each GPU needs less.
            mem = Text(f"≈{c.memory_gib:.1f} GiB unsharded")
        elif c.gpu_mem_gib is None:
            mem = Text(f"≈{c.memory_gib:.1f} GiB")
        else:
            fits = c.memory_gib <= c.gpu_mem_gib
            # A whole model per GPU does not fit: sharding it over several GPUs might.
            hint = "" if fits else " (try fsdp)"
            mem = Text(
                f"≈{c.memory_gib:.1f} / {c.gpu_mem_gib:.0f} GiB "
                f"{'fits' if fits else 'TOO BIG'}{hint}",
                style="green" if fits else "bold red",
            )
        table.add_row(c.recipe, c.device, *cells, human(c.trainable_params), mem)
    return table
