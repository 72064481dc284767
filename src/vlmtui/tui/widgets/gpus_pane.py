"""The GPUs pane: every host × GPU with utilisation and memory bars, their history over the
last minutes as sparklines (as nvitop draws them), processes, and its state (free / busy /
reserved / unreachable).

It only renders snapshots (`core.gpus.HostGpus`) handed to `show`; the refresh runs in a
worker, so a slow or dead host never delays a key press. Rows are updated in place when the
set of GPUs and the columns are unchanged, so a refresh does not move the cursor. The
columns follow the pane's width (`gpu_columns`): at 80 columns nothing scrolls sideways.
"""

from __future__ import annotations

import time
from typing import Any

from rich.cells import cell_len
from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import DataTable, Static

from vlmtui.tui.sources import GPU_STATE_STYLES
from vlmtui.tui.widgets.bars import bar, sparkline
from vlmtui.tui.widgets.gpu_columns import BAR, Layout, Widths, choose_layout
from vlmtui.tui.widgets.gpu_history import GpuHistory, mem_fraction, window_label

STATE_STYLE = GPU_STATE_STYLES
SCROLLBAR = 2
"""Columns a vertical scrollbar takes from the table once the rows outgrow it."""
CHROME_ROWS = 6
"""Rows above and below the table (header, tabs, summary, footer) before it has a size."""


def _procs(gpu: Any) -> str:
    head = f"run {gpu.reserved_by}" if gpu.reserved_by else ""
    items = [f"{p.pid} {(p.name or '?').split('/')[-1][:18]}" for p in gpu.processes[:2]]
    more = f" +{len(gpu.processes) - 2}" if len(gpu.processes) > 2 else ""
    return "; ".join(x for x in (head, *items) if x) + more or "–"


def _count(gpu: Any) -> str:
    n = len(gpu.processes)
    return f"{n} proc{'s' * (n != 1)}" if n else "–"


def _mem_label(used: float | None, total: float | None) -> str:
    if not total:
        return "?"
    return f"{'?' if used is None else f'{used / 1024:.1f}'}/{total / 1024:.0f}G"


def _cut(text: str, width: int) -> str:
    """Descriptions (errors, process lists) end in `…` where the column ends."""
    return text if cell_len(text) <= width else text[: max(0, width - 1)] + "…"


def _widths(hosts: list[Any]) -> Widths:
    gpus = [g for h in hosts if h.reachable for g in h.gpus]
    return Widths(
        host=max((cell_len(h.name) for h in hosts), default=4),
        name=max((cell_len(_name(g)) for g in gpus), default=4),
        mem=max((len(_mem_label(g.mem_total_mib, g.mem_total_mib)) for g in gpus), default=3),
        count=max((len(_count(g)) for g in gpus), default=1),
    )


def _name(gpu: Any) -> str:
    return str(gpu.name).removeprefix("NVIDIA ")


class GpusPane(Vertical):
    """A table of all GPUs; `show(hosts, at)` records a snapshot and draws it."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.history = GpuHistory()
        self.hosts: list[Any] = []
        self.refreshes = 0
        self.columns_layout: Layout | None = None

    def compose(self) -> ComposeResult:
        yield Static("waiting for the first GPU snapshot…", id="gpus-summary")
        yield DataTable(id="gpus-table", cursor_type="row", zebra_stripes=True)

    def show(self, hosts: list[Any], at: float | None = None) -> None:
        """A new snapshot of every host, taken at `at` (seconds since the epoch; now if None)."""
        self.hosts = hosts
        self.refreshes += 1
        self.history.record(hosts, time.time() if at is None else at)
        self._draw()
        total = sum(len(h.gpus) for h in hosts if h.reachable)
        free = sum(bool(g.free) for h in hosts if h.reachable for g in h.gpus)
        down = [h for h in hosts if not h.reachable]
        summary = f"{len(hosts)} host(s), {total} GPU(s), {free} free"
        if down:
            summary += f", {len(down)} unreachable"
        notes = [f"{h.name}: {h.error or h.note}" for h in hosts if h.note or not h.reachable]
        if notes:
            summary += "  · " + "; ".join(notes)
        self.query_one("#gpus-summary", Static).update(summary)

    def on_resize(self, event: events.Resize) -> None:
        if self.hosts:
            self._draw()

    def _avail(self, rows: int) -> int:
        """Columns the table can fill without scrolling sideways (the pane is hidden, and has
        no size, until its tab is first shown: the app's size stands in)."""
        table = self.query_one("#gpus-table", DataTable)
        width = table.size.width or self.app.size.width
        height = table.size.height or self.app.size.height - CHROME_ROWS
        return width - (SCROLLBAR if rows + 1 > height else 0)

    def _draw(self) -> None:
        rows: list[tuple[str, dict[str, Any]]] = []
        for h in self.hosts:
            if not h.reachable:
                rows.append((h.name, self._host_cells(h.name, "unreachable", h.error or "")))
            elif not h.gpus:
                rows.append((h.name, self._host_cells(h.name, "cpu", "no GPU, CPU runs")))
            else:
                rows += [(f"{h.name}:{g.index}", self._gpu_cells(h.name, g)) for g in h.gpus]
        window = window_label(self.history.window_s)
        layout = choose_layout(self._avail(len(rows)), _widths(self.hosts), window)
        self._apply(layout, [(key, self._fill(layout, cells)) for key, cells in rows])

    def _gpu_cells(self, host: str, g: Any) -> dict[str, Any]:
        """Every cell a GPU row can show; `_fill` sizes them to the layout."""
        util = None if g.util_pct is None else g.util_pct / 100
        util_label = f"{g.util_pct:3.0f}%" if g.util_pct is not None else "   ?"
        mem_label = _mem_label(g.mem_used_mib, g.mem_total_mib)
        return {
            "host": host,
            "gpu": str(g.index),
            "name": _name(g),
            "state": Text(g.state, style=STATE_STYLE[g.state]),
            "util": (util, util_label),
            "memory": (mem_fraction(g.mem_used_mib, g.mem_total_mib), mem_label),
            "history": (host, g.index),
            "processes": _procs(g),
            "count": _count(g),
        }

    def _host_cells(self, host: str, state: str, text: str) -> dict[str, Any]:
        """A host without GPU rows; the error or note goes in its widest free column."""
        label = Text(state, style=STATE_STYLE[state])
        return {"host": host, "gpu": "–", "name": "–", "state": label, "note": text}

    def _fill(self, layout: Layout, cells: dict[str, Any]) -> list[Any]:
        """The row's cells for `layout`'s columns, each within its column's width."""
        util_hist: Text | str = ""
        mem_hist: Text | str = ""
        if "history" in cells:
            util_vals, mem_vals = self.history.series(cells["history"], layout.spark)
            util_hist = sparkline(util_vals, layout.spark, gap="·")
            mem_hist = sparkline(mem_vals, layout.spark, top=1.0, gap="·", style="magenta")
        note_key = ""
        if "note" in cells:  # a host row: its note goes where there is most room
            wide = max(
                (c for c in layout.columns if c.key in ("util_hist", "processes")),
                key=lambda c: c.width,
            )
            note_key = wide.key
        out: list[Any] = []
        for col in layout.columns:
            if col.key == note_key:
                out.append(Text(_cut(cells["note"], col.width), style="dim"))
            elif col.key in ("util", "memory"):
                if col.key not in cells:
                    out.append("")
                    continue
                fraction, label = cells[col.key]
                label = label.rjust(col.width - (BAR + 1 if layout.bars else 0))
                out.append(bar(fraction, BAR, label) if layout.bars else Text(label))
            elif col.key in ("util_hist", "mem_hist"):
                out.append(util_hist if col.key == "util_hist" else mem_hist)
            elif col.key == "processes":
                text = "" if note_key else cells["processes" if layout.bars else "count"]
                out.append(Text(_cut(text, col.width)))
            else:
                out.append(cells[col.key])
        return out

    def _apply(self, layout: Layout, rows: list[tuple[str, list[Any]]]) -> None:
        table = self.query_one("#gpus-table", DataTable)
        keys = [k for k, _ in rows]
        if layout == self.columns_layout and [r.value for r in table.rows] == keys:
            # Only changed cells: each update_cell repaints the table (half the refresh time).
            for key, cells in rows:
                old = table.get_row(key)
                for col, cell, was in zip(layout.columns, cells, old, strict=True):
                    if cell != was:
                        table.update_cell(key, col.key, cell)
            return
        cursor = table.cursor_row
        table.clear(columns=layout != self.columns_layout)
        if layout != self.columns_layout:
            for col in layout.columns:
                table.add_column(col.label, width=col.width, key=col.key)
            self.columns_layout = layout
        for key, cells in rows:
            table.add_row(*cells, key=key)
        if table.row_count:
            table.move_cursor(row=min(cursor, table.row_count - 1))

    def selected_device(self) -> tuple[str, str] | None:
        """(host, device) of the highlighted row: a GPU index, or `cpu` for a GPU-less host."""
        table = self.query_one("#gpus-table", DataTable)
        if not table.row_count:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value or ""
        host, _, idx = key.partition(":")
        return host, idx or "cpu"
