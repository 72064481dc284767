"""The pre-flight table of the dispatch flow: what each recipe trains and whether it fits."""

from __future__ import annotations

from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from vlmtui.tui.widgets.bars import human

NUMBERS = ("recipe", "device", "vision", "proj", "llm", "trains")
"""Columns that never wrap or cut (identifiers and counts): the memory column wraps instead."""


def area_cell(trainable: int, total: int) -> Text:
    """`frozen`, the area's size when all of it trains, else trainable/total (`9.2M/1.5B`):
    `0/665.0M` and `665.0M/665.0M` were too wide for 80 columns, and the numbers were cut."""
    if not trainable:
        return Text("frozen", style="dim")
    if trainable == total:
        return Text(human(total), style="bold")
    return Text(f"{human(trainable)}/{human(total)}", style="bold")


def memory_cell(c: Any) -> Text:
    if c.memory_gib is None:
        return Text("?")
    if c.strategy == "fsdp":
        # The estimate holds a whole model per GPU; sharded, each GPU needs less.
        return Text(f"≈{c.memory_gib:.1f} GiB unsharded")
    if c.gpu_mem_gib is None:
        return Text(f"≈{c.memory_gib:.1f} GiB")
    fits = c.memory_gib <= c.gpu_mem_gib
    # A whole model per GPU does not fit: sharding it over several GPUs might.
    hint = "" if fits else " (try fsdp)"
    return Text(
        f"≈{c.memory_gib:.1f} / {c.gpu_mem_gib:.0f} GiB {'fits' if fits else 'TOO BIG'}{hint}",
        style="green" if fits else "bold red",
    )


def preflight_table(checks: list[Any]) -> Table:
    """What trains per area and the memory estimate vs the GPU, one row per recipe (a
    refused recipe says `refused`; `preflight_body` prints why under the table)."""
    table = Table(box=None, pad_edge=False, expand=True, padding=(0, 1, 0, 0))
    for col in (*NUMBERS, "memory"):
        table.add_column(col, no_wrap=col in NUMBERS)
    for c in checks:
        if c.problem:
            table.add_row(c.recipe, c.device, Text("refused", style="red"), "", "", "", "")
            continue
        cells = [area_cell(*c.areas.get(a, (0, 0))) for a in ("vision", "projector", "llm")]
        table.add_row(c.recipe, c.device, *cells, human(c.trainable_params), memory_cell(c))
    return table


def preflight_body(checks: list[Any]) -> RenderableType:
    """The table, then why each refused recipe was refused, across the whole width (a guard
    message squeezed into a table column was cut to `quanti…`)."""
    why = [
        Text(c.problem if c.recipe in c.problem else f"{c.recipe}: {c.problem}", style="red")
        for c in checks
        if c.problem
    ]
    return Group(preflight_table(checks), *why)
