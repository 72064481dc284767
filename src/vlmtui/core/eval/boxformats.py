"""Lenient decoding of JSON-ish model answers: what a reader reads as a list, this reads too.

Real Qwen answers stray from strict JSON in a few known ways, and each is read, not failed:

- a ```json fence, often with prose after it (Qwen2.5-VL / Qwen3-VL cookbooks);
- a `<think>…</think>` block before the answer (Qwen3.5 thinks by default);
- Python literals with single quotes: the Qwen cookbooks read answers with `ast.literal_eval`,
  so answers in that shape are what the authors themselves accept;
- a trailing comma after the last element or key (the SFT answer shape a Qwen maintainer posted
  in QwenLM/Qwen3-VL#1094 ends its list with `},\\n]`);
- prose around one complete list ("Here are the boxes: [...]");
- a list cut off by max_new_tokens: `balanced_objects` finds each complete `{...}` in it.

Integers are decoded as floats, so a coordinate of hundreds of digits (a degenerate generation
loop, as in deepseek-ai/DeepSeek-VL2#96) becomes inf and is counted as an invalid box later
instead of raising OverflowError on the way to float. Nothing here raises on model output.
"""

from __future__ import annotations

import ast
import json
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

_FENCE = re.compile(r"```[ \t]*(?:json|JSON|python)?[ \t]*\n?(.*?)(?:```|$)", re.DOTALL)
_THINK_END = "</think>"
_OPENERS = {"[": "]", "{": "}"}
_QUOTE_AFTER = frozenset("[{(,:")
"""A quote opens a string only after one of these (or at the start): `Here's [...]` has an
apostrophe that is prose, not a Python string."""
_HUGE_INT = re.compile(r"(?<![\w.])\d{400,}")
"""Python refuses int literals over 4300 digits (ValueError): such a run is read as inf, which
is what the JSON path (integers parsed as floats) makes of it too."""
_LITERAL_ERRORS = (ValueError, SyntaxError, TypeError, MemoryError, RecursionError, OverflowError)


@dataclass(frozen=True)
class Decoded:
    value: Any
    python_literal: bool = False
    trailing_comma: bool = False


def strip_reasoning(text: str) -> tuple[str, bool]:
    """The answer after a closed `<think>` block, and whether there was one."""
    cut = text.rfind(_THINK_END)
    if cut == -1:
        return text, False
    return text[cut + len(_THINK_END) :], True


def strip_fence(text: str) -> tuple[str, bool]:
    """The body of the first markdown code fence, and whether there was one."""
    m = _FENCE.search(text)
    return (m.group(1), True) if m else (text, False)


def _outside_strings(text: str) -> Iterator[tuple[int, str]]:
    """(index, char) of every character that is not inside a quoted string."""
    quote = ""
    escaped = False
    last = ""  # last non-space character outside strings
    for i, ch in enumerate(text):
        if quote:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                quote = ""
                last = ch
            continue
        if ch in "\"'" and (not last or last in _QUOTE_AFTER):
            quote = ch
            continue
        if not ch.isspace():
            last = ch
        yield i, ch


def _trailing_commas(text: str) -> list[int]:
    """Indexes of commas followed (after whitespace) by a closing bracket."""
    out = []
    pending = -1
    for i, ch in _outside_strings(text):
        if ch == ",":
            pending = i
        elif ch in "]}" and pending != -1:
            out.append(pending)
            pending = -1
        elif not ch.isspace():
            pending = -1
    return out


def _json(text: str) -> Any:
    return json.loads(text, parse_int=float)


def decode_value(text: str) -> Decoded | None:
    """`text` as one JSON value, else with trailing commas dropped, else as a Python literal."""
    try:
        return Decoded(_json(text))
    except (ValueError, RecursionError):
        pass
    commas = _trailing_commas(text)
    if commas:
        drop = set(commas)
        fixed = "".join(ch for i, ch in enumerate(text) if i not in drop)
        try:
            return Decoded(_json(fixed), trailing_comma=True)
        except (ValueError, RecursionError):
            pass
    text = text.strip()
    if not text.startswith(("[", "{")):
        return None  # `1,2,3,4 cat` would be a Python tuple: answers are lists or objects
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # compile's SyntaxWarnings about model output
            value = ast.literal_eval(_HUGE_INT.sub("1e999", text))
    except _LITERAL_ERRORS:
        return None
    return Decoded(value, python_literal=True, trailing_comma=bool(commas))


def first_bracketed(text: str) -> tuple[int, int] | None:
    """(start, end) of the first complete `[...]` or `{...}` (brackets matched outside strings)."""
    stack: list[str] = []
    start = -1
    for i, ch in _outside_strings(text):
        if ch in _OPENERS:
            if not stack:
                start = i
            stack.append(_OPENERS[ch])
        elif stack and ch == stack[-1]:
            stack.pop()
            if not stack:
                return start, i + 1
        elif stack and ch in "]}":
            return None  # mismatched: not one well-formed value
    return None


def balanced_objects(text: str, max_height: int = 2) -> list[tuple[int, int]]:
    """(start, end) of the complete `{...}` in `text`, in text order, at most `max_height` high.

    Height 1 is an object with no object inside; a box object is 1, or 2 with an attribute
    object. Taller ones (wrappers, nested garbage) are left out, so every character lies in
    at most `max_height` spans and decoding them all stays linear in the text.
    """
    stack: list[list[int]] = []  # [start, height of the tallest object inside so far]
    pairs = []
    for i, ch in _outside_strings(text):
        if ch == "{":
            stack.append([i, 0])
        elif ch == "}" and stack:
            start, inner = stack.pop()
            height = inner + 1
            if stack:
                stack[-1][1] = max(stack[-1][1], height)
            if height <= max_height:
                pairs.append((start, i + 1))
    pairs.sort()
    return pairs
