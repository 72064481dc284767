"""Rich tables for the CLI that never cut an identifier.

Recipe names, run ids, host names and module paths are what a user copies into the next
command, so their columns are sized to the longest value and never wrap; descriptions and
errors wrap instead, and numbers never wrap. A path too long for any terminal is shortened in
the middle (`core.textfmt.middle`), keeping its distinguishing tail.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from rich import box
from rich.table import Table

from vlmtui.core.textfmt import middle

Justify = Literal["left", "right", "center"]


def plain_table(title: str | None = None) -> Table:
    """A borderless table: one space between columns leaves the most room for names."""
    return Table(
        title=title,
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
        title_justify="left",
    )


def ident_column(table: Table, header: str, values: Iterable[str]) -> None:
    """A column as wide as its longest value, never wrapped or cut."""
    width = max([len(header), *(len(v) for v in values)])
    table.add_column(header, no_wrap=True, min_width=width)


def number_column(table: Table, header: str, justify: Justify = "right") -> None:
    table.add_column(header, justify=justify, no_wrap=True)


def text_column(table: Table, header: str) -> None:
    """Free text (descriptions, errors): wraps at word boundaries, takes the room left."""
    table.add_column(header, overflow="fold", ratio=1)


def fit_paths(paths: list[str], other_columns: list[list[str]], width: int) -> list[str]:
    """`paths` shortened in the middle just enough that a table with `other_columns` (each a
    header and its cells) fits `width` columns; unchanged when they fit. Never below 24."""
    others = sum(max(len(c) for c in col) + 1 for col in other_columns)
    room = max(24, width - others - 1)
    return [middle(p, room) for p in paths]
