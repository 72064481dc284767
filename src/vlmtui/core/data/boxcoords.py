"""Normalised box coordinates: refused when passed as pixels, scaled when declared.

Why: a dataset exported with coordinates as fractions of the image size (0..1) loads as
valid pixel boxes, all within the top-left pixel, and trains a model to draw nothing. When
every box of a dataset lies within [0, 1] that is what happened; such a dataset is refused,
naming its first row, unless its rows say `"normalized": true` or the user passes
`--allow-normalized`, and then the coordinates are scaled to pixels.
"""

from __future__ import annotations

from typing import Any

from vlmtui.core.errors import BadInput

ROW_FIELD = "normalized"


def declared_normalized(row: dict[str, Any], where: str) -> bool:
    """The row's own `"normalized"` field (absent means pixels)."""
    value = row.get(ROW_FIELD, False)
    if not isinstance(value, bool):
        raise BadInput(f"{where}: {ROW_FIELD!r} must be true or false, got {value!r}")
    return value


def to_pixels(raw: Any, width: int, height: int) -> Any:
    """[x1, y1, x2, y2] fractions of the image as pixels (anything else is left for checks)."""
    if isinstance(raw, list) and len(raw) == 4 and all(isinstance(v, (int, float)) for v in raw):
        return [raw[0] * width, raw[1] * height, raw[2] * width, raw[3] * height]
    return raw
