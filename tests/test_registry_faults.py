"""A corrupt, deleted or incomplete registry (issue 11, item 5): the run directories are the
truth, so every command keeps working and no run is lost. Real SQLite files, real runs
(stand-in trainer), a real sshd for the remote host."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from faultkit import corrupt, poll
from vlmtui.cli import main
from vlmtui.core.fleet.launch import LaunchRequest, launch
from vlmtui.core.fleet.registry import Registry
from vlmtui.core.fleet.runs import get_run

RECIPE = "r1-llm-only"


@pytest.fixture
def finished_runs(standin_train, tmp_path: Path) -> list[str]:
    """Two local runs that have finished, known to the registry."""
    (tmp_path / "model").mkdir()
    (tmp_path / "data").mkdir()
    standin_train("ok", steps=2, step_s=0.0)
    req = LaunchRequest(
        recipe=RECIPE, model=str(tmp_path / "model"), data=str(tmp_path / "data"), gpu="cpu"
    )
    ids = [launch(req).run_id for _ in range(2)]
    for run_id in ids:
        poll(lambda r=run_id: get_run(r).state == "finished")
    return ids


def _rows(capsys) -> list[dict]:
    assert main(["runs", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


COMMANDS = {
    "runs": lambda ids: ["runs"],
    "gpus": lambda ids: ["gpus"],
    "stop": lambda ids: ["stop", ids[0]],
    "logs": lambda ids: ["logs", ids[0]],
    "launch": lambda ids: ["launch", "--recipe", RECIPE, "--model", ".", "--data", "."],
}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_corrupt_registry_is_moved_aside_and_rebuilt(finished_runs, capsys, command):
    path = Registry().path
    corrupt(path, "header")
    assert main(COMMANDS[command](finished_runs)) == 0
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and "was corrupt (file is not a database)" in err[0], err
    assert len(list(path.parent.glob("runs.sqlite.corrupt-*"))) == 1
    rows = {r["id"]: r for r in _rows(capsys)}
    for run_id in finished_runs:
        assert rows[run_id]["state"] == "finished" and rows[run_id]["recipe"] == RECIPE
        assert rows[run_id]["step"] == 2


def test_torn_pages_are_a_corrupt_registry_too(finished_runs, capsys):
    path = Registry().path
    corrupt(path, "pages")
    assert main(["runs", "--json"]) == 0
    out = capsys.readouterr()
    assert "was corrupt (database disk image is malformed)" in out.err
    assert sorted(r["id"] for r in json.loads(out.out)) == sorted(finished_runs)


def test_deleted_registry_rebuilds_from_every_host(finished_runs, standin_train, ssh_host, capsys):
    standin_train("ok", steps=2, step_s=0.0)
    remote = launch(
        LaunchRequest(recipe=RECIPE, model=".", data=".", host=ssh_host.name, gpu="cpu")
    ).run_id
    poll(lambda: get_run(remote).state == "finished")
    before = {r["id"]: r for r in _rows(capsys)}
    path = Registry().path
    for p in path.parent.glob("runs.sqlite*"):
        p.unlink()
    assert main(["runs", "--json"]) == 0
    out = capsys.readouterr()
    after = {r["id"]: r for r in json.loads(out.out)}
    assert "was missing; registry rebuilt: 3 run(s) found on 2 host(s), 3 added" in out.err
    assert set(after) == set(before) == {*finished_runs, remote}
    for run_id, row in before.items():
        keep = ("recipe", "host", "gpu", "state", "step", "max_steps", "run_dir", "model")
        assert {k: after[run_id][k] for k in keep} == {k: row[k] for k in keep}
        assert after[run_id]["created"] == pytest.approx(row["created"], abs=1)


def test_runs_rebuild_adds_what_the_registry_lost(finished_runs, capsys):
    con = sqlite3.connect(Registry().path)
    con.execute("DELETE FROM runs WHERE id = ?", (finished_runs[0],))
    con.commit()
    con.close()
    assert [r["id"] for r in _rows(capsys)] == [finished_runs[1]]
    assert main(["runs", "--rebuild", "--json"]) == 0
    out = capsys.readouterr()
    assert "2 run(s) found on 1 host(s), 1 added" in out.err
    assert sorted(r["id"] for r in json.loads(out.out)) == sorted(finished_runs)


def test_processes_finding_the_corrupt_file_at_once_move_it_once(finished_runs):
    import os
    import subprocess
    import sys

    path = Registry().path
    corrupt(path, "header")
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "vlmtui", "runs", "--json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=os.environ.copy(),
        )
        for _ in range(4)
    ]
    results = [(p.communicate(timeout=120), p.returncode) for p in procs]
    for (out, err), rc in results:
        assert rc == 0 and "Traceback" not in err, err
        assert sorted(r["id"] for r in json.loads(out)) == sorted(finished_runs)
    assert len(list(path.parent.glob("runs.sqlite.corrupt-*"))) == 1
    warned = [err for (_, err), _ in results if "was corrupt" in err]
    assert len(warned) == 1, warned
