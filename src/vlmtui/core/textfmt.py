"""Plain-text formatting shared by the CLI and the app: clock durations and paths shortened
in the middle. Identifiers (recipe names, run ids, host names) are never shortened: callers
size their columns to them instead."""

from __future__ import annotations

ELLIPSIS = "…"


def clock(seconds: float | None) -> str:
    """`245` -> `4:05`, `3753` -> `1:02:33`; None or negative -> `–`."""
    if seconds is None or seconds < 0:
        return "–"
    s = int(seconds)
    hours, rest = divmod(s, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def middle(text: str, width: int) -> str:
    """`text` in at most `width` characters, cut in the middle so the head and the
    distinguishing tail (a path's last components, a module's leaf) both stay readable.
    The tail gets the larger share and starts at a separator when one is near."""
    if len(text) <= width:
        return text
    if width <= 1:
        return ELLIPSIS[:width]
    keep = width - 1
    head_len = keep // 3
    tail_len = keep - head_len
    tail = text[-tail_len:]
    for sep in ("/", "."):
        cut = tail.find(sep)
        if 0 < cut <= tail_len // 3:
            tail = tail[cut:]
            head_len = keep - len(tail)
            break
    return text[:head_len] + ELLIPSIS + tail
