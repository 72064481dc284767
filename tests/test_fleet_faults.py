"""Fleet faults of issue 11, each reproduced with real processes, sshd and SQLite: a pid
reused by a stranger, a restarted host, a launch reply lost on the link, a launcher killed
mid-launch, reservations of ended runs, and a stopped run brought back by a resume.

The runs execute the stand-in trainer (conftest_ssh.STANDIN_TRAIN); GPUs are the stand-in
nvidia-smi's (these machines have none).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from faultkit import (
    KILLED_LAUNCHER,
    LostReplyHost,
    alive,
    kill_group,
    poll,
    pretend_rebooted,
    pretend_reused,
    processes_of,
    stranger,
    supervisor,
)
from vlmtui.cli import main
from vlmtui.core.errors import BadInput, WorkFailed
from vlmtui.core.fleet import launch as launch_mod
from vlmtui.core.fleet.hosts import get_host, load_hosts
from vlmtui.core.fleet.launch import LaunchRequest, launch, resume_run
from vlmtui.core.fleet.registry import Registry
from vlmtui.core.fleet.runrecord import RunRecord
from vlmtui.core.fleet.runs import get_run, stop_run
from vlmtui.core.fleet.status import gpu_status

RECIPE = "r1-llm-only"


@pytest.fixture(autouse=True)
def _end_leftovers():
    """Every run group a test started is killed when it ends (by the run id it carries)."""
    yield
    for rec in Registry().all():
        for pid in processes_of(rec.id, marker=b""):
            kill_group(pid)


def wait_state(run_id: str, *states: str, timeout: float = 30.0):
    return poll(lambda: (v := get_run(run_id)).state in states and v, timeout)


def go(paths, **kw) -> launch_mod.LaunchResult:
    model, data = paths
    return launch(LaunchRequest(recipe=RECIPE, model=model, data=data, **kw))


# --- 2: a pid reused by a stranger; a restarted host ----------------------------------------


@pytest.fixture(params=["local", "ssh"])
def host(request, fake_local_gpus) -> str:
    """`local`, or `loop` (the loopback sshd): the probe then runs over SSH."""
    if request.param == "ssh":
        return request.getfixturevalue("ssh_host").name
    fake_local_gpus("a100x4")
    return "local"


@pytest.mark.parametrize("copy_starttime", [False, True], ids=["own-starttime", "same-starttime"])
def test_reused_pid_is_not_the_run_and_is_never_signalled(
    standin_train, paths, host, copy_starttime
):
    standin_train("ok", steps=500, step_s=0.1)
    run = go(paths, gpu="0", host=host)
    wait_state(run.run_id, "training")
    kill_group(run.pid)  # the run dies without a word (SIGKILL to the whole group)
    poll(lambda: not processes_of(run.run_id, marker=b""))
    other = stranger()
    try:
        # The kernel hands the dead supervisor's pid to a new session leader.
        pretend_reused(run.run_dir, other.pid, copy_starttime=copy_starttime)
        Registry().update(run.run_id, pid=other.pid)
        view = get_run(run.run_id)
        assert view.state == "failed", view
        assert "without a final state" in (view.error or "")
        (gpus,) = gpu_status([host])
        assert gpus.gpus[0].reserved_by is None  # its GPU is free again
        result = stop_run(run.run_id, grace_s=1)
        assert not result.was_running and result.state == "failed"
        assert alive(other.pid) and other.poll() is None  # the stranger got no signal
    finally:
        other.kill()
        other.wait()


def test_group_without_its_leader_is_still_the_run(standin_train, paths):
    """The supervisor alone is SIGKILLed: the trainer (same group, same run id) lives on, and
    `stop` ends it: the proof is by membership, not by the leader alone."""
    standin_train("ok", steps=500, step_s=0.1)
    run = go(paths, gpu="cpu")
    wait_state(run.run_id, "training")
    os.kill(run.pid, signal.SIGKILL)
    poll(lambda: not alive(run.pid))
    assert get_run(run.run_id).state == "training"
    result = stop_run(run.run_id, grace_s=5)
    assert result.was_running and result.state == "stopped"
    assert not processes_of(run.run_id, marker=b"")


def test_processes_outside_the_runs_group_are_the_run_and_stop_ends_them(standin_train, paths):
    """torchrun starts each worker in a session of its own: SIGKILL to the run's group (the
    supervisor, the agent) leaves the workers training. They carry the run id: the run is
    alive, and `stop` ends them (it used to call the run failed, then refuse to stop "a
    foreground run" or find nothing to signal)."""
    standin_train("session-child", steps=500, step_s=0.1)
    run = go(paths, gpu="cpu")
    wait_state(run.run_id, "training")
    outside = poll(lambda: [p for p in processes_of(run.run_id, marker=b"sleep")])
    kill_group(run.pid)
    poll(lambda: not alive(run.pid))
    assert alive(outside[0])
    assert get_run(run.run_id).state == "training"
    result = stop_run(run.run_id, grace_s=5)
    assert result.was_running and result.state == "stopped"
    assert not processes_of(run.run_id, marker=b"")


@pytest.mark.slow
def test_torchrun_workers_left_by_a_killed_group_are_stopped(qwen2_vl_dir, shapes_data_dir):
    """The real thing: a two-process CPU run, its supervisor's group SIGKILLed mid-training."""
    req = LaunchRequest(
        recipe=RECIPE, model=str(qwen2_vl_dir), data=str(shapes_data_dir), gpu="cpu", nproc=2,
        max_steps=2000,
    )  # fmt: skip
    run = launch(req)
    poll(lambda: (get_run(run.run_id).step or 0) >= 2, timeout=180)
    kill_group(run.pid)
    poll(lambda: not alive(run.pid))
    workers = processes_of(run.run_id, marker=b"vlmtui")
    assert len(workers) == 2, workers  # rank 0 and rank 1 train on
    assert get_run(run.run_id).state == "training"
    result = stop_run(run.run_id, grace_s=60)
    assert result.was_running and result.state == "stopped", result
    assert not processes_of(run.run_id, marker=b"")


def test_restarted_host_fails_runs_and_stop_signals_nothing(standin_train, paths, host):
    standin_train("ok", steps=500, step_s=0.1)
    run = go(paths, gpu="cpu", host=host)
    wait_state(run.run_id, "training")
    pretend_rebooted(run.run_dir)  # another boot id: this pid is not the run's any more
    view = get_run(run.run_id)
    assert (view.state, view.error) == ("failed", "host restarted")
    result = stop_run(run.run_id, grace_s=1)
    assert not result.was_running and result.state == "failed"
    assert processes_of(run.run_id)  # untouched: after a real restart it is someone else


def test_stop_of_an_unprovable_process_says_so_and_marks_nothing(standin_train, paths, capsys):
    """A pid recorded for the run whose process never carried the run id (the supervisor
    never wrote supervisor.json): stop refuses in one line."""
    standin_train("ok", steps=500, step_s=0.1)
    run = go(paths, gpu="cpu")
    wait_state(run.run_id, "training")
    kill_group(run.pid)
    Path(run.run_dir, "supervisor.json").unlink()
    other = stranger()
    try:
        Registry().update(run.run_id, pid=other.pid)
        assert main(["stop", run.run_id, "--grace", "1"]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "nothing signalled" in err[0], err
        assert Registry().get(run.run_id).state != "stopped"
        assert alive(other.pid)
    finally:
        other.kill()
        other.wait()


def test_identity_of_a_run_started_before_run_ids(tmp_path):
    """supervisor.json without a run id (older vlmtui): pid and start time decide."""
    from vlmtui.core.fleet.onhost import hostprobe

    proc = stranger()
    try:
        start = hostprobe.proc_starttime(proc.pid)
        info = {"pid": proc.pid, "pgid": proc.pid, "starttime": start}
        hostprobe.write_json_atomic(tmp_path / "supervisor.json", info)
        assert hostprobe.probe_run(str(tmp_path), "r1")["proof"] == "alive"
        info["starttime"] = str(int(start) - 1)
        hostprobe.write_json_atomic(tmp_path / "supervisor.json", info)
        assert hostprobe.probe_run(str(tmp_path), "r1")["proof"] == "gone"
        info.update(starttime=start, run_id="r1")  # a run id it does not carry
        hostprobe.write_json_atomic(tmp_path / "supervisor.json", info)
        assert hostprobe.probe_run(str(tmp_path), "r1")["proof"] == "gone"
    finally:
        proc.kill()
        proc.wait()


def test_two_stops_at_once_end_the_run_once(standin_train, paths):
    """Two `vlmtui stop` processes (a double click in two terminals); one with a short grace
    period. Both report the run stopped, neither fails, nothing of the run lives on."""
    standin_train("ignore-term", steps=500, step_s=0.1)
    run = go(paths, gpu="cpu")
    wait_state(run.run_id, "training")
    argv = [sys.executable, "-m", "vlmtui", "stop", run.run_id, "--grace"]
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    stops = [subprocess.Popen([*argv, grace], **pipes) for grace in ("30", "1")]
    answers = [(p.communicate(timeout=60), p.returncode) for p in stops]
    for (out, err), code in answers:
        assert code == 0 and err == "" and out.startswith(f"{run.run_id}: stopped"), (out, err)
    assert not processes_of(run.run_id, marker=b"")
    view = get_run(run.run_id)
    # Which of the two writes status.json last is a race; either says `stopped`.
    assert view.state == "stopped", view
    assert view.error in ("killed with SIGKILL after 1 s", "stopped by SIGTERM"), view


@pytest.mark.ssh
def test_link_dropped_during_a_stop_claims_nothing_and_the_stop_goes_through(
    standin_train, paths, ssh_host
):
    """The SSH connection drops while `stop` waits out the grace period on the host: the stop
    runs on there (it needs no link), so the command must not say it could not stop."""
    standin_train("ignore-term", steps=500, step_s=0.1)
    run = go(paths, gpu="cpu", host=ssh_host.name)
    wait_state(run.run_id, "training")
    master = get_host(ssh_host.name).master_pid()
    assert master

    def drop_once_the_stop_runs() -> None:
        poll(lambda: processes_of(run.run_id, marker=b"") and _stop_probe_running())
        os.kill(master, signal.SIGKILL)

    dropper = threading.Thread(target=drop_once_the_stop_runs)
    dropper.start()
    with pytest.raises(WorkFailed, match=r"no answer from loop to the stop of .*being stopped"):
        stop_run(run.run_id, grace_s=3)
    dropper.join()
    view = wait_state(run.run_id, "stopped")
    assert view.error == "killed with SIGKILL after 3 s"
    assert not processes_of(run.run_id, marker=b"")


def _stop_probe_running() -> bool:
    """Whether the host (this machine, through sshd) runs the shipped probe's `stop`."""
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv[1:4] == [b"-I", b"-", b"stop"]:
            return True
    return False


# --- 3: the launch reply lost on the link ---------------------------------------------------


@pytest.fixture
def lost_reply(monkeypatch, ssh_host):
    def use(mode: str) -> None:
        host = LostReplyHost(load_hosts()[ssh_host.name])
        host.mode = mode
        monkeypatch.setattr(launch_mod, "get_host", lambda name: host)

    return use


def test_lost_launch_reply_leaves_an_unknown_row_that_settles(
    standin_train, paths, ssh_host, lost_reply
):
    standin_train("ok", steps=12, step_s=0.25)
    lost_reply("drop")
    model, data = paths
    with pytest.raises(WorkFailed, match="did not confirm the start of run") as info:
        launch(LaunchRequest(recipe=RECIPE, model=model, data=data, host=ssh_host.name))
    run_id = str(info.value).split("start of run ")[1].split()[0]
    row = Registry().get(run_id)
    assert row.state == "unknown" and row.gpus == "0"  # kept, GPU held
    (loop,) = gpu_status([ssh_host.name])
    assert loop.gpus[0].reserved_by == run_id
    view = wait_state(run_id, "training", "finished")
    assert view.pid == supervisor(view.run_dir)["pid"]  # from the host's run directory
    assert len(processes_of(run_id)) <= 1
    assert wait_state(run_id, "finished", timeout=60).step == 12
    (loop,) = gpu_status([ssh_host.name])
    assert loop.gpus[0].reserved_by is None


def test_start_is_idempotent_per_launch(standin_train, paths, ssh_host, lost_reply):
    """The reply is lost and the same start script runs again: one run, not two."""
    standin_train("ok", steps=500, step_s=0.1)
    lost_reply("rerun")
    model, data = paths
    run = launch(LaunchRequest(recipe=RECIPE, model=model, data=data, host=ssh_host.name))
    view = wait_state(run.run_id, "training")
    assert len(processes_of(run.run_id)) == 1
    assert view.pid == supervisor(view.run_dir)["pid"]
    assert stop_run(run.run_id, grace_s=5).state == "stopped"


# --- 6: the launcher killed mid-launch ------------------------------------------------------


def _killed_launch(standin_script: Path, paths: tuple[str, str]) -> RunRecord:
    """Launch in a process SIGKILLed after the run started; the registry row it left."""
    res = subprocess.run(
        [sys.executable, "-c", KILLED_LAUNCHER, str(standin_script), *paths],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert res.returncode == -9, res.stderr
    (row,) = Registry().all()
    return row


def test_killed_launcher_row_gets_its_pid_and_stop_works(_standin_script, paths):
    row = _killed_launch(_standin_script, paths)
    assert row.state == "launching" and row.pid is None  # what the killed launcher left
    view = wait_state(row.id, "training")
    assert view.pid == supervisor(view.run_dir)["pid"] == Registry().get(row.id).pid
    result = stop_run(row.id, grace_s=5)
    assert result.was_running and result.state == "stopped"


def test_stop_reads_the_pid_from_the_host_when_the_row_has_none(_standin_script, paths):
    row = _killed_launch(_standin_script, paths)
    poll(lambda: Path(row.run_dir, "supervisor.json").exists())
    result = stop_run(row.id, grace_s=5)  # no `runs` in between: the row still has no pid
    assert result.was_running and result.state == "stopped"


# --- 7: reservations of runs that ended -----------------------------------------------------


def test_ended_runs_release_their_gpus_without_a_runs_call(standin_train, paths, fake_local_gpus):
    fake_local_gpus("a100x4")  # GPUs 0 and 3 free
    standin_train("ok", steps=2, step_s=0.5)
    first, second = go(paths, gpu="auto"), go(paths, gpu="auto")
    for run in (first, second):
        poll(lambda r=run: json.loads(Path(r.run_dir, "status.json").read_text())["state"]
             == "finished")  # fmt: skip
    stale = {r.id: r.state for r in Registry().all()}
    assert not set(stale.values()) & {"finished"}  # the rows do not know yet
    (local,) = gpu_status(["local"])
    assert [g.reserved_by for g in local.gpus] == [None] * 4
    assert go(paths, gpu="auto").gpu == "0"  # no "no free GPU"


# --- 8: a stopped run resumed ---------------------------------------------------------------


def test_foreground_resume_updates_the_stopped_row(standin_train, _standin_script, paths):
    standin_train("ok", steps=500, step_s=0.1)
    run = go(paths, gpu="cpu")
    wait_state(run.run_id, "training")
    assert stop_run(run.run_id, grace_s=5).state == "stopped"
    assert get_run(run.run_id).state == "stopped"
    # What `train --resume --output RUN_DIR` does to the run directory, in the foreground.
    resumed = subprocess.Popen(
        [sys.executable, str(_standin_script), run.run_dir, "ok", "8", "0.25"],
        stdout=subprocess.DEVNULL,
    )
    try:
        assert wait_state(run.run_id, "training").error is None  # not "stopped", not "failed"
        with pytest.raises(WorkFailed, match="runs in the foreground"):
            stop_run(run.run_id, grace_s=1)  # its start time is known to a second only
        assert resumed.poll() is None
        view = wait_state(run.run_id, "finished")
        assert (view.step, view.max_steps) == (8, 8)
    finally:
        resumed.kill()
        resumed.wait()


def test_launch_resume_relaunches_in_the_same_run_dir(standin_train, paths, capsys):
    standin_train("ok", steps=500, step_s=0.05)
    run = go(paths, gpu="cpu")
    wait_state(run.run_id, "training")
    with pytest.raises(BadInput, match="only a stopped or failed run can resume"):
        resume_run(run.run_id)
    stop_run(run.run_id, grace_s=5)
    standin_train("ok", steps=3, step_s=0.05)
    assert main(["launch", "--resume", run.run_id]) == 0
    assert capsys.readouterr().out.strip() == run.run_id
    assert json.loads(Path(run.run_dir, "launch.json").read_text())["resume"] is True
    view = wait_state(run.run_id, "finished")
    assert view.run_dir == run.run_dir and len(Registry().all()) == 1
    log = Path(run.run_dir, "output.log").read_text()
    assert log.count("stand-in training in") == 2  # the first run's output is kept


def test_resume_waits_for_the_last_start_to_end(standin_train, paths, monkeypatch):
    """The run has written `failed` but its processes are still ending: a resume started at
    once would have its status overwritten by the old supervisor's ending ("exited with
    code 1" over the new start). It waits for them, or refuses while they last."""
    standin_train("linger", steps=1, step_s=0.0)
    run = go(paths, gpu="cpu")
    poll(lambda: json.loads(Path(run.run_dir, "status.json").read_text())["state"] == "failed")
    assert processes_of(run.run_id)  # the last start is still ending
    monkeypatch.setattr(launch_mod, "RESUME_WAIT_S", 0.5)
    with pytest.raises(WorkFailed, match="the processes of its last start still run"):
        resume_run(run.run_id)
    assert get_run(run.run_id).state == "failed" and processes_of(run.run_id)  # untouched
    standin_train("ok", steps=20, step_s=0.1)
    monkeypatch.setattr(launch_mod, "RESUME_WAIT_S", 15.0)
    resume_run(run.run_id)
    seen = []
    poll(lambda: seen.append(get_run(run.run_id).state) or seen[-1] in ("finished", "failed"))
    assert seen[-1] == "finished" and "failed" not in seen, seen
    assert json.loads(Path(run.run_dir, "exit.json").read_text())["returncode"] == 0


RESUMER = """
import sys
from vlmtui.core.errors import BadInput, WorkFailed
from vlmtui.core.fleet import launch as L
from vlmtui.core.fleet.shell import HomePath
script, run_id = sys.argv[1:3]
L.train_command = lambda python_argv, targs: [
    *python_argv, script, HomePath(targs.run_dir), "ok", "30", "0.1"]
try:
    L.resume_run(run_id)
    print("STARTED")
except (BadInput, WorkFailed) as exc:
    print("REFUSED", exc)
"""


def test_resumes_at_once_start_the_run_once(standin_train, _standin_script, paths):
    """Four `launch --resume` of one stopped run at once (a double click, two terminals):
    without a guard each passed the state check and started its own trainer in the one run
    directory. The row is claimed in the registry transaction: one starts it."""
    standin_train("ok", steps=500, step_s=0.1)
    run = go(paths, gpu="cpu")
    wait_state(run.run_id, "training")
    stop_run(run.run_id, grace_s=5)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", RESUMER, str(_standin_script), run.run_id],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for _ in range(4)
    ]  # fmt: skip
    answers = [p.communicate(timeout=60) for p in procs]
    said = sorted(out.split()[0] for out, _ in answers if out)
    assert said == ["REFUSED"] * 3 + ["STARTED"], answers
    assert len(processes_of(run.run_id)) == 1  # one supervisor
    assert wait_state(run.run_id, "finished").step == 30


def test_resume_reaches_the_train_command():
    from vlmtui.core.fleet.launchscript import TrainArgs, train_command

    args = TrainArgs(recipe=RECIPE, model="/m", data="/d", run_dir="/r", gpus=("cpu",))
    assert "--resume" not in train_command(["python"], args)
    resumed = train_command(["python"], replace(args, resume=True))
    assert resumed[resumed.index("train") :].count("--resume") == 1
