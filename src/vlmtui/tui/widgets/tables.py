"""Small helpers the panes' DataTables share."""

from __future__ import annotations

from typing import Any

from textual.widgets import DataTable


def highlighted_key(table: DataTable[Any]) -> str | None:
    """The row key under the cursor (a recipe name, a run id), or None in an empty table."""
    if not table.row_count:
        return None
    value = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
    return None if value is None else str(value)
