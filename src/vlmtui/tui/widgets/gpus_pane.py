"""The GPUs pane: every host × GPU with utilisation and memory bars, a utilisation history,
processes, and its state (free / busy / reserved / unreachable).

It only renders snapshots (`core.gpus.HostGpus`) handed to `show`; the refresh runs in a
worker, so a slow or dead host never delays a key press. Rows are updated in place when the
set of GPUs is unchanged, so a refresh does not move the cursor.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import DataTable, Static

from vlmtui.tui.sources import GPU_STATE_STYLES
from vlmtui.tui.widgets.bars import bar, sparkline

HISTORY = 30
STATE_STYLE = GPU_STATE_STYLES
COLUMNS = ("host", "gpu", "name", "state", "util", "history", "memory", "processes")


def _procs(gpu: Any) -> str:
    head = f"run {gpu.reserved_by}" if gpu.reserved_by else ""
    items = [f"{p.pid} {(p.name or '?').split('/')[-1][:18]}" for p in gpu.processes[:2]]
    more = f" +{len(gpu.processes) - 2}" if len(gpu.processes) > 2 else ""
    return "; ".join(x for x in (head, *items) if x) + more or "–"


class GpusPane(Vertical):
    """A table of all GPUs; `show(hosts)` swaps in a new snapshot."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.history: dict[tuple[str, int], deque[float | None]] = {}
        self.hosts: list[Any] = []
        self.refreshes = 0

    def compose(self) -> ComposeResult:
        yield Static("waiting for the first GPU snapshot…", id="gpus-summary")
        table: DataTable = DataTable(id="gpus-table", cursor_type="row", zebra_stripes=True)
        for col in COLUMNS:
            table.add_column(col, key=col)
        yield table

    def show(self, hosts: list[Any]) -> None:
        self.hosts = hosts
        self.refreshes += 1
        rows: list[tuple[str, list[Any]]] = []
        free = total = 0
        for h in hosts:
            if not h.reachable:
                rows.append((h.name, self._host_row(h.name, "unreachable", h.error or "")))
                continue
            if not h.gpus:
                rows.append((h.name, self._host_row(h.name, "cpu", "no GPU: runs use the CPU")))
                continue
            for g in h.gpus:
                total += 1
                free += bool(g.free)
                hist = self.history.setdefault((h.name, g.index), deque(maxlen=HISTORY))
                hist.append(g.util_pct)
                state = g.state
                mem = None
                if g.mem_used_mib is not None and g.mem_total_mib:
                    mem = g.mem_used_mib / g.mem_total_mib
                mem_label = (
                    f"{(g.mem_used_mib or 0) / 1024:.1f}/{g.mem_total_mib / 1024:.0f}G"
                    if g.mem_total_mib
                    else "?"
                )
                util_label = f"{g.util_pct:3.0f}%" if g.util_pct is not None else "  ?"
                rows.append(
                    (
                        f"{h.name}:{g.index}",
                        [
                            h.name,
                            str(g.index),
                            g.name.removeprefix("NVIDIA "),
                            Text(state, style=STATE_STYLE[state]),
                            bar(None if g.util_pct is None else g.util_pct / 100, 8, util_label),
                            sparkline(hist, 12),
                            bar(mem, 8, mem_label),
                            _procs(g),
                        ],
                    )
                )
        self._apply(rows)
        down = sum(not h.reachable for h in hosts)
        summary = f"{len(hosts)} host(s), {total} GPU(s), {free} free"
        if down:
            summary += f", {down} unreachable"
        notes = [f"{h.name}: {h.note}" for h in hosts if h.note]
        if notes:
            summary += "  · " + "; ".join(notes)
        self.query_one("#gpus-summary", Static).update(summary)

    def _host_row(self, host: str, state: str, text: str) -> list[Any]:
        """A host without GPU rows; the error or note goes in the last column."""
        text = text if len(text) <= 60 else text[:59] + "…"
        label = Text(state, style=STATE_STYLE[state])
        return [host, "–", "–", label, "", "", "", Text(text, style="dim")]

    def _apply(self, rows: list[tuple[str, list[Any]]]) -> None:
        table = self.query_one("#gpus-table", DataTable)
        keys = [k for k, _ in rows]
        if [r.value for r in table.rows] == keys:
            for key, cells in rows:
                for col, cell in zip(COLUMNS, cells, strict=True):
                    table.update_cell(key, col, cell)
            return
        cursor = table.cursor_row
        table.clear()
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
