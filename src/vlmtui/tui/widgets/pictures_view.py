"""The highlighted run's eval pictures (gold and predicted boxes) next to its metrics.

Pictures are read from the run's host in a thread (remote hosts: over the shared
connection) and drawn by `textual_image`: kitty graphics or sixel where the terminal has
them, coloured half blocks elsewhere (tmux, tests). textual_image is imported on the first
picture, not at start, and without its terminal queries (see `image_class`).
"""

from __future__ import annotations

import io
import os
import sys
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from typing import Any, Literal

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.containers import Center, Horizontal, Vertical
from textual.widget import Widget
from textual.widgets import Static

from vlmtui.tui.messages import Picture

Protocol = Literal["tgp", "sixel", "halfcell", "unicode"]
PROTOCOL_ENV = "VLMTUI_IMAGES"
"""Forces how pictures are drawn: `kitty`, `sixel`, `halfblock` or `unicode`."""
_FORCED: dict[str, Protocol] = {
    "kitty": "tgp", "tgp": "tgp", "sixel": "sixel", "halfblock": "halfcell",
    "halfcell": "halfcell", "unicode": "unicode",
}  # fmt: skip
SIXEL_TERMS = ("foot", "mlterm", "contour", "yaft")
SIXEL_PROGRAMS = ("WezTerm", "iTerm.app", "mintty")
CACHED = 16
"""Decoded pictures kept, so stepping back and forth does not read them again."""


def protocol_for(env: Mapping[str, str]) -> Protocol:
    """How this terminal can show pictures, judged from its environment only: asking the
    terminal (as textual_image does on import) is impossible once Textual reads the input."""
    forced = _FORCED.get(env.get(PROTOCOL_ENV, "").strip().lower())
    if forced:
        return forced
    term, program = env.get("TERM", ""), env.get("TERM_PROGRAM", "")
    if env.get("TMUX") or term.startswith(("screen", "tmux")):
        return "halfcell"  # tmux passes graphics on only when built and set up for it
    if env.get("KITTY_WINDOW_ID") or term == "xterm-kitty":
        return "tgp"
    if term.startswith(SIXEL_TERMS) or program in SIXEL_PROGRAMS or env.get("KONSOLE_VERSION"):
        return "sixel"
    return "halfcell"


_classes: dict[Protocol, type[Widget]] = {}


def image_class(protocol: Protocol) -> type[Widget]:
    """textual_image's widget for `protocol`. Its first import asks the terminal about sixel,
    kitty graphics and the cell size, on stdout, waiting up to 0.1 s per answer; under a
    running Textual the answers would arrive as keystrokes. So the cell size is taken from
    the window size ioctl, and stdout is hidden from the import so that nothing is asked."""
    if protocol in _classes:
        return _classes[protocol]
    from textual_image import _terminal

    if not hasattr(_terminal.get_cell_size, "_result"):
        _terminal.get_cell_size._result = _cell_size(_terminal)  # type: ignore[attr-defined]
    stdout = sys.__stdout__
    sys.__stdout__ = _NoTerminal()  # type: ignore[misc,assignment]
    try:
        from textual_image import widget
    finally:
        sys.__stdout__ = stdout  # type: ignore[misc]
    _classes["tgp"], _classes["sixel"] = widget.TGPImage, widget.SixelImage
    _classes["halfcell"], _classes["unicode"] = widget.HalfcellImage, widget.UnicodeImage
    return _classes[protocol]


class _NoTerminal(io.StringIO):
    """What textual_image's import sees as stdout: open, and not a terminal."""

    def isatty(self) -> bool:
        return False


def _cell_size(terminal: Any) -> Any:
    """Pixels per cell from the window size ioctl; textual_image's default (10×20) if the
    terminal does not report its pixel size."""
    try:
        rows, cols, width, height = terminal.get_tiocgwinsz()
        if rows and cols and width and height:
            return terminal.CellSize(width // cols, height // rows)
    except (OSError, AttributeError, ValueError):
        pass
    return terminal.CellSize(10, 20)


def _warm_imports() -> None:
    """numpy (textual_image's sixel encoder, 0.1–0.2 s to import) loads here in the loader
    thread, so `image_class` on the UI thread takes milliseconds."""
    with suppress(ImportError):
        import numpy  # noqa: F401


def caption(pictures: Sequence[Picture], index: int) -> Text:
    p = pictures[index]
    text = Text()
    text.append(f"{index + 1}/{len(pictures)} ", style="bold")
    text.append(p.name)
    if p.gold is not None or p.pred is not None:
        text.append(f"  gold {_n(p.gold)} · pred {_n(p.pred)}", style="dim")
    return text


def _n(value: int | None) -> str:
    return "?" if value is None else str(value)


class PictureView(Horizontal):
    """The picture with its caption, and beside it the run's metrics."""

    def __init__(self, read_picture: Callable[[str, str], bytes], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.read_picture = read_picture
        self.run_id: str | None = None
        self.host = ""
        self.pictures: tuple[Picture, ...] = ()
        self.index = 0
        self.active = False
        """Loads pictures only while shown."""
        self.shown: str | None = None
        """Path of the picture on screen."""
        self.drawn: float | None = None
        """When the run's last eval drew its pictures (eval.json's `created`): an eval run
        again redraws them under the same names, so a picture is kept with its stamp."""
        self._shown_drawn: float | None = None
        self.image: Widget | None = None
        self._cache: OrderedDict[tuple[str, str], tuple[float | None, Any]] = OrderedDict()
        self._errors: dict[tuple[str, str], str] = {}
        """Pictures that could not be read, not asked for again at every refresh."""

    def compose(self) -> ComposeResult:
        with Vertical(id="picture-box"):
            yield Static("", id="picture-caption")
            # Hidden while empty: an empty container renders its own name ("Center#…").
            frame = Center(id="picture-frame")
            frame.display = False
            yield frame
        yield Static("", id="picture-metrics")

    def show_run(
        self,
        run_id: str,
        host: str,
        pictures: tuple[Picture, ...],
        metrics: Text,
        drawn: float | None = None,
    ) -> None:
        if (run_id, pictures, drawn) != (self.run_id, self.pictures, self.drawn):
            same_run = run_id == self.run_id
            self.index = max(0, min(self.index, len(pictures) - 1)) if same_run else 0
            self._errors.clear()
        self.run_id, self.host, self.pictures, self.drawn = run_id, host, pictures, drawn
        self.query_one("#picture-metrics", Static).update(metrics)
        self._show()

    def activate(self, active: bool) -> None:
        self.active = active
        self._show()

    def step(self, delta: int) -> None:
        if self.pictures:
            self.index = (self.index + delta) % len(self.pictures)
            self._show()

    def _show(self) -> None:
        cap = self.query_one("#picture-caption", Static)
        if not self.pictures:
            hint = f"no pictures: vlmtui eval {self.run_id} --data DATA --pictures 8"
            cap.update(Text(hint, style="dim"))
            self._set_image(None, None)
            return
        cap.update(caption(self.pictures, self.index))
        if not self.active:
            return
        key = (self.host, self.pictures[self.index].path)
        if key in self._cache and self._cache[key][0] == self.drawn:
            self._cache.move_to_end(key)
            self._set_image(key[1], self._cache[key][1])
        elif key in self._errors:
            self._failed(key, self._errors[key])
        else:
            self._fetch(key, self.drawn)

    @work(thread=True, exclusive=True, group="picture", exit_on_error=False)
    def _fetch(self, key: tuple[str, str], drawn: float | None) -> None:
        from PIL import Image

        _warm_imports()
        try:
            img = Image.open(io.BytesIO(self.read_picture(*key)))
            img.load()
        except Exception as exc:  # a missing file, an unreachable host, a broken PNG
            self.app.call_from_thread(self._failed, key, str(exc))
            return
        self.app.call_from_thread(self._loaded, key, drawn, img)

    def _loaded(self, key: tuple[str, str], drawn: float | None, img: Any) -> None:
        self._cache[key] = (drawn, img)
        while len(self._cache) > CACHED:
            self._cache.popitem(last=False)
        here = self.pictures and key == (self.host, self.pictures[self.index].path)
        if here and drawn == self.drawn:
            self._set_image(key[1], img)

    def _failed(self, key: tuple[str, str], error: str) -> None:
        self._errors[key] = error
        if self.pictures and key == (self.host, self.pictures[self.index].path):
            where = f"pictures are on {self.host} at {key[1].rpartition('/')[0]}"
            text = caption(self.pictures, self.index)
            text.append(f"\n{where} (cannot read: {error})", style="red")
            self.query_one("#picture-caption", Static).update(text)
            self._set_image(None, None)

    def _set_image(self, path: str | None, img: Any) -> None:
        if path is not None and (path, self.drawn) == (self.shown, self._shown_drawn):
            return  # the refresh every few seconds must not redraw (kitty, sixel: flicker)
        self.query_one("#picture-frame").display = img is not None
        if self.image is None and img is not None:
            self.image = image_class(protocol_for(os.environ))(img, id="picture")
            self.query_one("#picture-frame").mount(self.image)
        elif self.image is not None:
            self.image.image = img  # type: ignore[attr-defined]
            self.image.display = img is not None
        self.shown, self._shown_drawn = path, self.drawn
