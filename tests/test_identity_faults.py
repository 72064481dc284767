"""A run's pid now held by another user's process, seen by an unprivileged vlmtui user (the
contract: never signal a process whose identity is not proven). The probe runs as `nobody`
with the system Python and the source fed on stdin, as on a remote host; the stranger is a
root process. Root only (it switches user); skipped with the reason otherwise."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from faultkit import alive, stranger
from vlmtui.core.fleet.onhost import hostprobe
from vlmtui.core.fleet.runrecord import RunRecord
from vlmtui.core.fleet.runs import judge

NOBODY = 65534
PYTHON = "/usr/bin/python3"


@pytest.fixture
def run_dir() -> Iterator[Path]:
    if os.geteuid() != 0 or not os.access(PYTHON, os.X_OK):
        pytest.skip("needs root (to run the probe as nobody) and /usr/bin/python3")
    d = Path(tempfile.mkdtemp(prefix="vlmtui-identity-"))
    d.chmod(0o755)  # the unprivileged probe reads it
    yield d
    shutil.rmtree(d, ignore_errors=True)


def as_nobody(op: str, payload: dict[str, Any]) -> dict[str, Any]:
    res = subprocess.run(
        [PYTHON, "-I", "-", op, json.dumps(payload)],
        input=Path(hostprobe.__file__).read_text(), capture_output=True, text=True,
        user=NOBODY, group=NOBODY, extra_groups=[], timeout=30, check=False,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    return dict(json.loads(res.stdout))


@pytest.mark.parametrize("same_start", [True, False], ids=["same-starttime", "other-starttime"])
def test_another_users_process_on_the_runs_pid_is_never_signalled(run_dir, same_start):
    other = stranger()  # root's: its environment is unreadable to nobody
    try:
        start = hostprobe.proc_starttime(other.pid)
        assert start is not None
        sup = {
            "pid": other.pid, "pgid": other.pid, "run_id": "r1", "boot_id": hostprobe.boot_id(),
            "starttime": start if same_start else str(int(start) - 1),
        }  # fmt: skip
        hostprobe.write_json_atomic(run_dir / "supervisor.json", sup)
        hostprobe.write_json_atomic(run_dir / "status.json", {"state": "training"})
        facts = as_nobody("probe", {"runs": [{"id": "r1", "run_dir": str(run_dir)}]})["runs"]
        rec = RunRecord(
            id="r1", recipe="r", host="h", gpus="cpu", run_dir=str(run_dir), created=0.0,
            state="training", pid=other.pid,
        )  # fmt: skip
        view = judge(rec, facts["r1"])
        if same_start:  # only the run id could tell, and it cannot be read: say so
            assert view.state == "unknown" and "cannot read the environment" in (view.error or "")
        else:  # another start time: not the run, which is gone
            assert view.state == "failed", view
        stopped = as_nobody("stop", {"run_dir": str(run_dir), "id": "r1", "grace_s": 1})
        assert not stopped["was_running"]
        assert alive(other.pid) and other.poll() is None
        assert json.loads((run_dir / "status.json").read_text())["state"] == "training"
    finally:
        other.kill()
        other.wait()
