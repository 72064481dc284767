"""What parsing one answer yields: boxes in original pixels, and a count of everything else.

`Collector` is where every candidate ends: it validates, scales, clamps and deduplicates boxes,
and keeps the counts the eval report shows (invalid candidates with a reason each, objects that
are not boxes, and the lenient readings an answer needed, as `Form`s).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

DEFAULT_SCORE = 1.0


class Form(StrEnum):
    """A way an answer strayed from its format's strict shape and was still read."""

    MARKDOWN_FENCE = "markdown_fence"
    REASONING_BLOCK = "reasoning_block"
    PYTHON_LITERAL = "python_literal"
    TRAILING_COMMA = "trailing_comma"
    PROSE_AROUND_JSON = "prose_around_json"
    TRUNCATED_JSON = "truncated_json"
    OTHER_LABEL_KEY = "other_label_key"
    PLAIN_TEXT_LINES = "plain_text_lines"
    STRIPPED_QWEN2_TOKENS = "stripped_qwen2_tokens"


@dataclass(frozen=True)
class PredBox:
    """One predicted box in original image pixels (x1, y1) top-left, (x2, y2) bottom-right."""

    label: str
    x1: float
    y1: float
    x2: float
    y2: float
    score: float = DEFAULT_SCORE

    @property
    def xyxy(self) -> tuple[float, float, float, float]:
        return (self.x1, self.y1, self.x2, self.y2)

    @property
    def xywh(self) -> tuple[float, float, float, float]:
        return (self.x1, self.y1, self.x2 - self.x1, self.y2 - self.y1)

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "bbox": list(self.xyxy), "score": self.score}


@dataclass(frozen=True)
class ParseResult:
    """What one generated text yielded."""

    boxes: tuple[PredBox, ...]
    """Valid boxes, in output order, duplicates removed."""
    candidates: int
    """Things that looked like a box (valid + invalid + duplicates)."""
    invalid: int
    """Candidates that could not be used (truncated, malformed, NaN, inverted, …)."""
    duplicates: int = 0
    """Exact repeats of an earlier box (label and coordinates), dropped."""
    reasons: tuple[str, ...] = field(default_factory=tuple)
    """One short reason per invalid candidate, or for the whole output when unparseable."""
    unparseable: bool = False
    """Nothing read: no valid box, no object at all, and not the format's explicit empty answer."""
    not_boxes: int = 0
    """Objects that are not boxes (`point_2d`, or any object without `bbox_2d`), not candidates."""
    forms: tuple[Form, ...] = ()
    """Lenient readings this answer needed, sorted."""

    @property
    def invalid_reasons(self) -> tuple[str, ...]:
        return self.reasons[: self.invalid]

    def to_dict(self) -> dict[str, Any]:
        return {
            "boxes": [b.to_dict() for b in self.boxes],
            "candidates": self.candidates,
            "invalid": self.invalid,
            "duplicates": self.duplicates,
            "reasons": list(self.reasons),
            "unparseable": self.unparseable,
            "not_boxes": self.not_boxes,
            "forms": [str(f) for f in self.forms],
        }


def four_numbers(coords: Any) -> tuple[float, float, float, float] | None:
    """Four coordinates as floats (numbers or numeric strings), else None.

    An integer too large for a float (hundreds of digits from a generation loop) becomes inf,
    as `float("999…")` does for the same digits as text, so every path calls it non-finite.
    """
    if not isinstance(coords, (list, tuple)) or len(coords) != 4:
        return None
    out = []
    for v in coords:
        if isinstance(v, bool):
            return None
        if isinstance(v, int):
            try:
                out.append(float(v))
            except OverflowError:
                out.append(math.inf if v > 0 else -math.inf)
        elif isinstance(v, float):
            out.append(v)
        elif isinstance(v, str):
            try:
                out.append(float(v))
            except ValueError:
                return None
        else:
            return None
    return (out[0], out[1], out[2], out[3])


def _clamp(v: float, hi: float) -> float:
    return min(max(v, 0.0), hi)


class Collector:
    """Turns raw (label, coords) candidates into clamped, deduplicated PredBoxes."""

    def __init__(self, width: float, height: float, sx: float, sy: float) -> None:
        self.width = float(width)
        self.height = float(height)
        self.sx = sx
        self.sy = sy
        self.boxes: list[PredBox] = []
        self.seen: set[tuple[str, float, float, float, float]] = set()
        self.candidates = 0
        self.duplicates = 0
        self.not_boxes = 0
        self.reasons: list[str] = []
        self.forms: set[Form] = set()

    def invalid(self, reason: str) -> None:
        self.candidates += 1
        self.reasons.append(reason)

    def not_box(self) -> None:
        self.not_boxes += 1

    def add(self, label: Any, coords: Any) -> None:
        if not isinstance(label, str) or not label.strip():
            self.invalid("missing label")
            return
        values = four_numbers(coords)
        if values is None:
            self.invalid("bbox is not four numbers")
            return
        if not all(math.isfinite(v) for v in values):
            self.invalid("non-finite coordinate")
            return
        x1, y1, x2, y2 = values
        if x2 <= x1 or y2 <= y1:
            self.invalid("inverted or empty box")
            return
        x1, x2 = (_clamp(v * self.sx, self.width) for v in (x1, x2))
        y1, y2 = (_clamp(v * self.sy, self.height) for v in (y1, y2))
        if x2 <= x1 or y2 <= y1:
            self.invalid("box outside the image")
            return
        label = label.strip()
        key = (label, x1, y1, x2, y2)
        self.candidates += 1
        if key in self.seen:
            self.duplicates += 1
            return
        self.seen.add(key)
        self.boxes.append(PredBox(label, x1, y1, x2, y2))

    def result(self, unparseable_reason: str | None = None) -> ParseResult:
        reasons = list(self.reasons)
        unparseable = not self.boxes and not self.not_boxes and unparseable_reason is not None
        if unparseable and unparseable_reason and not reasons:
            reasons.append(unparseable_reason)
        return ParseResult(
            boxes=tuple(self.boxes),
            candidates=self.candidates,
            invalid=len(self.reasons),
            duplicates=self.duplicates,
            reasons=tuple(reasons),
            unparseable=unparseable,
            not_boxes=self.not_boxes,
            forms=tuple(sorted(self.forms)),
        )
