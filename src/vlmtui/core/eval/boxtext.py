"""Boxes written as plain text rather than JSON or special tokens.

Two shapes a reader reads as boxes:

- One box per line, `x1,y1,x2,y2 label`: Qwen's grounding answers come as "JSON/XML/Plain-Text"
  (a Qwen maintainer in QwenLM/Qwen3-VL#733); list markers and brackets around the numbers are
  tolerated (`- [10, 20, 30, 40] cat`).
- Qwen2-VL's token format with its special tokens stripped, `label(x1,y1),(x2,y2)`, as servers
  that skip special tokens print it (vllm-project/vllm#27636 shows `图片(460,66),(683,252)`).
  A box with no text before it takes the previous label, as `<|box_start|>` groups do.

Each function returns a `RawBox` per box, in text order; the caller validates and scales them.
Numbers are kept as text so a coordinate of hundreds of digits becomes inf in `float()` rather
than an overflow.
"""

from __future__ import annotations

import re

_NUM = r"([-+]?(?:\d+(?:\.\d*)?|\.\d+|nan|inf(?:inity)?))"
_SEP = r"\s*,\s*"
_LINE = re.compile(
    r"^\s*(?:[-*•]\s+|\d+[.)]\s+)?[\[(]?\s*"
    + _SEP.join([_NUM] * 4)
    + r"\s*[\])]?\s*[:\-–—]?(.*)$",  # greedy: a lazy label before `\s*$` is quadratic
    re.IGNORECASE,
)
_PAIR = rf"\(\s*{_NUM}{_SEP}{_NUM}\s*\)"
_TOKEN_BOX = re.compile(rf"{_PAIR}\s*,?\s*{_PAIR}", re.IGNORECASE)
_PARTIAL_BOX = re.compile(r"\(\s*[-+]?[\d.]")
_LABEL_PUNCT = " \t\r\n,;:.、，；："

RawBox = tuple[str | None, list[str] | None]
"""(label or None, four coordinate strings, or None for a box cut off by the end of the text)."""


def plain_text_lines(text: str) -> list[RawBox]:
    """Boxes from lines shaped `x1,y1,x2,y2 label`; other lines are prose and skipped."""
    out: list[RawBox] = []
    for line in text.splitlines():
        m = _LINE.match(line)
        if m is not None:
            out.append((m.group(5).strip() or None, [m.group(k) for k in range(1, 5)]))
    return out


def stripped_qwen2_tokens(text: str) -> list[RawBox]:
    """Boxes from `label(x1,y1),(x2,y2)` runs: Qwen2-VL's format minus its special tokens."""
    out: list[RawBox] = []
    label: str | None = None
    prev_end = 0
    for m in _TOKEN_BOX.finditer(text):
        before = text[prev_end : m.start()].strip(_LABEL_PUNCT)
        if before:
            label = before
        out.append((label, [m.group(k) for k in range(1, 5)]))
        prev_end = m.end()
    if out and _PARTIAL_BOX.search(text, prev_end):
        out.append((label, None))  # cut off mid-box, like an unclosed <|box_start|>
    return out
