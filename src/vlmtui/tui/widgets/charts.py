"""Plots with axes for the runs pane (textual-plotext): the loss of the chosen runs overlaid,
each in its own colour, optionally smoothed, and their eval metrics as bars side by side.

A flat loss of 6.1–6.2 drawn without a scale looked like big swings; these charts always
show their axes and ticks, so the scale is read off the chart.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from textual_plotext import PlotextPlot

PALETTE = ("cyan", "orange", "magenta", "green", "red", "blue")
"""Run colours in the order the runs were chosen (also used for their ids in the table)."""
METRICS = ("map", "map50", "recall", "mean_iou")
SMOOTHING = 0.8
"""Exponential moving average weight when smoothing is on."""


@dataclass(frozen=True)
class Series:
    name: str
    points: tuple[tuple[int, float], ...]
    """(step, loss)."""
    color: str


def ema(values: Sequence[float], weight: float) -> list[float]:
    """Exponential moving average, bias-corrected so the first points are not pulled to 0."""
    out, avg = [], 0.0
    for i, v in enumerate(values, start=1):
        avg = weight * avg + (1 - weight) * v
        out.append(avg / (1 - weight**i))
    return out


class LossChart(PlotextPlot):
    """Loss against step for each series."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.shown: tuple[str, ...] = ()
        self.smooth = False

    def show(self, series: Sequence[Series], smooth: bool) -> None:
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        self.shown = tuple(s.name for s in series if s.points)
        self.smooth = smooth
        for s in series:
            if not s.points:
                continue
            xs = [p[0] for p in s.points]
            ys = [p[1] for p in s.points]
            plt.plot(xs, ema(ys, SMOOTHING) if smooth else ys, label=s.name, color=s.color,
                     marker="braille")  # fmt: skip
        plt.title("loss (smoothed)" if smooth else "loss")
        plt.xlabel("step")
        self.refresh()


class MetricsChart(PlotextPlot):
    """Eval metrics of each run as bars, grouped by metric."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.shown: tuple[str, ...] = ()

    def show(self, runs: Sequence[tuple[str, dict[str, float], str]]) -> None:
        """`runs`: (name, metrics, colour) of each run with eval metrics."""
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        runs = [r for r in runs if r[1]]
        self.shown = tuple(r[0] for r in runs)
        if runs:
            values = [[float(m.get(k) or 0.0) for k in METRICS] for _, m, _ in runs]
            # plotext's hints say `label`/one colour; at run time it takes one of each per run
            plt.multiple_bar(list(METRICS), values, labels=[r[0] for r in runs],  # type: ignore[call-arg]
                             color=[r[2] for r in runs])  # type: ignore[arg-type]  # fmt: skip
            plt.ylim(0, 1)
        plt.title("eval")
        self.refresh()
