"""Utilisation and memory history of every GPU over the last minutes, as nvitop draws it.

Time-stamped samples per (host, gpu index) are kept for `WINDOW_S` and read back as one value
per time bucket, so a sparkline of any width spans the same minutes. A bucket no sample
covers is None (drawn as a gap): an unreachable host or a vanished GPU leaves a hole in the
line, never a false zero. Plain Python (no Textual), so tests drive it with made-up clocks.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Protocol

WINDOW_S = 300.0
"""How far back the sparklines reach."""
MAX_SPAN_S = 30.0
"""A sample stands for the time since the previous refresh (a slow `gpu_refresh_s` leaves no
holes between samples), but never for longer than this: after the app was suspended, the
first new value is not stretched back over the minutes nobody looked."""

Key = tuple[str, int]
Series = list[float | None]


def window_label(window_s: float = WINDOW_S) -> str:
    """`5m` for 300 s, `90s` for 90 s: the span named in the column headers."""
    return f"{window_s / 60:g}m" if window_s % 60 == 0 else f"{window_s:g}s"


class GpuLike(Protocol):
    @property
    def index(self) -> int: ...
    @property
    def util_pct(self) -> float | None: ...
    @property
    def mem_used_mib(self) -> float | None: ...
    @property
    def mem_total_mib(self) -> float | None: ...


class HostLike(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def reachable(self) -> bool: ...
    @property
    def gpus(self) -> Sequence[GpuLike]: ...


def mem_fraction(used_mib: float | None, total_mib: float | None) -> float | None:
    """Used memory as a fraction of the total; None when either is unknown."""
    if used_mib is None or not total_mib:
        return None
    return min(1.0, max(0.0, used_mib / total_mib))


@dataclass(frozen=True)
class Sample:
    start: float
    """Start of the time this sample stands for (the previous refresh, at most MAX_SPAN_S)."""
    at: float
    util_pct: float | None
    mem_fraction: float | None


class GpuHistory:
    """Samples of every GPU seen in the last `window_s` seconds of refreshes."""

    def __init__(self, window_s: float = WINDOW_S, max_span_s: float = MAX_SPAN_S) -> None:
        self.window_s = window_s
        self.max_span_s = max_span_s
        self.now: float | None = None
        """Time of the newest refresh: the right end of every series."""
        self._samples: dict[Key, deque[Sample]] = {}
        self._added: dict[Key, int] = {}
        """Samples ever appended per GPU, so a series folds in only the new ones."""
        self._folded: dict[Key, _Folded] = {}

    def record(self, hosts: Iterable[HostLike], at: float) -> None:
        """One refresh of every host. An unreachable host adds nothing: a gap, not zeros."""
        span = 0.0 if self.now is None else min(max(at - self.now, 0.0), self.max_span_s)
        for host in hosts:
            if not host.reachable:
                continue
            for g in host.gpus:
                key = (host.name, g.index)
                mem = mem_fraction(g.mem_used_mib, g.mem_total_mib)
                self._samples.setdefault(key, deque()).append(
                    Sample(at - span, at, g.util_pct, mem)
                )
                self._added[key] = self._added.get(key, 0) + 1
        self.now = at if self.now is None else max(self.now, at)
        self.expire(self.now)

    def expire(self, now: float) -> None:
        """Forget samples older than the window, and GPUs with none left."""
        oldest = now - self.window_s
        for key in list(self._samples):
            samples = self._samples[key]
            while samples and samples[0].at <= oldest:
                samples.popleft()
            if not samples:
                del self._samples[key], self._added[key]
                self._folded.pop(key, None)

    def tracked(self) -> list[Key]:
        """The GPUs with samples in the window."""
        return list(self._samples)

    def samples(self, key: Key) -> list[Sample]:
        return list(self._samples.get(key, ()))

    def series(self, key: Key, width: int) -> tuple[Series, Series]:
        """(utilisation %, memory fraction) as `width` buckets spanning the window up to the
        newest refresh, oldest first: the mean of the samples covering each bucket, None
        where none does.

        Bucket k is (k*step, (k+1)*step] in absolute time, so a finished bucket keeps its
        value and the line moves left one character per step instead of flickering as the
        window slides; the newest refresh lies in the last one. The sums are kept between
        calls, so a refresh folds in only the samples added since (the window's bucket 0
        starts after `now - window_s`: no expired sample is ever in range)."""
        samples = self._samples.get(key)
        if self.now is None or width <= 0 or not samples:
            return [None] * max(width, 0), [None] * max(width, 0)
        step = self.window_s / width
        k0 = math.ceil(self.now / step) - width
        folded = self._folded.get(key)
        if folded is None or folded.width != width or not 0 <= k0 - folded.k0 < width:
            folded = _Folded(width, k0, self._added[key] - len(samples))
            self._folded[key] = folded
        folded.shift_to(k0)
        new = self._added[key] - folded.added
        for s in islice(samples, max(0, len(samples) - new), None):
            folded.add(s, step)
        folded.added = self._added[key]
        return folded.means()


class _Folded:
    """Running sums of one GPU's buckets: utilisation in the first half, memory in the second."""

    def __init__(self, width: int, k0: int, added: int) -> None:
        self.width, self.k0, self.added = width, k0, added
        self.sums = [0.0] * (2 * width)
        self.counts = [0] * (2 * width)

    def shift_to(self, k0: int) -> None:
        """Drop the buckets that left the window on the left; new empty ones on the right."""
        n, w = k0 - self.k0, self.width
        if n:
            self.sums = [*self.sums[n:w], *[0.0] * n, *self.sums[w + n :], *[0.0] * n]
            self.counts = [*self.counts[n:w], *[0] * n, *self.counts[w + n :], *[0] * n]
            self.k0 = k0

    def add(self, s: Sample, step: float) -> None:
        last = math.ceil(s.at / step) - 1 - self.k0
        if last < 0:
            return
        last = min(last, self.width - 1)
        first = max(0, min(last, math.floor(s.start / step) - self.k0))
        for offset, value in ((0, s.util_pct), (self.width, s.mem_fraction)):
            if value is not None:
                for b in range(first + offset, last + offset + 1):
                    self.sums[b] += value
                    self.counts[b] += 1

    def means(self) -> tuple[Series, Series]:
        means = [t / n if n else None for t, n in zip(self.sums, self.counts, strict=True)]
        return means[: self.width], means[self.width :]
