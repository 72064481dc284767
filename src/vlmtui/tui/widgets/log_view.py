"""A bounded, followable, searchable view of a run's output lines.

Keeps at most `max_lines` lines (a deque, so memory is bounded however fast the run writes),
renders only the visible lines (Line API), follows the end unless the user scrolled back, and
highlights a search term, jumping between matches with `n` / `N`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Any, ClassVar

from rich.style import Style
from rich.text import Text
from textual.binding import Binding, BindingType
from textual.geometry import Size
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from vlmtui.tui.sources import DEFAULTS

DEFAULT_MAX_LINES = DEFAULTS.log_lines
"""Lines kept without settings.toml's `log_lines`."""


class LogView(ScrollView, can_focus=True):
    """Output lines of one run. `write_lines` appends; `clear` empties."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {"log-view--match"}
    BINDINGS: ClassVar[list[BindingType]] = [
        # not in the footer: at 80 columns it pushed Dispatch and Quit off (`?` lists it)
        Binding("f", "toggle_follow", "Follow", show=False, id="log.follow"),
        Binding("n", "next_match", "Next match", show=False, id="log.next"),
        Binding("N", "prev_match", "Prev match", show=False, id="log.prev"),
        Binding("g", "scroll_home", "Top", show=False),
        Binding("G", "scroll_end", "End", show=False),
    ]

    follow: reactive[bool] = reactive(True)
    """Stick to the newest line; scrolling up turns it off, `f` or End turns it on."""
    search: reactive[str] = reactive("")

    def __init__(self, max_lines: int = DEFAULT_MAX_LINES, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.max_lines = max_lines
        self.lines: deque[str] = deque(maxlen=max_lines)
        self._width = 0
        self._match_row: int | None = None

    def write_lines(self, lines: Iterable[str]) -> None:
        """Append lines (tabs expanded, control characters dropped); keeps the newest."""
        added = 0
        width = self._width
        for line in lines:
            clean = line.expandtabs().translate(_CONTROL)
            self.lines.append(clean)
            width = max(width, len(clean))
            added += 1
        if not added:
            return
        self._width = min(width, 1000)
        self.virtual_size = Size(self._width, len(self.lines))
        if self.follow:
            self.scroll_end(animate=False, immediate=True, x_axis=False, force=True)
        self.refresh()

    def clear(self) -> None:
        self.lines.clear()
        self._width = 0
        self._match_row = None
        self.virtual_size = Size(0, 0)
        self.scroll_to(0, 0, animate=False)
        self.refresh()

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        row = scroll_y + y
        width = self.size.width
        style = self.rich_style
        if row >= len(self.lines):
            return Strip.blank(width, style)
        text = Text(self.lines[row], style=style, no_wrap=True, end="")
        if self.search:
            match_style = self.get_component_rich_style("log-view--match")
            text.highlight_words([self.search], match_style, case_sensitive=False)
            if row == self._match_row:
                text.stylize(Style(reverse=True))
        segments = list(text.render(self.app.console))
        strip = Strip(segments).crop_extend(scroll_x, scroll_x + width, style)
        return strip

    def watch_scroll_y(self, old: float, new: float) -> None:
        super().watch_scroll_y(old, new)
        if new < old and new < self.max_scroll_y:
            self.follow = False
        elif new >= self.max_scroll_y:
            self.follow = True

    def watch_follow(self, follow: bool) -> None:
        self.set_class(follow, "-following")
        if follow:
            self.scroll_end(animate=False, immediate=True, x_axis=False, force=True)

    def watch_search(self) -> None:
        self._match_row = None
        self.refresh()

    def action_toggle_follow(self) -> None:
        self.follow = not self.follow

    def action_scroll_end(self) -> None:
        self.follow = True

    def action_next_match(self) -> None:
        self.find(forward=True)

    def action_prev_match(self) -> None:
        self.find(forward=False)

    def find(self, forward: bool = True) -> int | None:
        """Move to the next (or previous) line containing the search term; its row or None."""
        term = self.search.lower()
        if not term or not self.lines:
            return None
        n = len(self.lines)
        start = (
            self._match_row
            if self._match_row is not None
            else (int(self.scroll_y) + (0 if forward else self.size.height))
        )
        step = 1 if forward else -1
        row = start
        for _ in range(n):
            row = (row + step) % n
            if term in self.lines[row].lower():
                self._match_row = row
                self.follow = False
                self.scroll_to(y=max(0, row - self.size.height // 2), animate=False)
                self.refresh()
                return row
        self.notify(f"no match for {self.search!r}", severity="warning", timeout=2)
        return None

    @property
    def line_count(self) -> int:
        return len(self.lines)


_CONTROL = {c: None for c in range(32) if c != 9} | {127: None}


__all__ = ["DEFAULT_MAX_LINES", "LogView"]
