"""Boxes out of generated text, for every family's box format, in original image pixels.

Qwen2-VL (`box_format="qwen2"`) writes
`<|object_ref_start|>label<|object_ref_end|><|box_start|>(x1,y1),(x2,y2)<|box_end|>` with
coordinates normalised to 0-1000 of the image (so the resize does not matter). A label may be
followed by several `<|box_start|>…<|box_end|>` groups; each takes the latest label.

Qwen2.5-VL (`box_format="qwen2.5"`) writes JSON, `[{"bbox_2d": [x1, y1, x2, y2], "label": "…"}]`,
in absolute pixels of the *resized* image the model saw, often inside a ```json fence. A single
object, a `{"label": [x1, y1, x2, y2]}` dict and a dict wrapping the list are accepted too.
Coordinates are scaled back by original / resized size on each axis.

Qwen3-VL and Qwen3.5 (`box_format="qwen3"`) write the same JSON with coordinates relative to
0-1000, like Qwen2-VL. Sources: Qwen3-VL's 2d_grounding cookbook (quoted in QwenLM/Qwen3-VL#1741:
"changed from the absolute coordinates used in Qwen2.5-VL to relative coordinates ranging from
0 to 1000") and a Qwen maintainer in QwenLM/Qwen3-VL#1427 and #1512. Qwen3.5's model cards and
README document no grounding format; a Qwen maintainer (QwenLM/Qwen3.8-Flash-Next#4, answering
"in previous iterations (e.g. Qwen-3.5VL) coordinates were normalized to [0, 1000]") says they
"should still be relative coordinates normalized to [0, 1000]", and third-party Qwen3.5
integrations (FiftyOne's qwen3_5_vl zoo model) prompt for `bbox_2d` JSON in 0-1000.

Real answers stray from these shapes; what a reader reads as boxes is read (see `boxformats`
and `boxtext`), and each lenient reading is recorded on the result as a `Form`: Python literals,
trailing commas, prose or a `<think>` block around the JSON, a truncated list, a label under
another key (`text_content`, `name`, a word for "label" in another language), one
`x1,y1,x2,y2 label` per line, and Qwen2-VL's tokens stripped by the server. An object that is
not a box (`point_2d`, any object without `bbox_2d`) is counted as such, never an error.

Nothing here raises on model output. Every thing that looks like a box (a `<|box_start|>`, a
`bbox_2d` key, a dangling label) is a *candidate*; a candidate that is truncated, malformed,
non-finite (a coordinate of hundreds of digits counts as infinite), inverted, unlabelled or
empty once clamped to the image is *invalid* and counted, never guessed at. An exact repeat of
an earlier box (a generation loop) is dropped and counted as a duplicate. An output is
*unparseable* when nothing in it could be read and it is not the format's explicit empty
answer: empty text for Qwen2-VL, `[]` (or `{}`) for the JSON formats, as `chat.format_boxes`
writes them for an image without objects.

Scores: generation gives no confidence, so every box gets score 1.0. COCO-style AP then
measures the one operating point the model's output set is; pycocotools sorts detections
with a stable sort, so ties keep output order (image order, then the order the model wrote
them). A rank-based score would invent a confidence the model never expressed.
"""

from __future__ import annotations

import bisect
import re
from typing import Any

from vlmtui.core.eval import boxformats, boxtext
from vlmtui.core.eval.boxresult import Collector, Form, ParseResult, PredBox

__all__ = ["BOX_FORMATS", "Form", "ParseResult", "PredBox", "parse_boxes"]

BOX_FORMATS = ("qwen2", "qwen2.5", "qwen3")
RELATIVE_SCALE = 1000.0
BOX_KEY = "bbox_2d"
LABEL_KEY = "label"
OTHER_LABEL_KEYS = (
    "text_content",  # Qwen's OCR cookbook, text spotting
    "name",
    "text",
    "category",
    "class",
    "object",
    "标签",
    "名称",
    "类别",
    "物体",
    "文本",
    "文字",
    "ラベル",
    "名前",
    "라벨",
    "이름",
)
_OBJECT_KEY = re.compile(r"_[23]d$|^(label|point|points|polygon|bbox|box)$")
_BOX_KEY_TEXT = re.compile(r"""["']bbox_2d["']""")


# ---------------------------------------------------------------------------------------
# objects (JSON formats)


def _label_of(obj: dict[Any, Any]) -> tuple[Any, bool]:
    """(label, read from another key than `label`).

    Known alternative keys first; else the one string value under a non-ASCII key, which is
    how a per-language name for "label" looks (`{"bbox_2d": [...], "étiquette": "chat"}`).
    """
    if LABEL_KEY in obj:
        return obj[LABEL_KEY], False
    for key in OTHER_LABEL_KEYS:
        if isinstance(obj.get(key), str):
            return obj[key], True
    foreign = [
        v for k, v in obj.items() if isinstance(k, str) and not k.isascii() and isinstance(v, str)
    ]
    if len(foreign) == 1:
        return foreign[0], True
    return None, False


def _is_object(value: dict[Any, Any]) -> bool:
    """A dict that is one answer object (a box, a point, …) rather than a label -> box map."""
    return any(
        isinstance(k, str) and (k in OTHER_LABEL_KEYS or _OBJECT_KEY.search(k)) for k in value
    )


def _objects_from_value(value: Any) -> list[Any] | None:
    """The list of answer objects in a decoded value, or None when it is not box-shaped."""
    if isinstance(value, (list, tuple)):
        return list(value)
    if not isinstance(value, dict):
        return None
    if _is_object(value):
        return [value]
    lists = [v for v in value.values() if isinstance(v, list)]
    if len(value) == 1 and lists and all(isinstance(o, dict) for o in lists[0]):
        return lists[0]  # {"objects": [...]}
    # {"label": [x1, y1, x2, y2]} or {"label": [[...], [...]]}
    out: list[Any] = []
    for k, v in value.items():
        if isinstance(v, list) and v and isinstance(v[0], list):
            out.extend({LABEL_KEY: k, BOX_KEY: b} for b in v)
        else:
            out.append({LABEL_KEY: k, BOX_KEY: v})
    return out


def _read_objects(objects: list[Any], col: Collector) -> None:
    for obj in objects:
        if not isinstance(obj, dict):
            col.invalid("item is not an object")
        elif BOX_KEY not in obj:
            col.not_box()
        else:
            label, other_key = _label_of(obj)
            if other_key:
                col.forms.add(Form.OTHER_LABEL_KEY)
            col.add(label, obj[BOX_KEY])


def _salvage(body: str, col: Collector) -> bool:
    """Read each complete object of a truncated or broken answer; other `bbox_2d` are invalid.

    Returns whether anything (object or invalid candidate) was found.
    """
    taken: list[tuple[int, int]] = []
    for start, end in boxformats.balanced_objects(body):
        if taken and start < taken[-1][1]:
            continue  # inside an object already read
        decoded = boxformats.decode_value(body[start:end])
        if decoded is None or not isinstance(decoded.value, dict):
            continue
        if not _is_object(decoded.value):
            continue  # a wrapper: its inner objects come next
        _note(decoded, col)
        _read_objects([decoded.value], col)
        taken.append((start, end))
    starts = [s for s, _ in taken]
    for m in _BOX_KEY_TEXT.finditer(body):
        i = bisect.bisect_right(starts, m.start()) - 1
        if i < 0 or m.start() >= taken[i][1]:
            col.invalid("truncated or malformed object")
    return bool(taken) or col.candidates > 0


def _note(decoded: boxformats.Decoded, col: Collector) -> None:
    if decoded.python_literal:
        col.forms.add(Form.PYTHON_LITERAL)
    if decoded.trailing_comma:
        col.forms.add(Form.TRAILING_COMMA)


def _read_text_forms(text: str, col: Collector, order: tuple[Form, ...]) -> bool:
    """Plain-text lines or stripped Qwen2 tokens, in the given order; the first that finds any."""
    readers = {
        Form.PLAIN_TEXT_LINES: boxtext.plain_text_lines,
        Form.STRIPPED_QWEN2_TOKENS: boxtext.stripped_qwen2_tokens,
    }
    for form in order:
        found = readers[form](text)
        if found:
            col.forms.add(form)
            for label, coords in found:
                if coords is None:
                    col.invalid("truncated box")
                else:
                    col.add(label, coords)
            return True
    return False


def _decode_amid_prose(body: str, col: Collector) -> boxformats.Decoded | None:
    """The first bracketed value in `body`, when the text around it is prose (no `bbox_2d`)."""
    span = boxformats.first_bracketed(body)
    if span is None:
        return None
    start, end = span
    if _BOX_KEY_TEXT.search(body, 0, start) or _BOX_KEY_TEXT.search(body, end):
        return None  # more objects outside it: a broken list, for `_salvage`
    decoded = boxformats.decode_value(body[start:end])
    if decoded is None:
        return None
    value = decoded.value
    if not isinstance(value, dict) and not any(isinstance(v, dict) for v in value):
        return None  # `[402, 85, 930, 700] knife` in prose is a plain-text box, not JSON
    col.forms.add(Form.PROSE_AROUND_JSON)
    return decoded


def _answer_body(text: str, col: Collector) -> str:
    """The answer without a closed `<think>` block and outside a code fence, stripped."""
    body, thought = boxformats.strip_reasoning(text or "")
    if thought:
        col.forms.add(Form.REASONING_BLOCK)
    body, fenced = boxformats.strip_fence(body)
    if fenced:
        col.forms.add(Form.MARKDOWN_FENCE)
    return body.strip()


def _read_json(body: str, col: Collector) -> bool | None:
    """Objects of a JSON-ish answer: None when none found, False for an empty list, else True."""
    decoded = boxformats.decode_value(body) or _decode_amid_prose(body, col)
    objects = _objects_from_value(decoded.value) if decoded is not None else None
    if decoded is not None and objects is not None:
        _note(decoded, col)
        _read_objects(objects, col)
        return bool(objects)
    col.forms.discard(Form.PROSE_AROUND_JSON)
    if _salvage(body, col):
        col.forms.add(Form.TRUNCATED_JSON)
        return True
    return None


def _parse_json_format(text: str, col: Collector) -> ParseResult:
    body = _answer_body(text, col)
    if not body:  # the format's empty answer is `[]`, not silence
        return col.result("empty answer")
    found = _read_json(body, col)
    if found is None:
        found = _read_text_forms(body, col, (Form.PLAIN_TEXT_LINES, Form.STRIPPED_QWEN2_TOKENS))
        if not found:
            return col.result("not JSON")
    return col.result("no valid box" if found else None)


def parse_qwen25(
    text: str, width: float, height: float, resized_width: float, resized_height: float
) -> ParseResult:
    """Qwen2.5-VL JSON boxes (resized-image pixels) in pixels of a width x height image."""
    if resized_width <= 0 or resized_height <= 0:
        raise ValueError("resized size must be positive")
    col = Collector(width, height, width / resized_width, height / resized_height)
    return _parse_json_format(text, col)


def parse_qwen3(text: str, width: float, height: float) -> ParseResult:
    """Qwen3-VL / Qwen3.5 JSON boxes (0-1000 of the image) in pixels of a width x height image."""
    col = Collector(width, height, width / RELATIVE_SCALE, height / RELATIVE_SCALE)
    return _parse_json_format(text, col)


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


def _read_qwen2_tokens(parts: list[str], col: Collector) -> None:
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


def parse_qwen2(text: str, width: float, height: float) -> ParseResult:
    """Qwen2-VL boxes (0-1000 of the image) in pixels of a width x height image."""
    col = Collector(width, height, width / RELATIVE_SCALE, height / RELATIVE_SCALE)
    parts = _QWEN2_TOKENS.split(text or "")
    if len(parts) > 1:
        _read_qwen2_tokens(parts, col)
        return col.result("no valid box" if col.candidates else "no boxes in output")
    body = _answer_body(text, col)
    if not body:  # the format's empty answer
        return col.result(None)
    if _read_text_forms(body, col, (Form.STRIPPED_QWEN2_TOKENS, Form.PLAIN_TEXT_LINES)):
        return col.result("no valid box")
    found = _read_json(body, col)
    if found is None:
        return col.result("no boxes in output")
    return col.result("no valid box" if found else None)


def parse_boxes(
    text: str,
    box_format: str,
    width: float,
    height: float,
    resized_width: float | None = None,
    resized_height: float | None = None,
) -> ParseResult:
    """Boxes in `text` for a model family's box format, in pixels of the original image.

    `resized_*` is the size the model saw; needed for `qwen2.5`, ignored by the 0-1000 formats.
    """
    if box_format == "qwen2":
        return parse_qwen2(text, width, height)
    if box_format == "qwen3":
        return parse_qwen3(text, width, height)
    if box_format == "qwen2.5":
        return parse_qwen25(
            text,
            width,
            height,
            resized_width if resized_width else width,
            resized_height if resized_height else height,
        )
    raise ValueError(f"unknown box format {box_format!r} (known: {', '.join(BOX_FORMATS)})")
