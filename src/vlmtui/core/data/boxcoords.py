"""Normalised box coordinates: refused when passed as pixels, scaled when declared.

Why: a dataset exported with coordinates as fractions of the image size (0..1) loads as
valid pixel boxes, all within the top-left pixel, and trains a model to draw nothing. When
every box of a dataset lies within [0, 1] that is what happened; such a dataset is refused,
naming its first row, unless its rows say `"normalized": true` or the user passes
`--allow-normalized`, and then the coordinates are scaled to pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from vlmtui.core.errors import BadInput

if TYPE_CHECKING:
    from vlmtui.core.data.datasets import DetectionRecord

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


def _all_within_unit(records: Sequence[DetectionRecord]) -> bool:
    boxes = [o.bbox for r in records for o in r.objects]
    return bool(boxes) and all(0.0 <= v <= 1.0 for box in boxes for v in box)


def check_pixel_boxes(
    records: list[DetectionRecord], allow_normalized: bool
) -> list[DetectionRecord]:
    """Refuse a dataset whose boxes all lie in [0, 1], or scale it when allowed."""
    if not _all_within_unit(records):
        return records
    if not allow_normalized:
        first = next(r for r in records if r.objects)
        box = ", ".join(f"{v:g}" for v in first.objects[0].bbox)
        raise BadInput(
            f"{first.source}: every box in the dataset lies within [0, 1] (first: [{box}]): "
            "these look like normalised coordinates, but boxes are pixels; scale them, mark "
            f'the rows "{ROW_FIELD}": true, or pass --allow-normalized'
        )
    return [
        replace(
            r,
            objects=tuple(
                replace(o, bbox=tuple(to_pixels(list(o.bbox), r.width, r.height)))
                for o in r.objects
            ),
        )
        for r in records
    ]
