"""The registry held, emptied or from another version (the guide's contract: the run
directory is the truth, the registry an index rebuilt from it): a process holding its write
lock for good, a 0-byte file, the file deleted under a running `logs --follow`, the
schemas of an older and a newer vlmtui, nonsense in one run directory's JSON files, and a
full disk under the registry.
Real SQLite files and processes, stand-in trainer."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from faultkit import kill_group, poll, processes_of
from vlmtui.cli import main
from vlmtui.core.fleet import registry as registry_mod
from vlmtui.core.fleet.launch import LaunchRequest, launch
from vlmtui.core.fleet.registry import Registry
from vlmtui.core.fleet.runs import get_run

RECIPE = "r1-llm-only"

LOCKER = """
import sqlite3, sys
con = sqlite3.connect(sys.argv[1], isolation_level=None)
con.execute("BEGIN IMMEDIATE")
con.execute("UPDATE runs SET error = error")
print("locked", flush=True)
sys.stdin.read()
"""


@pytest.fixture(autouse=True)
def _end_leftovers() -> Iterator[None]:
    yield
    for path in Path(os.environ["VLMTUI_HOME"]).glob("data/runs/*"):
        for pid in processes_of(path.name, marker=b""):
            kill_group(pid)


def _launch(paths: tuple[str, str]) -> str:
    model, data = paths
    return launch(LaunchRequest(recipe=RECIPE, model=model, data=data, gpu="cpu")).run_id


def _status(run_dir: str) -> str | None:
    try:
        return json.loads(Path(run_dir, "status.json").read_text()).get("state")
    except (OSError, ValueError):
        return None


def test_a_registry_locked_for_good_never_hangs_a_command(
    standin_train, paths, capsys, monkeypatch
):
    standin_train("ok", steps=500, step_s=0.1)
    run_id = _launch(paths)
    run_dir = Registry().get(run_id).run_dir
    poll(lambda: _status(run_dir) == "training")
    monkeypatch.setattr(registry_mod, "WRITE_WAIT_S", 2.0)
    with_lock = subprocess.Popen(
        [sys.executable, "-c", LOCKER, str(Registry().path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert with_lock.stdout is not None and with_lock.stdout.readline() == "locked\n"
        start = time.monotonic()
        assert main(["runs", "--json"]) == 0  # the state is the host's; writing it waits
        (row,) = json.loads(capsys.readouterr().out)
        assert row["state"] == "training"
        assert time.monotonic() - start < registry_mod.NOTE_WAIT_S + 3
        assert Registry().get(run_id).state == "pending"  # not written: the file is held

        start = time.monotonic()
        model, data = paths
        assert main(["launch", "--recipe", RECIPE, "--model", model, "--data", data]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "stayed locked by another process for 2 s" in err[0], err
        assert 2.0 <= time.monotonic() - start < 6

        assert main(["stop", run_id, "--grace", "5"]) == 0
        assert capsys.readouterr().out.strip() == f"{run_id}: stopped"
        assert not processes_of(run_id, marker=b"")
    finally:
        with_lock.kill()
        with_lock.wait()
    assert get_run(run_id).state == "stopped"
    assert Registry().get(run_id).state == "stopped"  # written once the lock is gone
    assert len(Registry().all()) == 1  # the refused launch left no row


def _finished(standin_train, paths) -> list[str]:
    standin_train("ok", steps=2, step_s=0.0)
    ids = [_launch(paths) for _ in range(2)]
    for run_id in ids:
        poll(lambda r=run_id: get_run(r).state == "finished")
    return ids


def test_a_zeroed_registry_is_rebuilt_not_taken_for_no_runs(standin_train, paths, capsys):
    """A crash of the file system can leave the file 0 bytes long: SQLite reads that as an
    empty database, and every run would vanish from `runs`."""
    ids = _finished(standin_train, paths)
    path = Registry().path
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    path.write_bytes(b"")
    assert main(["runs", "--json"]) == 0
    out = capsys.readouterr()
    assert sorted(r["id"] for r in json.loads(out.out)) == sorted(ids)
    assert all(r["state"] == "finished" for r in json.loads(out.out))
    assert "the run registry was empty; registry rebuilt: 2 run(s) found" in out.err


def test_registry_deleted_under_a_running_logs_follow(standin_train, paths, capsys):
    """`logs --follow` holds one Registry for its whole life and re-reads the row every few
    seconds; deleting the file under it must neither crash it nor leave an empty file that
    hides every run from the next command."""
    done = _finished(standin_train, paths)
    standin_train("ok", steps=40, step_s=0.1)
    run_id = _launch(paths)
    follow = subprocess.Popen(
        [sys.executable, "-m", "vlmtui", "logs", run_id, "--follow"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert follow.stdout is not None
    assert follow.stdout.readline().startswith("[vlmtui] ")  # it follows
    path = Registry().path
    for p in path.parent.glob("runs.sqlite*"):
        p.unlink()
    out, err = follow.communicate(timeout=60)
    assert follow.returncode == 0 and "Traceback" not in err, err
    assert "step 40/40" in out and "state finished" in out
    assert main(["runs", "--json"]) == 0
    rows = {r["id"]: r["state"] for r in json.loads(capsys.readouterr().out)}
    assert rows == {**dict.fromkeys(done, "finished"), run_id: "finished"}


OLD_SCHEMA = """CREATE TABLE runs (
    id TEXT PRIMARY KEY, recipe TEXT NOT NULL, host TEXT NOT NULL, gpus TEXT NOT NULL,
    nproc INTEGER NOT NULL DEFAULT 1, model TEXT NOT NULL DEFAULT '',
    data TEXT NOT NULL DEFAULT '', max_steps INTEGER, run_dir TEXT NOT NULL, pid INTEGER,
    created REAL NOT NULL, state TEXT NOT NULL, step INTEGER, loss REAL, error TEXT,
    checked REAL, command TEXT NOT NULL DEFAULT '[]')"""


@pytest.mark.parametrize("version", ["older", "newer"])
def test_a_registry_of_another_version_keeps_working(standin_train, paths, capsys, version):
    """`older`: the schema of the first release (no `job` column); `newer`: a column this
    version does not know, as a later vlmtui sharing the home would add."""
    (run_id,) = _finished(standin_train, paths)[:1]
    path = Registry().path
    row = sqlite3.connect(path).execute("SELECT * FROM runs WHERE id = ?", (run_id,))
    names = [d[0] for d in row.description]
    values = dict(zip(names, row.fetchone(), strict=True))
    for p in path.parent.glob("runs.sqlite*"):
        p.unlink()
    con = sqlite3.connect(path)
    if version == "older":
        con.execute(OLD_SCHEMA)
        del values["job"]
    else:
        con.execute(registry_mod.SCHEMA.split(";")[0].replace("job TEXT", "job TEXT, tag TEXT"))
        values["tag"] = "from the future"
    con.execute(
        f"INSERT INTO runs ({','.join(values)}) VALUES ({','.join('?' * len(values))})",
        tuple(values.values()),
    )
    con.commit()
    con.close()
    assert main(["runs", "--json"]) == 0
    (shown,) = json.loads(capsys.readouterr().out)
    assert (shown["id"], shown["state"], shown["job"]) == (run_id, "finished", None)
    standin_train("ok", steps=1, step_s=0.0)
    assert poll(lambda: get_run(_launch(paths)).id)  # a new row goes in beside it
    assert len(Registry().all()) == 2


def test_odd_files_in_one_run_directory_cost_only_that_run(standin_train, paths, capsys):
    """supervisor.json and launch.json of a dead run edited into nonsense (or damaged): its
    host's other runs are still answered, nothing is signalled on its say-so, and a rebuild
    of the registry still finds every run."""
    standin_train("ok", steps=500, step_s=0.1)
    good, odd = _launch(paths), _launch(paths)
    for run_id in (good, odd):
        poll(lambda r=run_id: get_run(r).step)  # training, a step logged
    odd_dir = Path(Registry().get(odd).run_dir)
    kill_group(json.loads((odd_dir / "supervisor.json").read_text())["pid"])
    poll(lambda: not processes_of(odd, marker=b""))
    (odd_dir / "supervisor.json").write_text('{"pid": "abc", "starttime": 7, "boot_id": []}')
    launch_json = json.loads((odd_dir / "launch.json").read_text())
    launch_json.update(created="yesterday", nproc="two", gpus=0, command="python")
    (odd_dir / "launch.json").write_text(json.dumps(launch_json))
    good_status = Path(Registry().get(good).run_dir) / "status.json"
    good_status.write_bytes(b'{"state": "trai\x00\xff')  # damaged while it trains
    assert main(["runs", "--json"]) == 0
    rows = {r["id"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows[good]["state"] == "training"  # it logs steps: not `pending`
    assert rows[odd]["state"] == "failed", rows[odd]
    assert main(["stop", odd]) == 0
    assert "was not running" in capsys.readouterr().out
    for p in Registry().path.parent.glob("runs.sqlite*"):
        p.unlink()
    assert main(["runs", "--json"]) == 0
    rows = {r["id"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) == {good, odd} and rows[good]["state"] == "training"
    assert rows[odd]["state"] == "failed" and rows[odd]["recipe"] == RECIPE


def test_a_full_disk_under_the_registry_costs_writes_only(standin_train, paths, capsys, tmp_path):
    """The registry's disk fills to the last byte (the runs live on another): WAL mode cannot
    create its side files even to read, yet `runs` and `stop` answer from the run
    directories, and `launch` fails in one line naming the registry and its free space."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    data = Path(os.environ["VLMTUI_HOME"]) / "data"
    data.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(data)])
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        (tmp_path / "runs").mkdir()
        (data / "runs").symlink_to(tmp_path / "runs")
        standin_train("ok", steps=500, step_s=0.1)
        run_id = _launch(paths)
        poll(lambda: _status(Registry().get(run_id).run_dir) == "training")
        fd = os.open(data / "filler", os.O_WRONLY | os.O_CREAT)
        with contextlib.suppress(OSError):  # until ENOSPC
            while True:
                os.write(fd, b"\0" * 4096)
        os.close(fd)
        assert shutil.disk_usage(data).free == 0
        assert main(["runs", "--json"]) == 0
        (row,) = json.loads(capsys.readouterr().out)
        assert (row["id"], row["state"]) == (run_id, "training")
        model, data_dir = paths
        assert main(["launch", "--recipe", RECIPE, "--model", model, "--data", data_dir]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("vlmtui: cannot use the run registry "), err
        assert err[0].endswith("; 0.0 MiB free on its disk"), err
        assert main(["stop", run_id, "--grace", "5"]) == 0
        assert capsys.readouterr().out.strip() == f"{run_id}: stopped"
        (data / "filler").unlink()
        assert get_run(run_id).state == "stopped"
        assert Registry().get(run_id).state == "stopped"  # written once there is room
    finally:
        subprocess.run(["umount", "-l", str(data)], check=False)
