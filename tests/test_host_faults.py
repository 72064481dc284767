"""Hosts that fail the way real ones do: a broken hosts.toml, a host that accepts the TCP
connection and then says nothing, and the wording of what the user is told.

Issue 11 items 10, 14 and 16: each test reproduces the fault itself.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from vlmtui.cli import main
from vlmtui.core.errors import BadInput
from vlmtui.core.fleet.hosts import get_host, hosts_file, hosts_problem, save_host
from vlmtui.core.fleet.registry import Registry, RunRecord

VLMTUI = [sys.executable, "-m", "vlmtui"]


@pytest.fixture
def silent_host() -> Iterator[int]:
    """A TCP server that accepts connections and never sends a byte: a hung sshd, a
    half-dead NAT, a host mid-reboot. Returns its port."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    srv.settimeout(0.2)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                held.append(srv.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield srv.getsockname()[1]
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    srv.close()


def _save_silent(port: int) -> None:
    save_host(
        "silent",
        target="nobody@127.0.0.1",
        port=port,
        ssh_options={"StrictHostKeyChecking": "no", "UserKnownHostsFile": "/dev/null"},
    )


def test_silent_host_never_holds_back_the_others_and_is_given_up_by_6_s(silent_host, tmp_path):
    _save_silent(silent_host)
    Registry().all()  # an existing registry: a missing one is first rebuilt from every host
    start = time.monotonic()
    proc = subprocess.Popen(
        [*VLMTUI, "gpus"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    first = proc.stdout.readline()
    first_s = time.monotonic() - start
    rest, _ = proc.communicate(timeout=30)
    total_s = time.monotonic() - start
    assert first.startswith("local: reachable")  # printed while the silent host still hangs
    assert "silent: UNREACHABLE" in rest and "banner exchange" in rest
    assert first_s < 4.0 and total_s < 6.0 + 2.0  # 6 s budget, plus interpreter start-up


def test_silent_host_run_is_unknown_not_failed_and_runs_answers_in_time(silent_host):
    _save_silent(silent_host)
    Registry().add(
        RunRecord(
            id="r-silent", recipe="r1-llm-only", host="silent", gpus="0", run_dir="/runs/x",
            created=time.time(), state="training", pid=4242,
        )
    )  # fmt: skip
    start = time.monotonic()
    res = subprocess.run([*VLMTUI, "runs", "--json"], capture_output=True, text=True, timeout=30)
    assert res.returncode == 0 and time.monotonic() - start < 6.0 + 2.0
    assert '"state": "unknown"' in res.stdout and "banner exchange" in res.stdout


def test_ssh_error_is_prefixed_once(silent_host):
    _save_silent(silent_host)
    status = get_host("silent").query_gpus()
    assert not status.reachable and status.error
    assert status.error.startswith("ssh: ") and not status.error.startswith("ssh: ssh:")


def _break_hosts_toml() -> Path:
    path = hosts_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("[hosts.gpubox\ntarget = 'x'\n")  # a syntax error: no closing bracket
    return path


def test_broken_hosts_toml_keeps_local_and_the_registry_working(tmp_path):
    path = _break_hosts_toml()
    assert get_host("local").run("echo ok").stdout == "ok\n"
    with pytest.raises(BadInput, match="not valid TOML"):
        get_host("gpubox")
    problem = hosts_problem()
    assert problem and str(path) in problem
    Registry().add(
        RunRecord(
            id="r-old", recipe="r1-llm-only", host="local", gpus="cpu", run_dir=str(tmp_path),
            created=time.time(), state="finished",
        )
    )  # fmt: skip
    res = subprocess.run([*VLMTUI, "runs"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and "r-old" in res.stdout
    assert res.stderr.count("\n") == 1 and res.stderr.startswith(f"warning: {path}")
    res = subprocess.run([*VLMTUI, "gpus"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and res.stdout.startswith("local: reachable")


def test_broken_hosts_toml_does_not_stop_a_local_launch(tmp_path, capsys):
    _break_hosts_toml()
    (tmp_path / "m").mkdir()
    (tmp_path / "d").mkdir()
    code = main(
        ["launch", "--recipe", "r1-llm-only", "--host", "local", "--gpu", "cpu",
         "--model", str(tmp_path / "m"), "--data", str(tmp_path / "d")]
    )  # fmt: skip
    out = capsys.readouterr()
    assert code == 0 and out.out.strip()
    assert out.err.count("warning:") == 1
    assert main(["stop", out.out.strip(), "--grace", "5"]) == 0
