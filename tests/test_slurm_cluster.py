"""Runs on a real Slurm cluster (tests/slurm_cluster.py): on one node submit, queue, stop,
kill, time limit, two dependent stages, a stopped controller, a refused partition; on two
nodes a run whose ranks are spread over both.

The trainer is the real `vlmtui train` on the tiny demo model where the test is about
training (finishing, checkpoints on stop and time limit, two stages); elsewhere the stand-in
trainer of conftest_ssh runs inside the job, since the test is about Slurm's states.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from conftest_slurm import ClusterHost, wait_for
from vlmtui.cli import main
from vlmtui.core.fleet.runs import RunView, get_run

pytestmark = [pytest.mark.slurm]
REASONS = ("Resources", "Priority")


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def launch(capsys: pytest.CaptureFixture[str], model: Path, data: Path, *extra: str) -> str:
    code, out, err = cli(
        capsys, "launch", "--host", "cluster", "--model", str(model), "--data", str(data), *extra
    )
    assert code == 0, err
    return out.strip()


def state_in(run_id: str, *states: str) -> RunView | None:
    view = get_run(run_id)
    return view if view.state in states else None


def checkpoints(run_dir: str) -> list[Path]:
    return sorted(Path(run_dir).glob("**/checkpoints/checkpoint-*"))


@pytest.mark.slow
def test_r1_run_finishes_and_runs_shows_job_id_and_loss(
    cluster_host: ClusterHost, qwen2_vl_dir: Path, shapes_data_dir: Path, capsys
) -> None:
    run_id = launch(capsys, qwen2_vl_dir, shapes_data_dir, "--recipe", "r1-llm-only",
                    "--max-steps", "2")  # fmt: skip
    view = wait_for("finished", lambda: state_in(run_id, "finished", "failed", "stopped"), 150)
    assert view.state == "finished", view.error
    assert view.job and view.job.isdigit() and view.loss is not None and view.step == 2
    code, out, _ = cli(capsys, "runs")
    line = next(ln for ln in out.splitlines() if run_id in ln)
    assert f"job {view.job}" in line and "finished" in line and f"{view.loss:.4f}" in line
    code, out, _ = cli(capsys, "logs", run_id)
    assert code == 0 and "vlmtui train --recipe r1-llm-only" in out


@pytest.mark.slow
def test_r2_across_two_nodes_finishes_with_one_rank_on_each(
    cluster2_host: ClusterHost, qwen2_vl_dir: Path, shapes_data_dir: Path, capsys
) -> None:
    """`--nodes 2 --gpus 1` on the two-node cluster: srun starts a torchrun agent on n1 and
    one on n2, which meet at the c10d store on n1's address. The node names do not resolve
    (the fault this reproduces: the endpoint was the name), and both agents share 127.0.0.1,
    so torchrun cannot tell by address which hosts the store: node 0 must."""
    run_id = launch(capsys, qwen2_vl_dir, shapes_data_dir, "--recipe", "r2-vision-only",
                    "--nodes", "2", "--gpus", "1", "--max-steps", "2")  # fmt: skip
    view = wait_for("finished", lambda: state_in(run_id, "finished", "failed", "stopped"), 300)
    log = (Path(view.run_dir) / "output.log").read_text()
    assert view.state == "finished", (view.error, log[-3000:])
    assert view.step == 2 and view.job and view.gpu == "1gpux2", view
    assert log.count("step 2/2") == 1, log  # srun's pipe, not also the trainer's own copy
    info = json.loads((Path(view.run_dir) / "run.json").read_text())
    assert info["world_size"] == 2, info
    # One rank per node: the job held both nodes and its step ran a task on each (a world
    # of 2 from `--nproc_per_node 1` needs both agents); the job ends after the trainer.
    jobcomp = cluster2_host.cluster.jobcomp
    record = wait_for("the job's end", lambda: next((
        ln for ln in (jobcomp.read_text() if jobcomp.exists() else "").splitlines()
        if f"JobId={view.job} " in ln
    ), None), 60)  # fmt: skip
    assert "NodeList=n[1-2]" in record and "JobState=COMPLETED" in record, record
    _, out, _ = cli(capsys, "runs")
    line = next(ln for ln in out.splitlines() if run_id in ln)
    assert "finished" in line and "cluster:1gpux2" in line, line


def test_a_second_submit_waits_queued_with_the_reason_then_runs(
    cluster_host: ClusterHost, slurm_standin, qwen2_vl_dir: Path, shapes_data_dir: Path, capsys
) -> None:
    c = cluster_host.cluster
    blocker = c.run("sbatch", "--parsable", "--gres=gpu:4", "-o", "/dev/null", "--wrap",
                    "sleep 300").stdout.strip()  # fmt: skip
    wait_for("the blocker to run", lambda: "RUNNING" in c.run("squeue", "-h", "-j", blocker,
             "-o", "%T").stdout)  # fmt: skip
    slurm_standin(steps=3, step_s=0.1)
    run_id = launch(capsys, qwen2_vl_dir, shapes_data_dir, "--recipe", "r1-llm-only")
    reason = "queued with Slurm's reason"
    seen: list[tuple[str, str | None]] = []

    def queued_with_reason() -> RunView | None:
        view = get_run(run_id)
        seen.append((view.state, view.error))
        return view if view.error in REASONS else None

    # Slurm names the reason at its next scheduling pass (seconds on a loaded machine)
    view = wait_for(reason, queued_with_reason, 60)
    assert view.state == "queued", seen
    _, out, _ = cli(capsys, "runs")
    assert "queued" in out and view.error in out
    c.run("scancel", blocker)
    view = wait_for("finished", lambda: state_in(run_id, "finished", "failed"), 60)
    assert view.state == "finished", view.error


@pytest.mark.slow
def test_stop_saves_a_checkpoint_and_ends_stopped(
    cluster_host: ClusterHost, qwen2_vl_dir: Path, shapes_data_dir: Path, capsys
) -> None:
    run_id = launch(capsys, qwen2_vl_dir, shapes_data_dir, "--recipe", "r1-llm-only",
                    "--max-steps", "400")  # fmt: skip
    wait_for("step 1", lambda: (get_run(run_id).step or 0) >= 1, 150)
    code, _, err = cli(capsys, "stop", run_id, "--grace", "60")
    assert code == 0, err
    view = get_run(run_id)
    assert view.state == "stopped" and view.error == "stopped by vlmtui stop", view
    assert checkpoints(view.run_dir), "no checkpoint saved on stop"


def test_scancel_kill_from_outside_is_failed_with_the_reason(
    cluster_host: ClusterHost, slurm_standin, qwen2_vl_dir: Path, shapes_data_dir: Path, capsys
) -> None:
    slurm_standin(steps=600, step_s=0.1)
    run_id = launch(capsys, qwen2_vl_dir, shapes_data_dir, "--recipe", "r1-llm-only")
    view = wait_for("training", lambda: state_in(run_id, "training"), 60)
    cluster_host.cluster.run("scancel", "--signal=KILL", str(view.job))
    view = wait_for("failed", lambda: state_in(run_id, "failed", "stopped", "finished"), 60)
    assert view.state == "failed" and "cancelled" in (view.error or ""), (
        view,
        (Path(view.run_dir) / "stop_reason").read_text(),
        (Path(view.run_dir) / "status.json").read_text(),
    )


@pytest.mark.slow
def test_time_limit_saves_a_checkpoint_then_stops_with_time_limit(
    cluster_host: ClusterHost, qwen2_vl_dir: Path, shapes_data_dir: Path, capsys
) -> None:
    run_id = launch(capsys, qwen2_vl_dir, shapes_data_dir, "--recipe", "r1-llm-only",
                    "--max-steps", "5000", "--time", "10")  # fmt: skip
    c = cluster_host.cluster
    job = wait_for("step 1", lambda: (v := get_run(run_id)).step and v.job, 150)
    assert "TimeLimit=00:10:00" in c.run("scontrol", "show", "job", job).stdout
    # Slurm's warning comes up to a minute early, maybe during start-up, where there is
    # nothing to save yet; so the limit is cut once training runs: 45-105 s left, less than
    # the 120 s warning, and the signal comes at Slurm's next check.
    elapsed = c.run("squeue", "-h", "-j", job, "-o", "%M").stdout.strip()
    seconds = sum(int(x) * 60**i for i, x in enumerate(reversed(elapsed.split(":"))))
    c.run("scontrol", "update", f"JobId={job}", f"TimeLimit={(seconds + 45) // 60 + 1}")
    view = wait_for("stopped", lambda: state_in(run_id, "stopped", "failed", "finished"), 120)
    assert view.state == "stopped" and (view.error or "").startswith("time limit"), view.error
    assert checkpoints(view.run_dir), "no checkpoint saved before the time limit"


@pytest.mark.slow
def test_r3_runs_as_two_dependent_jobs(
    cluster_host: ClusterHost, qwen2_vl_dir: Path, shapes_data_dir: Path, capsys
) -> None:
    run_id = launch(capsys, qwen2_vl_dir, shapes_data_dir, "--recipe", "r3-two-stage",
                    "--max-steps", "1")  # fmt: skip
    first = get_run(run_id)
    jobs = (first.job or "").split(",")
    assert len(jobs) == 2, first
    dep = cluster_host.cluster.run("scontrol", "show", "job", jobs[1]).stdout
    assert f"Dependency=afterok:{jobs[0]}" in dep
    view = wait_for("finished", lambda: state_in(run_id, "finished", "failed", "stopped"), 240)
    assert view.state == "finished", view.error
    for stage in ("stage1", "stage2"):
        assert (Path(view.run_dir) / stage / "weights.json").exists()


def test_a_failed_stage_one_leaves_stage_two_failed(
    cluster_host: ClusterHost, slurm_standin, qwen2_vl_dir: Path, shapes_data_dir: Path, capsys
) -> None:
    slurm_standin(mode="crash", steps=1, step_s=0.1)
    run_id = launch(capsys, qwen2_vl_dir, shapes_data_dir, "--recipe", "r3-two-stage")
    view = wait_for("failed", lambda: state_in(run_id, "failed", "finished"), 60)
    assert view.state == "failed" and (view.error or "").startswith("stage 1 failed"), view


def test_a_stopped_controller_gives_unknown_quickly(
    cluster_host: ClusterHost, slurm_standin, qwen2_vl_dir: Path, shapes_data_dir: Path, capsys
) -> None:
    slurm_standin(steps=600, step_s=0.1)
    run_id = launch(capsys, qwen2_vl_dir, shapes_data_dir, "--recipe", "r1-llm-only")
    c = cluster_host.cluster
    c.stop_daemon("slurmctld")
    try:
        start = time.monotonic()
        _, out, _ = cli(capsys, "runs")
        elapsed = time.monotonic() - start
        line = next(ln for ln in out.splitlines() if ln.startswith(run_id))
        assert "unknown" in line and "squeue failed" in line, line
        assert elapsed < 15, f"`vlmtui runs` took {elapsed:.1f} s with slurmctld down"
        assert len(line.splitlines()) == 1
    finally:
        c.start_slurmctld()
        c.wait_idle()


def test_a_partition_with_shell_metacharacters_is_refused(
    cluster_host: ClusterHost, qwen2_vl_dir: Path, shapes_data_dir: Path, capsys, tmp_path
) -> None:
    marker = tmp_path / "pwned"
    code, out, err = cli(
        capsys, "launch", "--host", "cluster", "--recipe", "r1-llm-only",
        "--model", str(qwen2_vl_dir), "--data", str(shapes_data_dir),
        "--partition", f"debug;touch {marker}",
    )  # fmt: skip
    assert code == 2 and out == ""
    assert err == f"vlmtui: slurm partition: 'debug;touch {marker}' contains ';'\n"
    assert not marker.exists()
    assert not cluster_host.cluster.run("squeue", "-h").stdout.strip()


@pytest.mark.ssh
def test_a_login_node_over_ssh(
    cluster_host: ClusterHost, sshd_server, slurm_standin, qwen2_vl_dir: Path,
    shapes_data_dir: Path, capsys,
) -> None:  # fmt: skip
    """The same cluster reached through a login node over SSH (the loopback sshd): submit,
    probe, gpus and logs go through the shared connection."""
    import os

    from vlmtui.core.fleet.hosts import save_host

    table = sshd_server.host_table(cluster_host.runs_dir.parent / "login-work")
    table["env"] = {"SLURM_CONF": str(cluster_host.cluster.conf), "PATH": os.environ["PATH"]}
    save_host("cluster", kind="slurm", runs_dir=str(cluster_host.runs_dir), **table)
    (cluster_host.runs_dir.parent / "login-work").mkdir()
    slurm_standin(steps=3, step_s=0.1)
    run_id = launch(capsys, qwen2_vl_dir, shapes_data_dir, "--recipe", "r1-llm-only")
    view = wait_for("finished", lambda: state_in(run_id, "finished", "failed"), 60)
    assert view.state == "finished" and view.job, view
    code, out, _ = cli(capsys, "gpus", "--host", "cluster")
    assert code == 0 and "cluster: reachable — Slurm" in out and "gpu3" in out
    code, out, _ = cli(capsys, "logs", run_id)
    assert code == 0 and "stand-in training in" in out


def test_hosts_check_probes_a_compute_node_and_gpus_lists_the_node(
    cluster_host: ClusterHost, capsys
) -> None:
    code, out, err = cli(capsys, "hosts", "check", "cluster")
    assert code == 0, out + err
    assert "partition: debug ok" in out or "partition: (default) ok" in out
    assert "compute node: vlmtui " in out and "runs dir:" in out
    node = cluster_host.cluster.node
    code, out, _ = cli(capsys, "gpus", "--host", "cluster")
    assert code == 0 and f"{node} " in out and "/4 GPUs allocated" in out


def test_logs_of_a_job_whose_trainer_never_ran_show_slurms_output(
    cluster_host: ClusterHost, qwen2_vl_dir: Path, shapes_data_dir: Path, capsys, monkeypatch
) -> None:
    """A batch script that dies before it starts anything: `logs` falls back to the job's
    slurm-<jobid>.out, and `runs` says the job failed."""
    from vlmtui.core.fleet import slurmlaunch

    monkeypatch.setattr(slurmlaunch, "batch_script", lambda spec, s, time=None: (
        "#!/bin/bash\necho 'module load cuda: not found' >&2\nexit 3\n"
    ))  # fmt: skip
    run_id = launch(capsys, qwen2_vl_dir, shapes_data_dir, "--recipe", "r1-llm-only")
    view = wait_for("failed", lambda: state_in(run_id, "failed", "finished", "unknown"), 60)
    assert view.state == "failed" and "job failed" in (view.error or ""), view
    code, out, _ = cli(capsys, "logs", run_id)
    assert code == 0 and "module load cuda: not found" in out


def test_sbatch_refusing_a_job_says_why_and_leaves_no_run(
    cluster_host: ClusterHost, qwen2_vl_dir: Path, shapes_data_dir: Path, capsys
) -> None:
    code, out, err = cli(
        capsys, "launch", "--host", "cluster", "--recipe", "r3-two-stage",
        "--model", str(qwen2_vl_dir), "--data", str(shapes_data_dir), "--partition", "nosuch",
    )  # fmt: skip
    assert code == 1 and out == "" and err.count("\n") == 1, err
    assert err.startswith("vlmtui: sbatch on cluster failed: ") and "partition" in err.lower()
    assert cli(capsys, "runs")[1].startswith("no runs yet")
    assert not cluster_host.cluster.run("squeue", "-h").stdout.strip()
