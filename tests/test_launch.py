"""Detached runs: launch, reservations, stop, failure reasons, logs, locally and over SSH.

Most tests run the stand-in trainer (conftest_ssh.STANDIN_TRAIN): they need a run that lives
a while, not training. The `slow` tests at the end run the real `vlmtui train` on the tiny
demo model (CPU), over the loopback sshd where marked `ssh`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vlmtui.cli import main
from vlmtui.core.errors import BadInput
from vlmtui.core.fleet.gpuchoice import parse_gpu_spec
from vlmtui.core.fleet.hosts import get_host
from vlmtui.core.fleet.launch import LaunchRequest, launch
from vlmtui.core.fleet.logs import LogTail
from vlmtui.core.fleet.onhost import hostprobe
from vlmtui.core.fleet.registry import Registry
from vlmtui.core.fleet.runs import get_run, stop_run

RECIPE = "r1-llm-only"


@pytest.fixture(autouse=True)
def _end_leftover_runs():
    """Whatever a test leaves running is killed (by process group) when it ends."""
    yield
    for rec in Registry().active():  # every test host is this machine
        pid = (hostprobe.read_json(Path(rec.run_dir) / "supervisor.json") or {}).get("pid")
        for p in {rec.pid, pid} - {None}:
            try:
                os.killpg(p, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                continue


def wait_state(run_id: str, states: tuple[str, ...], timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while True:
        view = get_run(run_id)
        if view.state in states:
            return view
        if time.monotonic() > deadline:
            log = Path(view.run_dir, "output.log")
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise AssertionError(f"run {run_id} is {view.state} ({view.error}); log:\n{tail}")
        time.sleep(0.2)


def until(cond, timeout: float = 10.0, what: str = "") -> None:
    """Poll `cond` until it holds; fail after `timeout` seconds (no fixed sleeps)."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or cond}")
        time.sleep(0.02)


def group_members(pgid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            f = hostprobe._stat_fields(int(entry.name))
            if f and f[2] == str(pgid) and f[0] != "Z":
                out.append(int(entry.name))
    return out


def test_parse_gpu_spec():
    assert parse_gpu_spec("auto") == "auto" and parse_gpu_spec("cpu") == "cpu"
    assert parse_gpu_spec("0") == (0,) and parse_gpu_spec("0,1") == (0, 1)
    for bad in ("a", "0;1", "0,0", "-1", "$(x)"):
        with pytest.raises(BadInput):
            parse_gpu_spec(bad)


def test_local_launch_returns_at_once_and_run_finishes(standin_train, paths, capsys):
    standin_train("ok", steps=3, step_s=0.2)
    model, data = paths
    result = launch(LaunchRequest(recipe=RECIPE, model=model, data=data, gpu="cpu"))
    assert result.elapsed_s < 2.0 and result.gpu == "cpu"
    status = json.loads(Path(result.run_dir, "status.json").read_text())
    assert status["run_id"] == result.run_id  # written before the spawn
    assert get_run(result.run_id).state in ("pending", "loading", "training", "finished")
    view = wait_state(result.run_id, ("finished",))
    assert (view.step, view.max_steps, view.loss) == (3, 3, round(2.0 / 3, 4))
    assert main(["runs", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["id"] == result.run_id and row["state"] == "finished" and row["step"] == 3
    exit_info = json.loads(Path(result.run_dir, "exit.json").read_text())
    assert exit_info["returncode"] == 0


def test_stop_ends_run_and_its_children(standin_train, paths):
    standin_train("child", steps=500, step_s=0.1)
    model, data = paths
    result = launch(LaunchRequest(recipe=RECIPE, model=model, data=data, gpu="cpu"))
    wait_state(result.run_id, ("training",))
    # supervisor, stand-in, its `sleep` child
    until(lambda: len(group_members(result.pid)) >= 3, what="the run's three processes")
    stopped = stop_run(result.run_id, grace_s=10)
    assert stopped.was_running and not stopped.killed and stopped.state == "stopped"
    assert group_members(result.pid) == []
    view = get_run(result.run_id)
    assert view.state == "stopped" and view.error == "stopped by SIGTERM"


def test_stop_sigkills_after_grace(standin_train, paths):
    standin_train("ignore-term", steps=500, step_s=0.1)
    model, data = paths
    result = launch(LaunchRequest(recipe=RECIPE, model=model, data=data, gpu="cpu"))
    wait_state(result.run_id, ("training",))
    start = time.monotonic()
    stopped = stop_run(result.run_id, grace_s=1.0)
    assert stopped.killed and stopped.state == "stopped"
    assert 0.9 < time.monotonic() - start < 8
    assert get_run(result.run_id).error == "killed with SIGKILL after 1 s"
    assert group_members(result.pid) == []
    again = stop_run(result.run_id)
    assert not again.was_running and again.state == "stopped"


def test_sigkilled_trainer_is_failed_with_reason(standin_train, paths):
    standin_train("ok", steps=500, step_s=0.1)
    model, data = paths
    result = launch(LaunchRequest(recipe=RECIPE, model=model, data=data, gpu="cpu"))
    wait_state(result.run_id, ("training",))
    trainer = [p for p in group_members(result.pid) if p != result.pid]
    os.kill(trainer[0], signal.SIGKILL)
    view = wait_state(result.run_id, ("failed",), timeout=30)
    assert view.error.startswith("killed by SIGKILL")


def test_sigkilled_process_group_is_failed_with_reason(standin_train, paths):
    standin_train("ok", steps=500, step_s=0.1)
    model, data = paths
    result = launch(LaunchRequest(recipe=RECIPE, model=model, data=data, gpu="cpu"))
    wait_state(result.run_id, ("training",))
    os.killpg(result.pid, signal.SIGKILL)  # nobody left to write anything
    view = wait_state(result.run_id, ("failed",), timeout=30)
    assert "without a final state" in view.error
    assert json.loads(Path(view.run_dir, "status.json").read_text())["state"] == "training"


@pytest.mark.parametrize(
    ("mode", "reason"),
    [("oom", "CUDA out of memory"), ("crash", "exited with code 1; RuntimeError: stand-in")],
)
def test_died_without_final_state_reason_from_log(standin_train, paths, mode, reason):
    standin_train(mode, steps=1, step_s=0.0)
    model, data = paths
    result = launch(LaunchRequest(recipe=RECIPE, model=model, data=data, gpu="cpu"))
    view = wait_state(result.run_id, ("failed",))
    assert view.error.startswith(reason)


def test_logs_read_only_new_bytes(standin_train, paths, capsys):
    standin_train("ok", steps=4, step_s=0.3)
    model, data = paths
    result = launch(LaunchRequest(recipe=RECIPE, model=model, data=data, gpu="cpu"))
    tail = LogTail(Registry().get(result.run_id))
    seen = b""
    deadline = time.monotonic() + 30
    while b"step 4/4" not in seen and time.monotonic() < deadline:
        chunk = tail.read()
        assert not seen.endswith(chunk) or not chunk
        seen += chunk
        time.sleep(0.1)
    assert tail.offset == len(seen) and seen.startswith(b"[vlmtui] ")
    assert main(["logs", result.run_id[:-1], "--follow"]) == 0
    out = capsys.readouterr().out
    assert "step 4/4" in out and "[vlmtui] command ended with code 0; state finished" in out


def supervisor_environ(pid: int) -> list[bytes]:
    """The supervisor's environment, once the launch script's background job has exec'd it
    (before that, /proc shows the forked shell's environment: a race on a busy machine)."""
    deadline = time.monotonic() + 30
    while b"vlmtui.core.supervise" not in Path(f"/proc/{pid}/cmdline").read_bytes():
        assert time.monotonic() < deadline, "the supervisor never started"
        time.sleep(0.02)
    return Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")


def test_gpu_choice_and_reservations(standin_train, paths, fake_local_gpus):
    # Stand-in nvidia-smi (this machine has no GPU): GPUs 0 and 3 free, 1 and 2 busy.
    fake_local_gpus("a100x4")
    standin_train("ok", steps=500, step_s=0.1)
    model, data = paths

    def go(gpu: str, force: bool = False):
        return launch(LaunchRequest(recipe=RECIPE, model=model, data=data, gpu=gpu, force=force))

    first = go("auto")
    assert first.gpu == "0"
    second = go("auto")
    assert second.gpu == "3"  # 0 is reserved until its process shows on the GPU
    with pytest.raises(BadInput, match="no free GPU on local"):
        go("auto")
    with pytest.raises(BadInput, match="GPU 0 on local is reserved by run " + first.run_id):
        go("0")
    with pytest.raises(BadInput, match=r"GPU 1 on local is busy \(1 compute process"):
        go("1")
    with pytest.raises(BadInput, match="has no GPU 7"):
        go("7")
    forced = go("1", force=True)
    assert forced.gpu == "1"
    env = supervisor_environ(forced.pid)
    assert b"CUDA_VISIBLE_DEVICES=1" in env and b"CUDA_DEVICE_ORDER=PCI_BUS_ID" in env
    stop_run(first.run_id, grace_s=5)
    assert go("auto").gpu == "0"  # free again once its run has ended


def test_several_gpus_run_one_torchrun_job(standin_train, paths, fake_local_gpus):
    from vlmtui.core.fleet.launchscript import TrainArgs, train_command

    host = get_host("local")
    targs = TrainArgs(recipe=RECIPE, model="/m", data="/d", run_dir="/r", gpus=("0", "3"), nproc=2)
    cmd = train_command(host.python_argv(), targs)
    i = cmd.index("torch.distributed.run")
    assert cmd[i + 1 : i + 4] == ["--standalone", "--nproc_per_node", "2"]
    assert cmd[i + 4 : i + 7] == ["-m", "vlmtui", "train"] and "--gpu" not in cmd
    assert "--master_port" not in cmd  # --standalone picks a free rendezvous port
    fake_local_gpus("a100x4")
    standin_train("ok", steps=500, step_s=0.1)
    model, data = paths
    result = launch(LaunchRequest(recipe=RECIPE, model=model, data=data, gpu="0,3"))
    assert result.gpu == "0,3"
    env = supervisor_environ(result.pid)
    assert b"CUDA_VISIBLE_DEVICES=0,3" in env
    with pytest.raises(BadInput, match="GPU 0 on local is reserved"):
        launch(LaunchRequest(recipe=RECIPE, model=model, data=data, gpu="0"))


def test_unknown_run_is_bad_input(capsys):
    assert main(["logs", "nope"]) == 2
    assert main(["stop", "nope"]) == 2
    assert "unknown run 'nope'" in capsys.readouterr().err


RACER = """
import sys
from vlmtui.core.fleet import launch as L
from vlmtui.core.errors import BadInput
from vlmtui.core.fleet.shell import HomePath
script, model, data = sys.argv[1:4]
L.train_command = lambda python_argv, targs: [
    *python_argv, script, HomePath(targs.run_dir), "ok", "500", "0.1"]
try:
    r = L.launch(L.LaunchRequest(recipe="r1-llm-only", model=model, data=data, gpu="auto"))
    print("GPU", r.gpu)
except BadInput as exc:
    print("REFUSED", exc)
"""


def test_quick_launches_from_several_processes_never_share_a_gpu(
    _standin_script, paths, fake_local_gpus
):
    fake_local_gpus("a100x4")  # two free GPUs: 0 and 3
    model, data = paths
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, str(_standin_script), model, data],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    outs = sorted(p.communicate(timeout=120)[0].strip() for p in procs)
    assert outs[:2] == ["GPU 0", "GPU 3"], outs
    assert all(o.startswith("REFUSED no free GPU") for o in outs[2:]), outs


@pytest.mark.parametrize(
    "argv",
    [
        ["--recipe", "r1;touch {m}"],
        ["--recipe", "$(touch {m})"],
        ["--recipe", "`touch {m}`"],
        ["--host", "x'; touch {m}; '"],
        ["--host", "a b"],
        ["--gpu", "0;touch {m}"],
        ["--model", "/nope/$(touch {m})"],
        ["--data", "/nope/`touch {m}`; touch {m} \"'"],
        ["--model", "/nope\nnewline"],
    ],
)
def test_launch_refuses_bad_values_with_exit_2(argv, paths, tmp_path, capsys):
    marker = tmp_path / "pwned"
    model, data = paths
    base = {"--recipe": RECIPE, "--model": model, "--data": data, "--gpu": "cpu"}
    base.update(dict(zip(argv[::2], argv[1::2], strict=True)))
    args = ["launch"] + [x.replace("{m}", str(marker)) for kv in base.items() for x in kv]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("vlmtui: ") and "Traceback" not in err
    assert not marker.exists()
    assert Registry().all() == []


def weird_dir(root: Path, marker: Path) -> Path:
    """A directory whose name is shell metacharacters that would create `marker` if run."""
    d = root / f"d $(touch {marker.name}) `touch {marker.name}`; touch {marker.name} '\" &"
    d.mkdir(parents=True)
    return d


def test_local_paths_with_metacharacters_are_quoted(standin_train, tmp_path, monkeypatch):
    standin_train("ok", steps=1, step_s=0.0)
    marker = tmp_path / "pwned"
    monkeypatch.chdir(tmp_path)
    d = weird_dir(tmp_path / "w", marker)
    result = launch(LaunchRequest(recipe=RECIPE, model=str(d), data=str(d), gpu="cpu"))
    wait_state(result.run_id, ("finished",))
    assert str(d) in Path(result.run_dir, "output.log").read_text()
    assert not marker.exists() and not list(tmp_path.rglob("pwned"))


def test_unknown_recipe_and_missing_paths(paths):
    model, data = paths
    with pytest.raises(BadInput, match="unknown recipe 'nope'"):
        launch(LaunchRequest(recipe="nope", model=model, data=data, gpu="cpu"))
    with pytest.raises(BadInput, match="model path '/nope' does not exist on local"):
        launch(LaunchRequest(recipe=RECIPE, model="/nope", data=data, gpu="cpu"))
    with pytest.raises(BadInput, match="unknown host 'far'"):
        launch(LaunchRequest(recipe=RECIPE, model=model, data=data, host="far"))
    assert Registry().all() == []


# --- over SSH (loopback sshd) -------------------------------------------------------------


@pytest.mark.ssh
def test_ssh_launch_stop_logs_with_standin(standin_train, ssh_host, paths):
    standin_train("child", steps=500, step_s=0.1)
    model, data = paths
    result = launch(
        LaunchRequest(recipe=RECIPE, model=model, data=data, host=ssh_host.name, gpu="cpu")
    )
    assert result.run_dir.startswith(str(ssh_host.workdir / "runs"))
    wait_state(result.run_id, ("training",))
    tail = LogTail(Registry().get(result.run_id))
    first = tail.read()
    assert first.startswith(b"[vlmtui] ") and tail.offset == len(first)
    stopped = stop_run(result.run_id, grace_s=10)
    assert stopped.was_running and stopped.state == "stopped"
    assert group_members(result.pid) == []
    rest = tail.read()
    assert b"state stopped" in rest and not rest.startswith(first)
    whole = first + rest
    near_end = LogTail(Registry().get(result.run_id))
    near_end.skip_to_tail(keep_bytes=70)
    assert near_end.offset == len(whole) - 70
    last = near_end.read()
    assert whole.endswith(last) and 0 < len(last) < 70  # starts at a line start
    assert whole[len(whole) - len(last) - 1 : len(whole) - len(last)] == b"\n"


@pytest.mark.ssh
def test_ssh_gpu_reservation_and_busy(standin_train, ssh_host, paths):
    standin_train("ok", steps=500, step_s=0.1)
    model, data = paths
    req = LaunchRequest(recipe=RECIPE, model=model, data=data, host=ssh_host.name, gpu="auto")
    assert launch(req).gpu == "0"
    assert launch(req).gpu == "3"
    with pytest.raises(BadInput, match="no free GPU on loop"):
        launch(req)


@pytest.mark.ssh
def test_ssh_paths_with_metacharacters_are_quoted(standin_train, ssh_host, tmp_path):
    standin_train("ok", steps=1, step_s=0.0)
    marker = tmp_path / "pwned"
    d = weird_dir(tmp_path / "w", marker)
    req = LaunchRequest(recipe=RECIPE, model=str(d), data=str(d), host=ssh_host.name, gpu="cpu")
    result = launch(req)
    wait_state(result.run_id, ("finished",))
    assert str(d) in Path(result.run_dir, "output.log").read_text()
    missing = LaunchRequest(
        recipe=RECIPE, model=f"/nope/$(touch {marker})", data=str(d), host=ssh_host.name
    )
    with pytest.raises(BadInput, match="does not exist on loop"):
        launch(missing)
    assert not list(tmp_path.rglob("pwned")) and not list(ssh_host.workdir.rglob("pwned"))


@pytest.mark.ssh
def test_ssh_user_recipe_travels_with_the_run(standin_train, ssh_host, paths):
    from vlmtui.core.recipes.catalog import user_recipe_dir

    user_recipe_dir().mkdir(parents=True)
    text = '[recipe.my-r1]\nextends = "r1-llm-only"\nlearning_rate = 1e-4\n'
    (user_recipe_dir() / "mine.toml").write_text(text)
    standin_train("ok", steps=1, step_s=0.0)
    model, data = paths
    req = LaunchRequest(recipe="my-r1", model=model, data=data, host=ssh_host.name, gpu="cpu")
    result = launch(req)
    copy = Path(result.run_dir, "recipes", "00-mine.toml")
    assert copy.read_text() == text
    assert result.command[-2:] == ("--recipes", f"{result.run_dir}/recipes/00-mine.toml")


@pytest.mark.ssh
def test_ssh_remote_python_without_vlmtui_is_refused(standin_train, ssh_host, paths, sshd_server):
    from vlmtui.core.fleet.hosts import save_host

    save_host("plain", **sshd_server.host_table(ssh_host.workdir, python="/usr/bin/python3"))
    model, data = paths
    with pytest.raises(BadInput, match="cannot import vlmtui"):
        launch(LaunchRequest(recipe=RECIPE, model=model, data=data, host="plain", gpu="cpu"))


# --- real training (slow) -----------------------------------------------------------------


def vlmtui_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "vlmtui", *args], capture_output=True, text=True, timeout=timeout
    )


def wait_cli_state(run_id: str, states: tuple[str, ...], timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        res = vlmtui_cli("runs", "--json")
        assert res.returncode == 0, res.stderr
        (row,) = [r for r in json.loads(res.stdout) if r["id"] == run_id]
        if row["state"] in states:
            return row
        if time.monotonic() > deadline:
            log = Path(row["run_dir"], "output.log")
            raise AssertionError(f"{row}\n{log.read_text()[-3000:] if log.exists() else ''}")
        time.sleep(1.0)


@pytest.mark.slow
@pytest.mark.ssh
def test_ssh_training_survives_launcher_and_master_being_killed(
    ssh_host, qwen2_vl_dir, shapes_data_dir
):
    launcher = subprocess.Popen(
        [sys.executable, "-m", "vlmtui", "launch", "--host", ssh_host.name, "--recipe", RECIPE,
         "--model", str(qwen2_vl_dir), "--data", str(shapes_data_dir), "--gpu", "cpu",
         "--max-steps", "3"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    run_id = launcher.stdout.readline().strip()
    assert run_id, launcher.stderr.read()
    launcher.kill()  # SIGKILL the launching process (if it is still there)
    launcher.wait()
    host = get_host(ssh_host.name)
    master = host.master_pid()
    assert master
    os.kill(master, signal.SIGKILL)  # and drop the SSH connection under the run
    until(lambda: host.master_pid() is None, what="the SSH master to be gone")
    row = wait_cli_state(run_id, ("finished", "failed"), timeout=300)
    assert row["state"] == "finished", row
    assert row["step"] == 3 and row["max_steps"] == 3 and row["loss"] > 0
    assert "step 3/3" in vlmtui_cli("logs", run_id).stdout  # the trainer's own step lines
    # status.json says finished just before the trainer exits; the supervisor's last line
    # follows within moments.
    deadline = time.monotonic() + 20
    while "[vlmtui] command ended with code 0" not in vlmtui_cli("logs", run_id).stdout:
        assert time.monotonic() < deadline


@pytest.mark.slow
@pytest.mark.ssh
def test_ssh_sigkilled_training_is_failed_with_reason(ssh_host, qwen2_vl_dir, shapes_data_dir):
    res = vlmtui_cli(
        "launch", "--host", ssh_host.name, "--recipe", RECIPE, "--model", str(qwen2_vl_dir),
        "--data", str(shapes_data_dir), "--gpu", "cpu", "--max-steps", "10000", "--json",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    launched = json.loads(res.stdout)
    wait_cli_state(launched["id"], ("training",), timeout=300)
    trainer = [p for p in group_members(launched["pid"]) if p != launched["pid"]]
    os.kill(trainer[0], signal.SIGKILL)
    row = wait_cli_state(launched["id"], ("failed",), timeout=30)
    assert row["error"].startswith("killed by SIGKILL")


@pytest.mark.slow
def test_local_training_stop_ends_stopped(qwen2_vl_dir, shapes_data_dir):
    res = vlmtui_cli(
        "launch", "--recipe", RECIPE, "--model", str(qwen2_vl_dir), "--data",
        str(shapes_data_dir), "--gpu", "cpu", "--max-steps", "10000",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    run_id = res.stdout.strip()
    wait_cli_state(run_id, ("training",), timeout=300)
    stop = vlmtui_cli("stop", run_id, "--grace", "60", "--json")
    assert stop.returncode == 0, stop.stderr
    assert json.loads(stop.stdout)["state"] == "stopped"
    row = wait_cli_state(run_id, ("stopped",), timeout=30)
    assert row["error"].startswith("stopped by SIG")


@pytest.mark.slow
def test_two_torchrun_cpu_runs_at_once_both_finish(qwen2_vl_dir, shapes_data_dir):
    # Two data-parallel runs (2 processes each, gloo) on one host at the same time: each
    # gets its own rendezvous port from `--standalone`, so neither collides.
    ids = []
    for _ in range(2):
        res = vlmtui_cli(
            "launch", "--recipe", RECIPE, "--model", str(qwen2_vl_dir), "--data",
            str(shapes_data_dir), "--gpu", "cpu", "--nproc", "2", "--max-steps", "2", "--json",
        )  # fmt: skip
        assert res.returncode == 0, res.stderr
        launched = json.loads(res.stdout)
        assert "torch.distributed.run" in launched["command"]
        ids.append(launched["id"])
    for run_id in ids:
        row = wait_cli_state(run_id, ("finished", "failed"), timeout=400)
        assert row["state"] == "finished" and row["step"] == 2, row
    run_json = json.loads(Path(row["run_dir"], "run.json").read_text())
    assert run_json["world_size"] == 2
