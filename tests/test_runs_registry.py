"""Run registry: many writers at once, id look-up, state reconciliation rules, liveness."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from vlmtui.core.errors import BadInput
from vlmtui.core.fleet.hosts import save_host
from vlmtui.core.fleet.onhost import hostprobe
from vlmtui.core.fleet.registry import Registry, RunRecord
from vlmtui.core.fleet.runs import judge, list_runs


def record(run_id: str = "20250101-000000-abcd", **kw) -> RunRecord:
    base = dict(
        id=run_id,
        recipe="r1-llm-only",
        host="local",
        gpus="0",
        run_dir="/nonexistent",
        created=time.time(),
        state="training",
    )
    base.update(kw)
    return RunRecord(**base)


WRITER = """
import sys, time
from vlmtui.core.fleet.registry import Registry, RunRecord
w, n = int(sys.argv[1]), int(sys.argv[2])
reg = Registry()
for i in range(n):
    rid = f"w{w}-{i:03d}"
    reg.add(RunRecord(id=rid, recipe="r", host=f"h{w % 3}", gpus=str(i % 4), run_dir="/d",
                      created=time.time(), state="launching"))
    reg.update(rid, pid=1000 + i, state="pending")
    reg.update(rid, state="finished", step=i, loss=1.0 / (i + 1))
"""


def test_eight_processes_writing_at_once_lose_nothing():
    n = 40
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(w), str(n)], stderr=subprocess.PIPE)
        for w in range(8)
    ]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()
    rows = Registry().all()
    assert len(rows) == 8 * n
    assert len({r.id for r in rows}) == 8 * n
    assert all(r.state == "finished" and r.pid == 1000 + r.step for r in rows)


def test_registry_file_is_in_wal_mode():
    reg = Registry()
    reg.add(record())
    import sqlite3

    con = sqlite3.connect(reg.path)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    con.close()


def test_get_by_id_or_unique_prefix():
    reg = Registry()
    reg.add(record("20250101-000000-aaaa"))
    reg.add(record("20250101-000000-aabb"))
    assert reg.get("20250101-000000-aaaa").id == "20250101-000000-aaaa"
    assert reg.get("20250101-000000-aab").id == "20250101-000000-aabb"
    with pytest.raises(BadInput, match="ambiguous"):
        reg.get("20250101-000000-aa")
    with pytest.raises(BadInput, match="unknown run"):
        reg.get("nope")


def test_reservations_are_active_runs_only():
    reg = Registry()
    reg.add(record("a", gpus="0,1", state="training"))
    reg.add(record("b", gpus="2", state="finished"))
    reg.add(record("c", gpus="cpu", state="pending"))
    reg.add(record("d", host="box", gpus="2", state="launching"))
    assert reg.reservations() == {"local": {0: "a", 1: "a"}, "box": {2: "d"}}


def facts(**kw):
    base = {"found": True, "run_dir": "/r", "pid": 42, "alive": False, "status": None}
    base.update(kw)
    return base


def test_judge_rules():
    rec = record(created=time.time() - 1000)
    finished = judge(rec, facts(status={"state": "finished"}, last={"step": 9, "loss": 0.5}))
    assert (finished.state, finished.step, finished.loss) == ("finished", 9, 0.5)
    assert judge(rec, facts(alive=True, status={"state": "training"})).state == "training"
    assert judge(rec, facts(alive=True)).state == "pending"
    sig = judge(rec, facts(status={"state": "training"}, exit={"signal": "SIGKILL"}))
    assert sig.state == "failed" and sig.error.startswith("killed by SIGKILL")
    code = judge(rec, facts(exit={"returncode": 3}, log_tail="Traceback\nValueError: bad data\n"))
    assert code.error == "exited with code 3; ValueError: bad data"
    oom = judge(rec, facts(log_tail="torch.OutOfMemoryError: CUDA out of memory. Tried"))
    assert oom.state == "failed" and oom.error.startswith("CUDA out of memory")
    gone = judge(rec, facts())
    assert gone.state == "failed" and "without a final state" in gone.error
    missing = judge(rec, facts(found=False, pid=None))
    assert missing.state == "failed" and "missing" in missing.error
    young = record(created=time.time())
    assert judge(young, facts(found=False, pid=None)).state == "pending"


def test_pid_liveness_checks_start_time_and_zombies():
    me = os.getpid()
    start = hostprobe.proc_starttime(me)
    assert hostprobe.pid_alive(me, start)
    assert not hostprobe.pid_alive(me, str(int(start) + 1))  # a reused pid
    child = subprocess.Popen(["true"])
    deadline = time.monotonic() + 15
    while hostprobe._stat_fields(child.pid)[0] != "Z" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not hostprobe.pid_alive(child.pid)  # a zombie is not a running run
    child.wait()
    assert not hostprobe.pid_alive(child.pid)


@pytest.mark.ssh
def test_unknown_host_and_unreachable_host_give_unknown_not_failed(sshd_server):
    from sshd import free_port

    save_host(
        "down",
        target="nobody@127.0.0.1",
        port=free_port(),
        connect_timeout=1,
        ssh_options={"StrictHostKeyChecking": "no", "UserKnownHostsFile": "/dev/null"},
    )
    reg = Registry()
    reg.add(record("on-down", host="down", pid=5))
    reg.add(record("on-gone", host="gone", pid=5))
    views = {v.id: v for v in list_runs(reg)}
    assert views["on-down"].state == "unknown" and not views["on-down"].reachable
    assert "ssh" in views["on-down"].error
    assert views["on-gone"].state == "unknown" and "unknown host 'gone'" in views["on-gone"].error
    assert reg.get("on-down").state == "training"  # the cached state is kept


def test_cli_runs_json_fields(capsys):
    from vlmtui.cli import main

    Registry().add(record("done-1", state="finished", step=4, loss=0.25, max_steps=4))
    assert main(["runs", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    for key in ("id", "recipe", "host", "gpu", "state", "step", "max_steps", "loss", "run_dir"):
        assert key in row
    assert (row["state"], row["step"], row["loss"], row["gpu"]) == ("finished", 4, 0.25, "0")
