"""The runs pane: every run of the registry, and the highlighted run's live output, loss
curve and evaluation metrics.

The registry and run files are read by workers (see `app.py`); the highlighted run's output
is tailed by a `LogWatcher` thread into a bounded `LogView`. Nothing here blocks.
"""

from __future__ import annotations

from statistics import mean
from typing import Any, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import DataTable, Input, Static

from vlmtui.tui.messages import LogFailed, LogLinesReady, RunDetail
from vlmtui.tui.sources import ACTIVE_STATES, RUN_STATE_STYLES, Sources, middle
from vlmtui.tui.widgets.bars import duration, sparkline
from vlmtui.tui.widgets.charts import PALETTE, LossChart, MetricsChart, Series
from vlmtui.tui.widgets.log_view import DEFAULT_MAX_LINES, LogView
from vlmtui.tui.widgets.log_watcher import LogWatcher
from vlmtui.tui.widgets.pictures_view import PictureView
from vlmtui.tui.widgets.tables import highlighted_key

STATE_STYLE = RUN_STATE_STYLES
COLUMNS = ("id", "recipe", "where", "state", "step", "loss", "time", "eta")
"""`time`: elapsed (frozen at the end for a finished run); 79 columns in all at 80 wide."""
ACTIVE = ACTIVE_STATES
METRICS = ("map", "map50", "recall", "mean_iou")
SIDE_PATH_WIDTH = 50
"""Paths in the side panel are shortened in the middle to this, keeping their tail."""
PICTURE_KEYS = Binding.Group("pic", compact=True)
"""`[` and `]` show as one `[] pic` footer item, only while the pictures show."""


def short_id(run_id: str) -> str:
    """`20250101-120000-ab12` -> `120000-ab12` (the info line shows the full id)."""
    head, sep, rest = run_id.partition("-")
    return rest if sep and len(head) == 8 and head.isdigit() else run_id


def eta(run: Any, detail: RunDetail | None) -> float | None:
    if run.state not in ACTIVE or not detail or not detail.elapsed_s or not run.step:
        return None
    if not run.max_steps or run.step >= run.max_steps:
        return None
    return detail.elapsed_s / run.step * (run.max_steps - run.step)


def loss_trend(losses: list[float], width: int = 16) -> Text:
    """The whole run's loss in `width` blocks (each the mean of its share of the steps),
    from its lowest to its highest value. The last 16 steps drawn from 0 up read `████` for
    any loss near its start (6.19 → 6.02) and a flat `▂▂▂▂` after a long run."""
    n = len(losses)
    if n > width:
        losses = [mean(losses[i * n // width : (i + 1) * n // width]) for i in range(width)]
    return sparkline(losses, width, top=max(losses), bottom=min(losses))


def eval_text(detail: RunDetail | None) -> Text:
    """The run's eval metrics, one a line (empty before its first eval)."""
    text = Text()
    if detail and detail.eval_metrics:
        text.append("eval\n", style="bold")
        for k in METRICS:
            v = detail.eval_metrics.get(k)
            if isinstance(v, (int, float)):
                text.append(f"  {k:<9}{v:.4f}\n")
    return text


class RunsPane(Vertical):
    """Runs table, the highlighted run's summary, output log and loss curve."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("s", "stop_run", "Stop", id="runs.stop"),
        Binding("slash", "search", "Search", id="runs.search"),
        Binding("space", "toggle_mark", "Mark", id="runs.mark"),
        Binding("c", "toggle_chart", "Chart", id="runs.chart"),
        Binding("m", "toggle_smooth", "Smooth", show=False, id="runs.smooth"),
        # the log's own key, here too: the runs table has the focus most of the time
        Binding("f", "toggle_follow", "Follow", show=False, id="runs.follow"),
        Binding("p", "toggle_pictures", "Pics", id="runs.pictures"),
        Binding("left_square_bracket", "step_picture(-1)", "previous picture",
                id="runs.picture_prev", group=PICTURE_KEYS),
        Binding("right_square_bracket", "step_picture(1)", "next picture",
                id="runs.picture_next", group=PICTURE_KEYS),
    ]  # fmt: skip

    class StopRequested(Message):
        def __init__(self, run_id: str) -> None:
            self.run_id = run_id
            super().__init__()

    def __init__(self, sources: Sources, max_lines: int = DEFAULT_MAX_LINES, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.sources = sources
        self.max_lines = max_lines
        self.runs: dict[str, Any] = {}
        self.details: dict[str, RunDetail] = {}
        self.watcher: LogWatcher | None = None
        self.followed: str | None = None
        self.marked: list[str] = []
        """Runs chosen for the charts, in the order chosen (their colours follow it)."""
        self.smooth = False

    def compose(self) -> ComposeResult:
        table: DataTable = DataTable(id="runs-table", cursor_type="row", zebra_stripes=True)
        for col in COLUMNS:
            table.add_column(col, key=col)
        yield table
        yield Static("no runs yet: mark recipes and press d to dispatch", id="run-info")
        with Horizontal(id="run-body"):
            with Vertical(id="run-log-box"):
                yield Input(placeholder="search the log (enter: find, esc: close)", id="log-search")
                yield LogView(max_lines=self.max_lines, id="run-log")
            yield PictureView(self.sources.read_picture, id="run-pictures")
            with Vertical(id="run-side"):
                with Horizontal(id="run-charts"):
                    yield LossChart(id="loss-chart")
                    yield MetricsChart(id="metrics-chart")
                yield Static("", id="run-detail")

    @property
    def table(self) -> DataTable:
        return self.query_one("#runs-table", DataTable)

    @property
    def log_view(self) -> LogView:
        return self.query_one("#run-log", LogView)

    @property
    def pictures(self) -> PictureView:
        return self.query_one(PictureView)

    @property
    def highlighted(self) -> str | None:
        return highlighted_key(self.table)

    # --- registry ---------------------------------------------------------------------------

    def show_runs(self, runs: list[Any], details: dict[str, RunDetail]) -> None:
        self.runs = {r.id: r for r in runs}
        self.details.update(details)
        rows = [(r.id, self._cells(r)) for r in runs]
        table = self.table
        if [k.value for k in table.rows] == [k for k, _ in rows]:
            for key, cells in rows:
                for col, cell in zip(COLUMNS, cells, strict=True):
                    table.update_cell(key, col, cell, update_width=True)
        else:
            current = self.highlighted
            table.clear()
            for key, cells in rows:
                table.add_row(*cells, key=key)
            if current in self.runs:
                table.move_cursor(row=table.get_row_index(current))
        self._show_selected()

    def select(self, run_id: str) -> None:
        if run_id in self.runs:
            self.table.move_cursor(row=self.table.get_row_index(run_id))

    def color_of(self, run_id: str) -> str | None:
        """The run's chart colour while it is marked."""
        if run_id not in self.marked:
            return None
        return PALETTE[self.marked.index(run_id) % len(PALETTE)]

    def _cells(self, r: Any) -> list[Any]:
        d = self.details.get(r.id)
        step = f"{r.step if r.step is not None else '–'}/{r.max_steps or '?'}"
        color = self.color_of(r.id)
        return [
            Text(short_id(r.id), style=f"bold {color}" if color else ""),
            r.recipe,
            f"{r.host}:{r.gpu}",
            Text(r.state, style=STATE_STYLE.get(r.state, "")),
            step,
            f"{r.loss:.4f}" if r.loss is not None else "–",
            duration(d.elapsed_s if d else None),
            duration(eta(r, d)),
        ]

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        self._show_selected()

    def _show_selected(self) -> None:
        run_id = self.highlighted
        if run_id is None:
            return
        run = self.runs[run_id]
        detail = self.details.get(run_id)
        info = Text()
        info.append(f"{run.id} ", style="bold")
        info.append(run.state, style=STATE_STYLE.get(run.state, ""))
        if run.error:
            # Why it failed (or, queued, Slurm's reason to wait, not a fault) comes first: at
            # the end of the line it was cut at 80 columns (`CUDA` of `CUDA out of memory`).
            info.append(f"  {run.error}", style="cyan" if run.state == "queued" else "red")
        if run.step is not None:
            info.append(f"  step {run.step}/{run.max_steps or '?'}")
        if run.loss is not None:
            info.append(f"  loss {run.loss:.4f}")
        if detail and detail.losses:
            info.append("  ")
            info.append_text(loss_trend([v for _, v in detail.losses]))
        if detail and detail.eval_metrics:
            m = detail.eval_metrics
            info.append(
                "  "
                + "  ".join(
                    f"{k} {m[k]:.3f}" for k in METRICS if isinstance(m.get(k), (int, float))
                )
            )
        self.query_one("#run-info", Static).update(info)
        self._show_charts()
        side = Text()
        side.append(f"recipe {run.recipe}\nhost {run.host}  device {run.gpu}\n")
        paths = (f"{k} {middle(v, SIDE_PATH_WIDTH)}" for k, v in
                 (("model", run.model), ("data", run.data), ("dir", run.run_dir)))  # fmt: skip
        side.append("\n".join(paths) + "\n", style="dim")
        if detail and detail.losses:
            first, last = detail.losses[0][1], detail.losses[-1][1]
            side.append(f"loss {first:.4f} → {last:.4f}\n")
        side.append_text(eval_text(detail))
        if detail and detail.pictures:
            side.append(f"{len(detail.pictures)} eval pictures: p shows them\n", style="dim")
        self.query_one("#run-detail", Static).update(side)
        metrics = Text(f"{run.recipe}\n", style="bold")
        metrics.append_text(eval_text(detail) or Text("no eval yet", style="dim"))
        self.pictures.show_run(
            run_id,
            run.host,
            detail.pictures if detail else (),
            metrics,
            detail.eval_created if detail else None,
        )
        self.follow(run_id)

    # --- charts -----------------------------------------------------------------------------

    def charted(self) -> list[str]:
        """The marked runs, else the highlighted one."""
        if self.marked:
            return [r for r in self.marked if r in self.runs]
        return [self.highlighted] if self.highlighted else []

    def _show_charts(self) -> None:
        series, bars = [], []
        for i, run_id in enumerate(self.charted()):
            color = self.color_of(run_id) or PALETTE[i % len(PALETTE)]
            detail = self.details.get(run_id)
            name = short_id(run_id)
            series.append(Series(name, tuple(detail.losses) if detail else (), color))
            if detail and detail.eval_metrics:
                bars.append((name, dict(detail.eval_metrics), color))
        self.query_one(LossChart).show(series, self.smooth)
        metrics = self.query_one(MetricsChart)
        metrics.show(bars)
        metrics.set_class(bool(bars), "-shown")

    def action_toggle_mark(self) -> None:
        run_id = self.highlighted
        if run_id is None:
            return
        if run_id in self.marked:
            self.marked.remove(run_id)
        else:
            self.marked.append(run_id)
        for key in self.runs:
            color = self.color_of(key)
            cell = Text(short_id(key), style=f"bold {color}" if color else "")
            self.table.update_cell(key, "id", cell)
        self._show_charts()

    def action_toggle_chart(self) -> None:
        """Charts in place of the log (the only way to see them on a narrow terminal)."""
        self.toggle_class("-chart")
        self._show_pictures(False)

    def action_toggle_pictures(self) -> None:
        """The run's eval pictures in place of the log, beside its metrics."""
        self.remove_class("-chart")
        self._show_pictures(not self.has_class("-pictures"))

    def _show_pictures(self, shown: bool) -> None:
        self.set_class(shown, "-pictures")
        self.pictures.activate(shown)
        self.refresh_bindings()

    def action_step_picture(self, delta: int) -> None:
        self.pictures.step(delta)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # The footer has room at 80 columns for the keys of what is on screen only.
        if action == "step_picture":
            return self.has_class("-pictures")
        if action == "search":
            return not self.has_class("-pictures")
        return True

    def action_toggle_follow(self) -> None:
        self.log_view.action_toggle_follow()

    def action_toggle_smooth(self) -> None:
        self.smooth = not self.smooth
        self._show_charts()

    # --- log --------------------------------------------------------------------------------

    def follow(self, run_id: str) -> None:
        """Tail `run_id`'s output (stops tailing the previous run)."""
        if run_id == self.followed:
            return
        self.stop_following()
        self.followed = run_id
        self.log_view.clear()
        self.watcher = LogWatcher(
            run_id,
            self.sources.open_log,
            notify=lambda: self.post_message(LogLinesReady(run_id)),
            on_error=lambda err: self.post_message(LogFailed(run_id, err)),
            max_lines=self.max_lines,
        ).start()

    def stop_following(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()
            self.watcher = None
        self.followed = None

    def on_log_lines_ready(self, message: LogLinesReady) -> None:
        if self.watcher is not None and message.run_id == self.watcher.run_id:
            self.log_view.write_lines(self.watcher.take())

    def on_log_failed(self, message: LogFailed) -> None:
        if message.run_id == self.followed:
            self.notify(f"log of {message.run_id}: {message.error}", severity="error")

    def on_unmount(self) -> None:
        self.stop_following()

    # --- actions ----------------------------------------------------------------------------

    def action_stop_run(self) -> None:
        run_id = self.highlighted
        if run_id is None:
            return
        if self.runs[run_id].state not in ACTIVE:
            self.notify(f"run {run_id} is {self.runs[run_id].state}, nothing to stop")
            return
        self.post_message(self.StopRequested(run_id))

    def action_search(self) -> None:
        box = self.query_one("#log-search", Input)
        box.add_class("-visible")
        box.focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id != "log-search":
            return
        event.stop()
        view = self.log_view
        if view.search != event.value:
            view.search = event.value
        view.find(forward=True)
        # Enter ends the typing: the log takes the keys, so n / N move between matches.
        view.focus()

    def key_escape(self) -> None:
        box = self.query_one("#log-search", Input)
        if box.has_class("-visible"):
            box.remove_class("-visible")
            self.log_view.search = ""
            self.table.focus()
