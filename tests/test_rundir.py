"""The run-directory contract has one home (`core/rundir.py`); the copy in
`fleet/onhost/hostprobe.py` (shipped to hosts as one stdlib-only file) must stay equal."""

from __future__ import annotations

import ast
import inspect
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from vlmtui.core import rundir
from vlmtui.core.fleet.onhost import hostprobe, slurmprobe


def test_hostprobe_copy_of_the_contract_equals_rundir() -> None:
    for name in (
        "STATUS",
        "EXIT_JSON",
        "SUPERVISOR_JSON",
        "EVENTS",
        "OUTPUT_LOG",
        "LAUNCH_JSON",
        "RUN_JSON",
    ):
        assert getattr(hostprobe, name) == getattr(rundir, name), name
    assert set(hostprobe.FINAL) == set(rundir.FINAL_STATES)
    for fn in ("read_json", "write_json_atomic"):
        assert _code(getattr(rundir, fn)) == _code(getattr(hostprobe, fn)), fn


def test_slurmprobe_copy_of_the_json_io_equals_rundir() -> None:
    # slurmprobe is shipped to a cluster's login node as one stdlib-only file, like hostprobe.
    assert _code(rundir.read_json) == _code(slurmprobe._read_json)
    assert _code(rundir.write_json_atomic) == _code(slurmprobe._write_json)


def _code(fn: Any) -> str:
    """The function's code without its docstring, as an AST dump."""
    node = ast.parse(inspect.getsource(fn)).body[0]
    assert isinstance(node, ast.FunctionDef)
    if ast.get_docstring(node) is not None:
        node.body = node.body[1:]
    return ast.dump(node.body and ast.Module(body=node.body, type_ignores=[]))


def test_states_partition() -> None:
    assert not set(rundir.FINAL_STATES) & set(rundir.ACTIVE_STATES)
    assert set(rundir.TRAINER_STATES) <= set(rundir.FINAL_STATES) | set(rundir.ACTIVE_STATES)
    assert rundir.is_final("stopped") and not rundir.is_final("unknown")


TORN_WRITER = """
import os, signal, sys
from vlmtui.core.training.progress import RunFiles
RunFiles(sys.argv[1]).append_event({"step": 1, "loss": 1.0})
with open(os.path.join(sys.argv[1], "events.jsonl"), "a") as fh:
    fh.write('{"step": 2, "lo')  # killed mid-line
    fh.flush()
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_an_event_after_a_writer_killed_mid_line_is_kept(tmp_path: Path) -> None:
    """A resumed run appends to the events.jsonl its killed predecessor left torn."""
    proc = subprocess.run([sys.executable, "-c", TORN_WRITER, str(tmp_path)], check=False)
    assert proc.returncode == -signal.SIGKILL
    from vlmtui.core.training.progress import RunFiles

    RunFiles(tmp_path).append_event({"step": 3, "loss": 0.5})
    RunFiles(tmp_path).append_event({"step": 4, "loss": 0.25})
    events = rundir.read_events(tmp_path)
    assert [e["step"] for e in events] == [1, 3, 4]
    assert rundir.last_step_event(events) == {"step": 4, "loss": 0.25}
