"""Long-lived GPU watchers (fleet/watch.py): one stream per host, no process per refresh,
a dropped link shown as unreachable and healed without anyone asking.

The remote GPUs are the stand-in nvidia-smi on the loopback host's PATH (this machine has
no GPU); it stands in for the real `nvidia-smi` / NVML a GPU host has.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from vlmtui.core.fleet.hosts import get_host
from vlmtui.core.fleet.watch import GpuWatch


def _watchers() -> int:
    out = subprocess.run(
        ["pgrep", "-fc", "^[^ ]*python[^ ]* -I -m vlmtui.core.gpus --watch"], capture_output=True
    )
    return int(out.stdout.strip() or 0)


def _until(cond, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_local_watch_streams_snapshots_and_stops() -> None:
    watch = GpuWatch([get_host("local")], interval_s=0.05).start()
    try:
        assert watch.wait_first(5)
        _until(lambda: watch.snapshots >= 5, 5, "five snapshots")
        (snap,) = watch.latest()
        assert snap.name == "local" and snap.reachable
    finally:
        watch.stop()
    assert not any(t.is_alive() for t in watch._threads)


@pytest.mark.ssh
def test_ssh_watch_is_one_stream_that_reconnects_after_the_link_drops(ssh_host) -> None:
    host = get_host(ssh_host.name)
    seen = []
    watch = GpuWatch([host], interval_s=0.2, on_update=seen.append).start()
    try:
        assert watch.wait_first(20)
        _until(lambda: sum(s.reachable for s in seen) >= 3, 20, "three snapshots")
        first = next(s for s in seen if s.reachable)
        assert first.source == "vlmtui" and len(first.gpus) == 4
        # One remote watcher process serves every snapshot: no Python started per refresh.
        assert _watchers() == 1
        n = len(seen)
        master = host.master_pid()
        assert master
        os.kill(master, signal.SIGKILL)  # drop the link under the stream
        _until(lambda: any(not s.reachable for s in seen[n:]), 20, "the drop to show")
        dropped = next(s for s in seen[n:] if not s.reachable)
        assert "reconnecting" in (dropped.error or "")
        _until(lambda: seen[-1].reachable, 30, "the watcher to reconnect")
    finally:
        watch.stop()


def test_a_host_that_never_answers_shows_sshs_reason() -> None:
    """The GPU pane read "the GPU stream ended; reconnecting" for a host ssh could not reach
    (`vlmtui gpus` said why: the watcher threw ssh's message away). A real ssh client to a
    closed port on this machine: refused at once, no sshd needed."""
    import socket

    from vlmtui.core.fleet.host import SshHost
    from vlmtui.core.fleet.hostsconfig import HostConfig

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    host = SshHost(HostConfig(name="closed", target="127.0.0.1", port=port))
    watch = GpuWatch([host], interval_s=0.5).start()
    try:
        assert watch.wait_first(15)
        (snap,) = watch.latest()
        assert not snap.reachable
        assert "Connection refused" in (snap.error or ""), snap.error
        assert snap.error.endswith("; reconnecting")
    finally:
        watch.stop()
