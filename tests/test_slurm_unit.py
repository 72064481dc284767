"""The Slurm pieces that need no cluster: validation, batch scripts, sbatch argv, Slurm's
answers parsed, and the state a run gets from them. The command lines are checked by running
them through bash's parser (`bash -n`) as well as by reading them."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from vlmtui.core.errors import BadInput
from vlmtui.core.fleet import slurmstate
from vlmtui.core.fleet.slurm import (
    JobSpec,
    SlurmSettings,
    batch_script,
    check_extra,
    check_value,
    parse_job_id,
    sbatch_argv,
    train_command,
)
from vlmtui.core.fleet.slurmstate import JobInfo, judge_slurm


def spec(**kw: object) -> JobSpec:
    base: dict[str, object] = dict(
        run_id="20261129-000000-abcd",
        run_dir="/shared/runs/20261129-000000-abcd",
        workdir="/shared/work",
        train_argv=("train", "--recipe", "r1-llm-only", "--output", "/shared/runs/x"),
        python="/opt/venv/bin/python",
    )
    base.update(kw)
    return JobSpec(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("partition", "gpu;rm -rf /"),
        ("partition", "gpu$(id)"),
        ("partition", "a b"),
        ("account", "acct`x`"),
        ("qos", "q|x"),
        ("time", "04:00:00\n#SBATCH --x"),
        ("gres", "gpu:a100 x"),
        ("mem_per_gpu", "64G;"),
    ],
)
def test_shell_metacharacters_are_refused_naming_the_field(field: str, value: str) -> None:
    with pytest.raises(BadInput) as err:
        check_value(field, value)
    msg = str(err.value)
    assert msg.startswith(f"slurm {field}: ") and "\n" not in msg


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("partition", "gpu"),
        ("partition", "gpu,debug"),
        ("time", "04:00:00"),
        ("time", "1-00:00:00"),
        ("time", "30"),
        ("gres", "gpu:a100"),
        ("constraint", "a100|h100"),
        ("mem_per_gpu", "64G"),
    ],
)
def test_ordinary_values_pass(field: str, value: str) -> None:
    assert check_value(field, value) == value


def test_sbatch_extra_items_are_single_options() -> None:
    assert check_extra(["--exclusive", "--mail-type=END"]) == ("--exclusive", "--mail-type=END")
    for bad in ("--x; rm -rf /", "-x", "--wrap=a b", "--x=$(id)"):
        with pytest.raises(BadInput, match="sbatch_extra"):
            check_extra([bad])


def test_one_gpu_runs_vlmtui_train_under_the_supervisor() -> None:
    cmd = train_command(spec())
    assert cmd[:3] == ["/opt/venv/bin/python", "-m", "vlmtui"]
    assert "torch.distributed.run" not in cmd


def test_several_gpus_run_torchrun_standalone() -> None:
    cmd = train_command(spec(gpus=4))
    i = cmd.index("torch.distributed.run")
    assert cmd[i + 1 : i + 4] == ["--standalone", "--nproc_per_node", "4"]


def test_several_nodes_run_srun_torchrun_with_c10d_on_the_first_node() -> None:
    s = spec(gpus=8, nodes=2)
    cmd = train_command(s)
    assert cmd[0] == "srun" and "--nodes=2" in cmd and "--ntasks-per-node=1" in cmd
    for flag, value in (("--nnodes", "2"), ("--nproc_per_node", "8"), ("--rdzv_backend", "c10d")):
        assert cmd[cmd.index(flag) + 1] == value
    assert cmd[cmd.index("--rdzv_endpoint") + 1] == '"$HEAD:$PORT"'
    script = batch_script(s, SlurmSettings())
    assert 'HEAD_NODE=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)' in script
    assert "#SBATCH --nodes=2" in script and "#SBATCH --gres=gpu:8" in script
    assert '--rdzv_endpoint "$HEAD:$PORT" --rdzv_id "$SLURM_JOB_ID"' in script
    subprocess.run(["bash", "-n"], input=script, text=True, check=True)


def _stub_slurm(tmp_path: Path, addr: str) -> dict[str, str]:
    """An environment whose `scontrol` answers as Slurm 22.05 does for nodes n7 and n8 (at
    `addr` + 7 and + 8): it stands in for the job's Slurm, which the two-node cluster test
    runs for real; and a `python` that prints its arguments, one a line."""
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    (bindir / "scontrol").write_text(
        '#!/bin/sh\ncase "$1 $2" in\n'
        "  'show hostnames') printf 'n7\\nn8\\n' ;;\n"
        f"  'show node') echo \"   NodeAddr={addr}${{3#n}} NodeHostName=$3 Port=0\" ;;\n"
        "esac\n"
    )
    (bindir / "python").write_text("#!/bin/sh\nprintf '%s\\n' \"$@\"\n")
    for f in bindir.iterdir():
        f.chmod(0o755)
    return {"PATH": f"{bindir}:/usr/bin:/bin", "SLURM_JOB_NODELIST": "n[7-8]", "SLURM_JOB_ID": "42"}


@pytest.mark.parametrize(("addr", "endpoint"), [("10.0.0.", "10.0.0.7:20042"),
                                                ("fd00::", "[fd00::7]:20042")])  # fmt: skip
def test_the_rendezvous_endpoint_is_the_head_nodes_address_not_its_name(
    tmp_path: Path, addr: str, endpoint: str
) -> None:
    """A node's name need not resolve on the others ("n7: Name or service not known"): the
    job script asks Slurm for the first node's NodeAddr."""
    script = batch_script(spec(nodes=2), SlurmSettings())
    start = script.index("HEAD_NODE=")
    lines = script[start : script.index("\n", script.index("PORT=", start))]
    env = _stub_slurm(tmp_path, addr)
    res = subprocess.run(["bash", "-c", lines + '\nprintf %s "$HEAD:$PORT"'], env=env,
                         capture_output=True, text=True)  # fmt: skip
    assert res.stdout == endpoint, res.stderr


@pytest.mark.parametrize(("node_id", "node", "is_host"), [("0", "n7", "1"), ("1", "n8", "0")])
def test_node_0_hosts_the_rendezvous_store_and_each_node_gives_its_address(
    tmp_path: Path, node_id: str, node: str, is_host: str
) -> None:
    """Agents that share an address (or a NAT) cannot tell by address which hosts the c10d
    store: each srun task says it by its node id, and gives its own NodeAddr as local_addr
    (rank 0's becomes the workers' MASTER_ADDR)."""
    cmd = train_command(spec(nodes=2, python="python"))
    i = cmd.index("bash")
    env = _stub_slurm(tmp_path, "10.0.0.") | {"SLURM_NODEID": node_id, "SLURMD_NODENAME": node}
    argv = [a.replace('"$HEAD:$PORT"', "10.0.0.7:1").replace('"$SLURM_JOB_ID"', "42")
            for a in cmd[i:] if a != "${RESUME:+--resume}"]  # fmt: skip
    res = subprocess.run(argv, env=env, capture_output=True, text=True)
    got = res.stdout.splitlines()
    assert got[:2] == ["-m", "torch.distributed.run"], res.stderr
    assert got[got.index("--rdzv_conf") + 1] == f"is_host={is_host}"
    assert got[got.index("--local_addr") + 1] == f"10.0.0.{node[1]}"
    assert got[got.index("--rdzv_endpoint") + 1] == "10.0.0.7:1"
    assert got[got.index("--rdzv_id") + 1 :][:3] == ["42", "-m", "vlmtui"]


def test_batch_script_directives_and_resume_on_requeue() -> None:
    s = SlurmSettings(
        partition="gpu", account="proj", qos="high", time="04:00:00", cpus_per_gpu=8,
        mem_per_gpu="64G", constraint="a100",
    )  # fmt: skip
    script = batch_script(spec(gpus=2, requeue=True), s)
    for line in (
        "#SBATCH --signal=B:TERM@120", "#SBATCH --gres=gpu:2", "#SBATCH --requeue",
        "#SBATCH --cpus-per-task=16", "#SBATCH --mem-per-gpu=64G", "#SBATCH --partition=gpu",
        "#SBATCH --account=proj", "#SBATCH --qos=high", "#SBATCH --time=04:00:00",
        "#SBATCH --constraint=a100",
    ):  # fmt: skip
        assert line in script.splitlines()
    assert 'if [ "${SLURM_RESTART_COUNT:-0}" -gt 0 ]; then RESUME=1; fi' in script
    assert "${RESUME:+--resume}" in script
    assert '>> "$RUN_DIR/output.log" 2>&1' in script
    assert batch_script(spec(), s, time="10").count("#SBATCH --time=10") == 1
    subprocess.run(["bash", "-n"], input=script, text=True, check=True)


def test_a_path_with_shell_metacharacters_stays_data_in_the_script(tmp_path) -> None:
    odd = str(tmp_path / "runs $(touch pwned); x")
    script = batch_script(spec(run_dir=odd, workdir=str(tmp_path)), SlurmSettings())
    # Run the part before the trainer starts with a stand-in environment: nothing may execute.
    head = script.split('echo "[vlmtui] job')[0]
    subprocess.run(["bash", "-c", head], cwd=tmp_path, check=True)
    assert not (tmp_path / "pwned").exists()


def test_sbatch_argv_dependency_partition_and_extra() -> None:
    s = SlurmSettings(sbatch_extra=("--exclusive",))
    argv = sbatch_argv("/r/job2.sbatch", s, after="41", partition="debug")
    assert argv == [
        "sbatch", "--parsable", "--dependency=afterok:41", "--kill-on-invalid-dep=yes",
        "--partition=debug", "--exclusive", "/r/job2.sbatch",
    ]  # fmt: skip
    with pytest.raises(BadInput, match="slurm partition"):
        sbatch_argv("/r/j", s, partition="x;y")
    assert parse_job_id("1234\n") == "1234" and parse_job_id("77;cluster2\n") == "77"


def test_stages_get_their_own_scripts_and_names() -> None:
    s2 = spec(stage=2, stages=2)
    assert s2.script_name == "job2.sbatch" and s2.name.endswith("-s2")
    assert train_command(s2)[-3:-1] == ["--stage", "2"]


# --- Slurm's answers ----------------------------------------------------------------------


def test_parsers() -> None:
    q = slurmstate.parse_squeue(
        "12|PENDING|Resources|2026-11-29T01:10:00|(null)|vlmtui-a\n13|RUNNING|None|N/A|vm|b\n"
    )
    assert q["12"].reason == "Resources" and q["12"].start == "2026-11-29T01:10:00"
    assert q["13"].state == "RUNNING" and q["13"].reason is None
    line = (
        "JobId=7 UserId=root(0) Name=x JobState=CANCELLED Partition=debug StartTime=2026-11-29T00"
        ":20:03 EndTime=2026-11-29T00:20:03 NodeList=(null) ExitCode=0:0"
    )
    jc = slurmstate.parse_jobcomp(line + "\n" + line.replace("JobId=7", "JobId=8"), {"7"})
    assert list(jc) == ["7"] and jc["7"].state == "CANCELLED" and jc["7"].nodes is None
    sa = slurmstate.parse_sacct("5|TIMEOUT|0:15|2026-11-29T00:00:00|vm\n")
    assert sa["5"].state == "TIMEOUT" and sa["5"].exit_code == "0:15"
    nodes = slurmstate.parse_sinfo_nodes(
        "n1|mixed|gpu:a100:4(S:0-1)|gpu:a100:2(IDX:0-1)|gpu*|2/6/0/8\n"
        "n1|mixed|gpu:a100:4(S:0-1)|gpu:a100:2(IDX:0-1)|long|2/6/0/8\n"
        "n2|drained|gpu:8|gpu:0|gpu*|0/8/0/8\n"
    )
    assert [(n.node, n.gpus_total, n.gpus_used, n.partitions) for n in nodes] == [
        ("n1", 4, 2, ("gpu", "long")),
        ("n2", 8, 0, ("gpu",)),
    ]


def job(i: str, state: str, reason: str | None = None, **kw: object) -> JobInfo:
    return JobInfo(i, state, reason, **kw)  # type: ignore[arg-type]


FOUND = {"found": True}


@pytest.mark.parametrize(
    ("slurm", "facts", "expected"),
    [
        (job("1", "PENDING", "Priority", start="2026-11-29T01:00:00"), FOUND,
         ("queued", "Priority, est. start 2026-11-29T01:00:00")),
        (job("1", "RUNNING"), {"found": True, "status": {"state": "training"}}, ("training", None)),
        (job("1", "RUNNING"), {"found": True, "status": {"state": "pending"}}, ("loading", None)),
        (job("1", "TIMEOUT"), FOUND, ("stopped", "time limit (job 1 TIMEOUT)")),
        (job("1", "OUT_OF_MEMORY", exit_code="0:125"), FOUND,
         ("failed", "out of memory (Slurm OUT_OF_MEMORY) (job 1 OUT_OF_MEMORY, exit 0:125)")),
        (job("1", "NODE_FAIL"), FOUND,
         ("failed", "node failure (Slurm NODE_FAIL) (job 1 NODE_FAIL)")),
        (job("1", "FAILED", exit_code="1:0"), FOUND,
         ("failed", "job failed (job 1 FAILED, exit 1:0)")),
        (job("1", "CANCELLED", nodes="vm"), {"found": True, "stop_reason": "time limit"},
         ("failed", "cancelled outside vlmtui (scancel or an administrator) (job 1 CANCELLED)")),
        (job("1", "CANCELLED", nodes="vm"), {"found": True, "stop_requested": True},
         ("stopped", "stopped by vlmtui stop (job 1 CANCELLED)")),
        (job("1", "COMPLETED"), {"found": True, "status": {"state": "finished"}},
         ("finished", None)),
        (None, FOUND,
         ("unknown", "Slurm no longer knows the job and the run directory has no final state")),
    ],
)  # fmt: skip
def test_one_job_states(slurm: JobInfo | None, facts: dict, expected: tuple) -> None:
    known = {"1": slurm} if slurm else {}
    assert judge_slurm(["1"], known, facts) == expected


def test_final_status_wins_and_a_stop_reason_names_why() -> None:
    stopped = {"found": True, "status": {"state": "stopped", "error": "stopped by SIGTERM"}}
    assert judge_slurm(["1"], {}, {**stopped, "stop_reason": "time limit"}) == (
        "stopped", "time limit",
    )  # fmt: skip
    assert judge_slurm(["1"], {}, stopped) == ("stopped", "stopped by SIGTERM")
    # a signal without `vlmtui stop`: Slurm's final state decides; until then, `saving`
    ending = {"1": job("1", "COMPLETING")}
    assert judge_slurm(["1"], ending, {**stopped, "stop_reason": "time limit"}) == ("saving", None)
    cancelled = {"1": job("1", "CANCELLED", nodes="vm")}
    assert judge_slurm(["1"], cancelled, {**stopped, "stop_reason": "time limit"}) == (
        "failed", "cancelled outside vlmtui (scancel or an administrator) (job 1 CANCELLED)",
    )  # fmt: skip
    requested = {**stopped, "stop_requested": True, "stop_reason": "stopped by vlmtui stop"}
    assert judge_slurm(["1"], cancelled, requested) == ("stopped", "stopped by vlmtui stop")


def test_two_stage_run() -> None:
    jobs = ["1", "2"]
    waiting = {"1": job("1", "RUNNING"), "2": job("2", "PENDING", "Dependency")}
    running = {"found": True, "status": {"state": "training", "stage": 1, "stages": 2}}
    assert judge_slurm(jobs, waiting, running) == ("training", None)
    between = {"1": job("1", "COMPLETED"), "2": job("2", "PENDING", "Dependency")}
    assert judge_slurm(jobs, between, {"found": True, "status": {"state": "pending"}}) == (
        "queued", "waiting for stage 1 (job 1)",
    )  # fmt: skip
    failed = {
        "found": True,
        "status": {"state": "failed", "error": "boom", "stage": 1, "stages": 2},
    }
    assert judge_slurm(jobs, {"1": job("1", "FAILED")}, failed) == (
        "failed", "stage 1 failed: boom",
    )  # fmt: skip
    never = {"1": job("1", "FAILED"), "2": job("2", "PENDING", "DependencyNeverSatisfied")}
    assert judge_slurm(jobs, never, FOUND) == (
        "failed",
        "stage 1 failed: job failed (job 1 FAILED)",
    )
    only_2 = {"2": job("2", "PENDING", "DependencyNeverSatisfied")}
    assert judge_slurm(jobs, only_2, FOUND) == ("failed", "stage 1 failed")
    gone = {"1": job("1", "FAILED", exit_code="1:0")}
    assert judge_slurm(jobs, gone, FOUND) == (
        "failed", "stage 1 failed: job failed (job 1 FAILED, exit 1:0)",
    )  # fmt: skip
    cancelled = {"1": job("1", "COMPLETED"), "2": job("2", "CANCELLED")}
    assert judge_slurm(jobs, cancelled, FOUND) == ("failed", "stage 1 failed")
    # stage 1 forgotten by Slurm, stage 2 running
    assert judge_slurm(jobs, {"2": job("2", "RUNNING")}, running)[0] == "training"


def test_launch_refuses_a_partition_with_shell_metacharacters(tmp_path) -> None:
    """Before anything is registered or submitted (no cluster needed to refuse)."""
    from vlmtui.core.fleet.hosts import save_host
    from vlmtui.core.fleet.launch import LaunchRequest, launch
    from vlmtui.core.fleet.registry import Registry

    save_host("cluster", kind="slurm", runs_dir=str(tmp_path / "runs"))
    registry = Registry()
    req = LaunchRequest("r1-llm-only", "m", "d", host="cluster", partition="gpu;touch /tmp/x")
    with pytest.raises(BadInput, match=r"^slurm partition: 'gpu;touch /tmp/x' contains ';'$"):
        launch(req, registry)
    assert registry.all() == []


def test_hosts_toml_refuses_bad_slurm_values_naming_the_field(tmp_path) -> None:
    from vlmtui.core.fleet.hostsconfig import load_hosts

    path = tmp_path / "hosts.toml"
    path.write_text('[hosts.c]\nkind = "slurm"\npartition = "gpu && reboot"\n')
    with pytest.raises(BadInput, match=r"hosts\.c: slurm partition: 'gpu && reboot' contains"):
        load_hosts(path)
    path.write_text('[hosts.c]\nkind = "slurm"\nsbatch_extra = ["--exclusive", "--x; id"]\n')
    with pytest.raises(BadInput, match="sbatch_extra"):
        load_hosts(path)
    path.write_text('[hosts.c]\npartition = "gpu"\ntarget = "x"\n')
    with pytest.raises(BadInput, match="unknown key 'partition'"):
        load_hosts(path)
    path.write_text('[hosts.c]\nkind = "slurm"\npartition = "gpu"\ntime = "04:00:00"\n')
    c = load_hosts(path)["c"]
    assert c.slurm is not None and c.slurm.partition == "gpu" and c.is_local


def test_registry_gains_the_job_column_in_place(tmp_path) -> None:
    """A registry created before cluster runs existed opens, and old rows read job None."""
    import sqlite3

    from vlmtui.core.fleet.registry import Registry

    path = tmp_path / "runs.sqlite"
    con = sqlite3.connect(path)
    con.execute(
        "CREATE TABLE runs (id TEXT PRIMARY KEY, recipe TEXT NOT NULL, host TEXT NOT NULL, "
        "gpus TEXT NOT NULL, nproc INTEGER NOT NULL DEFAULT 1, model TEXT NOT NULL DEFAULT '', "
        "data TEXT NOT NULL DEFAULT '', max_steps INTEGER, run_dir TEXT NOT NULL, pid INTEGER, "
        "created REAL NOT NULL, state TEXT NOT NULL, step INTEGER, loss REAL, error TEXT, "
        "checked REAL, command TEXT NOT NULL DEFAULT '[]')"
    )
    con.execute(
        "INSERT INTO runs (id, recipe, host, gpus, run_dir, created, state) "
        "VALUES ('old', 'r1', 'local', '0', '/x', ?, 'finished')",
        (time.time(),),
    )
    con.commit()
    con.close()
    reg = Registry(path)
    assert reg.get("old").job is None
    reg.update("old", job="5,6")
    assert reg.get("old").jobs == ["5", "6"]


def test_the_app_offers_submit_for_a_cluster_and_reads_its_queue() -> None:
    """The dispatch dialog's device list for a Slurm snapshot (what SlurmHost.query_gpus
    returns): one choice, submit, with the free GPUs and the queue instead of a GPU pick."""
    from vlmtui.core.fleet.slurmhost import cluster_gpus
    from vlmtui.tui.screens.dispatch import AUTO, device_options

    raw = {
        "sinfo": "n1|mixed|gpu:4|gpu:3|gpu*|3/5/0/8\n",
        "pending": "gpu|vlmtui-x|12\ngpu|other|13\n",
        "running": "n1|vlmtui-a|10|gres/gpu:1\nn1|b|11|gres/gpu:2\n",
    }
    snap = cluster_gpus("cluster", raw)
    assert [g.reserved_by for g in snap.gpus] == ["vlmtui job", "slurm job", "slurm job", None]
    assert snap.note == "n1 mixed 3/4 GPUs allocated (1 by vlmtui) [gpu]; gpu: 2 pending"
    options = device_options(snap)
    assert options == [("submit to Slurm (1 GPU; 1 free now, gpu: 2 pending)", AUTO)]


def test_train_stage_out_of_range_is_one_line(capsys, tmp_path) -> None:
    """`train --stage N` (what a cluster's per-stage job runs) names the recipe's stages."""
    from vlmtui.cli import main

    argv = ["train", "--recipe", "r3-two-stage", "--model", str(tmp_path), "--data", str(tmp_path)]
    code = main([*argv, "--output", str(tmp_path / "o"), "--stage", "3"])
    err = capsys.readouterr().err
    assert code == 2 and err == "vlmtui: --stage: recipe r3-two-stage has 2 stage(s), got 3\n"


PIPED_TRAINER = """
import sys
from pathlib import Path
from vlmtui.core.training.progress import output_log
with output_log(Path(sys.argv[1])):
    print("step 1/2")
"""


@pytest.mark.parametrize("named", [False, True])
def test_a_trainer_piped_into_output_log_by_srun_does_not_copy_its_lines_there(
    tmp_path: Path, named: bool
) -> None:
    """Under srun the trainer's stdout is a pipe to the supervisor's output.log: the
    multi-node job script names that file in VLMTUI_OUTPUT_LOG, or every line shows twice."""
    import os
    import sys

    from vlmtui.core.rundir import OUTPUT_LOG_ENV

    log = tmp_path / "output.log"
    script = batch_script(spec(nodes=2, run_dir=str(tmp_path)), SlurmSettings())
    assert f'export {OUTPUT_LOG_ENV}="$RUN_DIR/output.log"' in script
    env = {k: v for k, v in os.environ.items() if k != OUTPUT_LOG_ENV}
    if named:
        env[OUTPUT_LOG_ENV] = str(log)
    with open(log, "a") as out:  # the supervisor's output.log, reached through a pipe
        pipe = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=out)
        subprocess.run([sys.executable, "-c", PIPED_TRAINER, str(tmp_path)], stdout=pipe.stdin,
                       env=env, check=True)  # fmt: skip
        assert pipe.stdin is not None
        pipe.stdin.close()
        pipe.wait()
    assert log.read_text().count("step 1/2") == (1 if named else 2)
