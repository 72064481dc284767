"""The GPU history behind the GPUs pane's sparklines: samples bucketed by time over a fixed
window, gaps where no sample was taken, and the columns chosen for the pane's width. Plain
Python with made-up clocks; the snapshots are the real `HostGpus` the pane gets."""

from __future__ import annotations

from dataclasses import replace

from tui_fakes import H100_MIB, recorded_gpus

from vlmtui.core.fleet.snapshot import Gpu, HostGpus
from vlmtui.tui.widgets.bars import sparkline
from vlmtui.tui.widgets.gpu_columns import SPARK_MAX, SPARK_MIN, Widths, choose_layout
from vlmtui.tui.widgets.gpu_history import WINDOW_S, GpuHistory, window_label

T0 = 1_735_732_800.0


def host(util: float | None, used: float | None = 40960.0, name: str = "gpu01") -> HostGpus:
    gpu = Gpu(index=0, name="H100", util_pct=util, mem_used_mib=used, mem_total_mib=81920.0)
    return HostGpus(name, reachable=True, gpus=(gpu,))


def down(name: str = "gpu01") -> HostGpus:
    return HostGpus(name, reachable=False, error="ssh: timed out")


def test_buckets_span_the_window_ending_at_the_newest_refresh() -> None:
    hist = GpuHistory(window_s=60.0)
    for i in range(6):  # one refresh every 10 s; the 6 buckets are 10 s each
        hist.record([host(10.0 * i)], T0 + 10 * i)
    util, mem = hist.series(("gpu01", 0), 6)
    # The first sample stands only for its own instant, each later one for the 10 s before it.
    assert util == [0.0, 10.0, 20.0, 30.0, 40.0, 50.0]
    assert mem == [0.5] * 6
    assert window_label(WINDOW_S) == "5m" and window_label(90.0) == "90s"


def test_finished_buckets_keep_their_value_as_the_window_slides() -> None:
    hist = GpuHistory(window_s=60.0)
    for i in range(31):  # 2 s refreshes up to T0 + 60, the end of a 10 s bucket
        hist.record([host(float(i * 7 % 100))], T0 + 2 * i)
    before, _ = hist.series(("gpu01", 0), 6)
    hist.record([host(99.0)], T0 + 62)
    after, _ = hist.series(("gpu01", 0), 6)
    assert after[:5] == before[1:] and after[5] == 99.0


def test_series_kept_between_refreshes_equal_a_fresh_count() -> None:
    """The pane asks every refresh and the sums are carried over; a history fed the same and
    asked once must agree, through gaps, irregular refreshes, a GPU gone and a resize."""
    kept = GpuHistory(window_s=120.0)
    fed: list[tuple[list[HostGpus], float]] = []
    t = T0
    for i in range(150):
        t += (2.0, 3.5, 7.0, 45.0, 1.0)[i % 5] if i % 23 else 130.0
        hosts = recorded_gpus(3, 2, tick=i, unreachable=i % 17 < 4)
        if i % 29 < 5:
            hosts = hosts[1:]  # gpu01 gone for a while
        kept.record(hosts, t)
        fed.append((hosts, t))
        fresh = GpuHistory(window_s=120.0)
        for snap, at in fed[-60:]:  # more than the window holds
            fresh.record(snap, at)
        width = 12 if i < 100 else 17
        assert sorted(kept.tracked()) == sorted(fresh.tracked())
        for key in kept.tracked():
            assert kept.series(key, width) == fresh.series(key, width), (i, key)


def test_memory_is_a_fraction_of_the_total_and_unknown_memory_is_no_value() -> None:
    hist = GpuHistory(window_s=40.0)
    for i, used in enumerate([20480.0, None, 81920.0, 0.0]):
        hist.record([host(50.0, used)], T0 + 10 * i)
    util, mem = hist.series(("gpu01", 0), 4)
    assert mem == [0.25, None, 1.0, 0.0]
    assert util == [50.0] * 4
    assert str(sparkline(mem, 4, top=1.0, gap="·")) == "▃·█▁"


def test_an_unreachable_host_leaves_a_gap_not_zeros() -> None:
    hist = GpuHistory(window_s=60.0)
    snaps = [host(100.0), down(), down(), host(100.0), host(100.0), host(100.0)]
    for i, snap in enumerate(snaps):
        hist.record([snap], T0 + 10 * i)
    util, _ = hist.series(("gpu01", 0), 6)
    assert util == [100.0, None, None, 100.0, 100.0, 100.0]
    line = sparkline(util, 6, gap="·")
    assert str(line) == "█··███"
    assert [s.style for s in line.spans] == ["dim", "dim"]


def test_a_gpu_that_disappears_and_returns_keeps_its_history_with_a_hole() -> None:
    hist = GpuHistory(window_s=50.0)
    two = replace(host(30.0), gpus=(*host(30.0).gpus, Gpu(index=1, name="H100", util_pct=90.0)))
    for i, snap in enumerate([two, two, host(30.0), host(30.0), two]):
        hist.record([snap], T0 + 10 * i)
    util, _ = hist.series(("gpu01", 1), 5)
    assert util == [90.0, 90.0, None, None, 90.0]
    assert hist.series(("gpu01", 0), 5)[0] == [30.0] * 5


def test_samples_older_than_the_window_expire_and_so_does_a_gpu_gone_that_long() -> None:
    hist = GpuHistory(window_s=30.0)
    hist.record([host(10.0), host(20.0, name="gpu02")], T0)
    for i in range(1, 4):
        hist.record([host(10.0 * i)], T0 + 10 * i)
    assert [s.at for s in hist.samples(("gpu01", 0))] == [T0 + 10, T0 + 20, T0 + 30]
    assert hist.tracked() == [("gpu01", 0)]
    assert hist.series(("gpu02", 0), 3) == ([None] * 3, [None] * 3)


def test_a_slow_refresh_leaves_no_holes_but_a_suspended_app_does() -> None:
    hist = GpuHistory(window_s=120.0, max_span_s=30.0)
    for t in (0, 20, 40, 60, 120):  # 20 s refreshes drawn into 10 s buckets, then 60 s asleep
        hist.record([host(50.0)], T0 + t)
    util, _ = hist.series(("gpu01", 0), 12)
    assert util == [50.0] * 6 + [None] * 3 + [50.0] * 3


def test_history_works_at_any_width_and_keeps_the_newest_on_the_right() -> None:
    hist = GpuHistory()
    for i in range(150):  # 2 s refreshes over the whole window
        hist.record(recorded_gpus(2, 2, tick=i, unreachable=False), T0 + 2 * i)
    for width in (1, 8, 12, 20, 37):
        util, mem = hist.series(("gpu01", 1), width)
        assert len(util) == len(mem) == width and None not in util and None not in mem
        assert all(0.0 < m <= 30600.0 / H100_MIB + 1e-9 for m in mem if m is not None)


def test_columns_fit_the_width_and_never_cut_the_host() -> None:
    w = Widths(host=5, name=14, mem=8, count=6)
    wide = choose_layout(160, w, "5m")
    assert wide.mode == "full" and wide.width <= 160 and wide.spark == SPARK_MAX
    assert [c.label for c in wide.columns if "5m" in c.label] == ["util 5m", "mem 5m"]
    narrow = choose_layout(78, w, "5m")
    assert narrow.mode == "compact" and narrow.width <= 78 and narrow.spark >= SPARK_MIN
    assert not narrow.has("name") and narrow.column("host").width == 5
    long_host = choose_layout(78, replace(w, host=20), "5m")
    assert long_host.width <= 78 and long_host.column("host").width == 20
    assert long_host.has("util_hist") and long_host.has("mem_hist")
