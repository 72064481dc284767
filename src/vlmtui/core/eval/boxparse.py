"""Boxes out of generated text, for both Qwen2-VL box formats, in original image pixels.

Qwen2-VL (`box_format="qwen2"`) writes
`<|object_ref_start|>label<|object_ref_end|><|box_start|>(x1,y1),(x2,y2)<|box_end|>` with
coordinates normalised to 0-1000 of the image (so the resize does not matter). A label may be
followed by several `<|box_start|>…<|box_end|>` groups; each takes the latest label.

Qwen2.5-VL (`box_format="qwen2.5"`) writes JSON, `[{"bbox_2d": [x1, y1, x2, y2], "label": "…"}]`,
in absolute pixels of the *resized* image the model saw, often inside a ```json fence. A single
object, a `{"label": [x1, y1, x2, y2]}` dict and a dict wrapping the list are accepted too.
Coordinates are scaled back by original / resized size on each axis.

Nothing here raises on model output. Every thing that looks like a box (a `<|box_start|>`, a
`"bbox_2d"` key, a dangling label) is a *candidate*; a candidate that is truncated, malformed,
non-finite, inverted (x2 <= x1 or y2 <= y1), unlabelled or empty once clamped to the image is
*invalid* and counted, never guessed at. An exact repeat of an earlier box (a generation loop)
is dropped and counted as a duplicate. An output is *unparseable* when it yields no valid box
and is not the format's explicit empty answer: empty text for Qwen2-VL, `[]` (or `{}`) for
Qwen2.5-VL, as `data.format_boxes` writes them for an image without objects.

Scores: generation gives no confidence, so every box gets score 1.0. COCO-style AP then
measures the one operating point the model's output set is; pycocotools sorts detections
with a stable sort, so ties keep output order (image order, then the order the model wrote
them). A rank-based score would invent a confidence the model never expressed.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

BOX_FORMATS = ("qwen2", "qwen2.5")
QWEN2_SCALE = 1000.0
DEFAULT_SCORE = 1.0


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
    """No valid box and not an explicit empty answer: the model did not speak the format."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "boxes": [b.to_dict() for b in self.boxes],
            "candidates": self.candidates,
            "invalid": self.invalid,
            "duplicates": self.duplicates,
            "reasons": list(self.reasons),
            "unparseable": self.unparseable,
        }


class _Collector:
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
        self.reasons: list[str] = []

    def invalid(self, reason: str) -> None:
        self.candidates += 1
        self.reasons.append(reason)

    def add(self, label: Any, coords: Any) -> None:
        if not isinstance(label, str) or not label.strip():
            self.invalid("missing label")
            return
        values = _four_numbers(coords)
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
        unparseable = not self.boxes and unparseable_reason is not None
        if unparseable and unparseable_reason and not reasons:
            reasons.append(unparseable_reason)
        return ParseResult(
            boxes=tuple(self.boxes),
            candidates=self.candidates,
            invalid=len(self.reasons),
            duplicates=self.duplicates,
            reasons=tuple(reasons),
            unparseable=unparseable,
        )


def _clamp(v: float, hi: float) -> float:
    return min(max(v, 0.0), hi)


def _four_numbers(coords: Any) -> tuple[float, float, float, float] | None:
    if not isinstance(coords, (list, tuple)) or len(coords) != 4:
        return None
    out = []
    for v in coords:
        if isinstance(v, bool):
            return None
        if isinstance(v, (int, float)):
            out.append(float(v))
        elif isinstance(v, str):
            try:
                out.append(float(v))
            except ValueError:
                return None
        else:
            return None
    return (out[0], out[1], out[2], out[3])


# ---------------------------------------------------------------------------------------
# Qwen2-VL: special-token boxes, 0-1000

REF_START = "<|object_ref_start|>"
REF_END = "<|object_ref_end|>"
BOX_START = "<|box_start|>"
BOX_END = "<|box_end|>"
_QWEN2_TOKENS = re.compile(
    "(" + "|".join(re.escape(t) for t in (REF_START, REF_END, BOX_START, BOX_END)) + ")"
)
_NUM = r"\s*([-+]?(?:\d+(?:\.\d*)?|\.\d+|nan|inf(?:inity)?))\s*"
_QWEN2_BOX = re.compile(rf"^\s*\({_NUM},{_NUM}\)\s*,?\s*\({_NUM},{_NUM}\)\s*$", re.IGNORECASE)


def parse_qwen2(text: str, width: float, height: float) -> ParseResult:
    """Qwen2-VL boxes (0-1000 of the image) in pixels of a width x height image."""
    col = _Collector(width, height, width / QWEN2_SCALE, height / QWEN2_SCALE)
    parts = _QWEN2_TOKENS.split(text or "")
    label: str | None = None
    label_used = True  # a label with no box after it is a truncated candidate
    i = 0
    while i < len(parts):
        tok = parts[i]
        if tok == REF_START:
            if not label_used:
                col.invalid("label without a box")
            if i + 2 < len(parts) and parts[i + 2] == REF_END:
                label, label_used = parts[i + 1], False
                i += 3
            else:
                col.invalid("truncated label")
                label, label_used = None, True
                i += 2
            continue
        if tok == BOX_START:
            if i + 2 < len(parts) and parts[i + 2] == BOX_END:
                body = parts[i + 1]
                i += 3
            else:
                col.invalid("truncated box")
                label_used = True
                i += 2
                continue
            m = _QWEN2_BOX.match(body)
            if m is None:
                col.invalid("malformed box")
            elif label is None:
                col.invalid("missing label")
            else:
                col.add(label, [m.group(k) for k in range(1, 5)])
            label_used = True
            continue
        i += 1
    if not label_used:
        col.invalid("label without a box")
    if col.candidates == 0:
        # No box-like content at all: an explicit empty answer only if the text is empty.
        stripped = (text or "").strip()
        return col.result("no boxes in output" if stripped else None)
    return col.result("no valid box")


# ---------------------------------------------------------------------------------------
# Qwen2.5-VL: JSON bbox_2d, resized-image pixels

_FENCE = re.compile(r"```[ \t]*(?:json|JSON)?[ \t]*\n?(.*?)(?:```|$)", re.DOTALL)


def _strip_fence(text: str) -> str:
    m = _FENCE.search(text)
    return m.group(1) if m else text


def _objects_from_json(value: Any) -> list[Any] | None:
    """The list of box objects in a parsed JSON value, or None when it is not box-shaped."""
    if isinstance(value, list):
        return value
    if isinstance(value, dict):
        if "bbox_2d" in value:
            return [value]
        lists = [v for v in value.values() if isinstance(v, list)]
        if len(value) == 1 and lists and all(isinstance(o, dict) for o in lists[0]):
            return lists[0]  # {"objects": [...]}
        # {"label": [x1, y1, x2, y2]} or {"label": [[...], [...]]}
        out: list[Any] = []
        for k, v in value.items():
            if isinstance(v, list) and v and isinstance(v[0], list):
                out.extend({"label": k, "bbox_2d": b} for b in v)
            else:
                out.append({"label": k, "bbox_2d": v})
        return out
    return None


def parse_qwen25(
    text: str, width: float, height: float, resized_width: float, resized_height: float
) -> ParseResult:
    """Qwen2.5-VL JSON boxes (resized-image pixels) in pixels of a width x height image."""
    if resized_width <= 0 or resized_height <= 0:
        raise ValueError("resized size must be positive")
    col = _Collector(width, height, width / resized_width, height / resized_height)
    body = _strip_fence(text or "").strip()
    if not body:  # the format's empty answer is `[]`, not silence
        return col.result("empty answer")
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        value = None
        decoded = False
    else:
        decoded = True
    objects = _objects_from_json(value) if decoded else None
    if objects is not None:
        for obj in objects:
            if isinstance(obj, dict) and "bbox_2d" in obj:
                col.add(obj.get("label"), obj["bbox_2d"])
            else:
                col.invalid("object without bbox_2d")
        return col.result("no valid box" if objects else None)
    # Not one JSON value (truncated, trailing text, a generation loop): salvage each complete
    # object that carries a bbox_2d; every other "bbox_2d" in the text is an invalid candidate.
    dec = json.JSONDecoder()
    done = -1
    for m in re.finditer(r'"bbox_2d"', body):
        start = body.rfind("{", 0, m.start())
        if m.start() < done:
            continue  # inside an object already taken
        if start == -1 or start < done:
            col.invalid("truncated or malformed object")
            continue
        try:
            obj, end = dec.raw_decode(body, start)
        except (ValueError, RecursionError):
            obj, end = None, 0
        if isinstance(obj, dict) and "bbox_2d" in obj:
            col.add(obj.get("label"), obj["bbox_2d"])
            done = end
        else:
            col.invalid("truncated or malformed object")
    return col.result("not JSON" if col.candidates == 0 else "no valid box")


def parse_boxes(
    text: str,
    box_format: str,
    width: float,
    height: float,
    resized_width: float | None = None,
    resized_height: float | None = None,
) -> ParseResult:
    """Boxes in `text` for a model family's box format, in pixels of the original image.

    `resized_*` is the size the model saw; needed for `qwen2.5`, ignored for `qwen2`.
    """
    if box_format == "qwen2":
        return parse_qwen2(text, width, height)
    if box_format == "qwen2.5":
        return parse_qwen25(
            text,
            width,
            height,
            resized_width if resized_width else width,
            resized_height if resized_height else height,
        )
    raise ValueError(f"unknown box format {box_format!r} (known: {', '.join(BOX_FORMATS)})")
