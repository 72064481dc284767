"""Which columns of the GPU table fit the pane, and how wide each is, so the table never
scrolls sideways: the GPU name goes first, then the bars (the labels stay), then the process
list becomes a count. Host and GPU index are always whole (identifiers are never cut); the
two history sparklines take what is left, between SPARK_MIN and SPARK_MAX characters."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from vlmtui.tui.sources import GPU_STATE_STYLES

PAD = 2
"""DataTable's cell padding: one column each side of every cell."""
BAR = 8
SPARK_MIN = 8
SPARK_MAX = 20
PROCS_MIN = 24
"""The process list needs room for `run <run id>` to be worth showing in full."""
STATE_W = max(len(s) for s in GPU_STATE_STYLES)
UTIL_LABEL_W = 4

Mode = Literal["full", "no-name", "compact", "bare"]
MODES: tuple[Mode, ...] = ("full", "no-name", "compact", "bare")


@dataclass(frozen=True)
class Widths:
    """Widths of the snapshot's variable cells."""

    host: int
    name: int
    mem: int
    """The widest memory label (`80.0/80G`) any of the GPUs can show."""
    count: int
    """The widest process count (`2 procs`)."""


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    width: int


@dataclass(frozen=True)
class Layout:
    mode: Mode
    columns: tuple[Column, ...]
    spark: int

    @property
    def bars(self) -> bool:
        return self.mode in ("full", "no-name")

    @property
    def width(self) -> int:
        """Cells the table takes, padding included."""
        return sum(c.width + PAD for c in self.columns)

    def has(self, key: str) -> bool:
        return any(c.key == key for c in self.columns)

    def column(self, key: str) -> Column:
        return next(c for c in self.columns if c.key == key)


def _columns(mode: Mode, spark: int, procs: int, w: Widths, window: str) -> tuple[Column, ...]:
    bars = mode in ("full", "no-name")
    cols = [Column("host", "host", max(4, w.host)), Column("gpu", "gpu", 3)]
    if mode == "full":
        cols.append(Column("name", "name", max(4, w.name)))
    cols += [
        Column("state", "state", STATE_W),
        Column("util", "util", BAR + 1 + UTIL_LABEL_W if bars else UTIL_LABEL_W),
        Column("util_hist", f"util {window}", spark),
        Column("memory", "memory" if bars else "mem", BAR + 1 + w.mem if bars else w.mem),
        Column("mem_hist", f"mem {window}", spark),
    ]
    if mode != "bare":
        cols.append(Column("processes", "processes" if bars else "procs", procs))
    return tuple(cols)


def _procs_min(mode: Mode, w: Widths) -> int:
    return PROCS_MIN if mode in ("full", "no-name") else max(5, w.count)


def _room(mode: Mode, avail: int, w: Widths, window: str) -> int:
    """Columns left for the two sparklines together."""
    return avail - Layout(mode, _columns(mode, 0, _procs_min(mode, w), w, window), 0).width


def choose_layout(avail: int, w: Widths, window: str) -> Layout:
    """The richest layout whose sparklines get at least SPARK_MIN characters in `avail`
    columns; the barest one (which scrolls) when even that does not fit."""
    fits = [m for m in MODES if _room(m, avail, w, window) >= 2 * SPARK_MIN]
    mode = fits[0] if fits else MODES[-1]
    room = _room(mode, avail, w, window)
    spark = max(SPARK_MIN, min(SPARK_MAX, room // 2))
    procs = _procs_min(mode, w)
    if mode in ("full", "no-name"):
        procs += room - 2 * spark
    return Layout(mode, _columns(mode, spark, procs, w, window), spark)
