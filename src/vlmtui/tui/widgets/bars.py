"""Text bars and sparklines for table cells: cheap Rich `Text`, no widget per GPU."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text

from vlmtui.tui.sources import clock

SPARK = "▁▂▃▄▅▆▇█"


def bar(fraction: float | None, width: int = 10, label: str = "") -> Text:
    """`█████░░░░░ label`, coloured by load; `fraction` None shows an unknown bar."""
    if fraction is None:
        return Text("·" * width + (f" {label}" if label else ""), style="dim")
    fraction = min(1.0, max(0.0, fraction))
    full = round(fraction * width)
    style = "green" if fraction < 0.5 else "yellow" if fraction < 0.85 else "red"
    text = Text("█" * full, style=style)
    text.append("░" * (width - full), style="dim")
    if label:
        text.append(f" {label}")
    return text


def sparkline(
    values: Sequence[float | None],
    width: int = 12,
    top: float = 100.0,
    bottom: float = 0.0,
    gap: str = " ",
    style: str = "cyan",
) -> Text:
    """The last `width` values as block characters scaled between `bottom` and `top`.

    None before the first value is blank (no history yet); None after it is `gap` (dim), so
    a host that was unreachable for a while shows a hole, not a drop to zero."""
    vals = list(values)[-width:]
    span = (top - bottom) or 1.0
    chars: list[str] = []
    gaps: list[int] = []
    started = False
    for v in vals:
        if v is None:
            if started:
                gaps.append(len(chars))
            chars.append(gap if started else " ")
            continue
        started = True
        level = int(min(1.0, max(0.0, (v - bottom) / span)) * (len(SPARK) - 1) + 0.5)
        chars.append(SPARK[level])
    pad = width - len(chars)
    text = Text(" " * pad + "".join(chars), style=style)
    for i in gaps:
        text.stylize("dim", pad + i, pad + i + 1)
    return text


def human(n: int | float | None) -> str:
    """1234567 -> `1.2M`."""
    if n is None:
        return "–"
    for unit, div in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.1f}{unit}"
    return f"{int(n)}"


def duration(seconds: float | None) -> str:
    """`4:05`, `1:02:33`; `–` when unknown."""
    return clock(seconds)
