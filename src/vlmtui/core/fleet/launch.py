"""Start detached training runs on a host (local or SSH), stop them, read their logs.

`launch` validates everything first — recipe, host, the GPUs (exist, free, not reserved by
another vlmtui run, unless `force`), then, in the one round trip that starts the run, the
model and data paths, the host's Python and a fresh run directory — writes a `pending`
status.json and starts `vlmtui train` under the supervisor (`supervise.py`) with `nohup`, in
its own session and process group, output to RUN_DIR/output.log. It returns the run id as
soon as the process exists. The run does not depend on the launching process or the SSH
connection: both may die.

The row is written before the host is asked, and never deleted unless the host refused the
start outright: when the reply is lost the outcome is unknown, the row says `unknown` (its
GPUs stay reserved) and the next reconciliation settles it from the run directory. The start
script is idempotent per launch token, so running it again cannot start a second copy.
`resume_run` (`launch --resume RUN`) starts a stopped or failed run again in its own run
directory, under the same row.

Several GPUs (`0,1`), or `nproc > 1` on the CPU, run one data-parallel job through
`python -m torch.distributed.run --standalone`, which rendezvouses on a free port of its own,
so two such jobs on one host do not collide.

The GPU choice is made inside the registry transaction that inserts the run, so two
launches at once — from two processes — never land on the same GPU.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import time
from dataclasses import dataclass, replace

from vlmtui.core.errors import BadInput, WorkFailed
from vlmtui.core.fleet.gpuchoice import chooser, parse_gpu_spec, reserving
from vlmtui.core.fleet.hosts import Host, get_host
from vlmtui.core.fleet.launchreq import (
    LaunchRequest,
    LaunchResult,
    check_launch_strategy,
    new_run_id,
    recipe_files_for,
)
from vlmtui.core.fleet.launchscript import (
    SCRIPT_ERRORS,
    LaunchPlan,
    TrainArgs,
    launch_script,
    train_command,
)
from vlmtui.core.fleet.onhost.hostprobe import ALIVE
from vlmtui.core.fleet.registry import Registry, RunRecord
from vlmtui.core.fleet.shell import check_name, check_path
from vlmtui.core.fleet.snapshot import CPU, HostGpus


@dataclass(frozen=True)
class _Target:
    """A validated request: the host, the GPU spec and what the host needs."""

    host: Host
    spec: str | tuple[int, ...]
    status: HostGpus | None
    recipe_files: list[tuple[str, str]]


def _checked_host(req: LaunchRequest) -> Host:
    """The request's host, after the checks every host kind shares."""
    check_name("recipe", req.recipe)
    check_path("model", req.model)
    check_path("data", req.data)
    from vlmtui.core.recipes.catalog import get_recipe
    from vlmtui.core.recipes.recipe import check_count

    for flag, value in (("--max-steps", req.max_steps), ("--nproc", req.nproc)):
        check_count(flag, value)

    get_recipe(req.recipe)
    return get_host(req.host)


def _validate(req: LaunchRequest, host: Host) -> _Target:
    if (req.gpus, req.nodes, req.time, req.partition, req.requeue) != (None,) * 4 + (False,):
        raise BadInput(
            f"--gpus/--nodes/--time/--partition/--requeue are for Slurm hosts; {host.name} "
            "is not one (use --gpu)"
        )
    spec = parse_gpu_spec(req.gpu)
    status = None
    if spec != CPU:
        status = host.query_gpus()
        if not status.reachable:
            raise WorkFailed(f"host {host.name} is unreachable: {status.error}")
        if spec == "auto" and not status.gpus:
            spec = CPU
        elif isinstance(spec, tuple):
            missing = [i for i in spec if i not in {g.index for g in status.gpus}]
            if missing:
                have = ", ".join(str(g.index) for g in status.gpus) or "none"
                raise BadInput(f"host {host.name} has no GPU {missing[0]} (GPUs: {have})")
    if spec != CPU and req.nproc not in (None, len(spec) if isinstance(spec, tuple) else 1):
        raise BadInput("--nproc applies to CPU runs; GPU runs use one process per GPU")
    cpus = host.cpu_count
    # torchrun starts every one (--nproc 99999 was a fork storm); two are always allowed, the
    # way to try a sharded run on any machine.
    if spec == CPU and cpus is not None and (req.nproc or 1) > max(2, cpus):
        raise BadInput(f"--nproc: {req.nproc} processes, but this machine has {cpus} CPUs")
    check_launch_strategy(req, spec)
    return _Target(host, spec, status, recipe_files_for(host, req.recipe))


def _reserve(
    req: LaunchRequest, t: _Target, registry: Registry, base: RunRecord, *, was: str | None
) -> RunRecord:
    """Insert (or, resuming a row that was in state `was`, replace) the row with its GPUs
    chosen in the same transaction, after settling the host's reserving rows: a finished run
    must not block the choice."""
    replace = was is not None
    if t.spec == CPU:
        return registry.add(base, replace=replace, if_state=was)
    from vlmtui.core.fleet.runs import reconcile_hosts

    reconcile_hosts([t.host.name], registry)
    assert t.status is not None
    check = reserving(base, chooser(t.spec, t.status, t.host.name, req.force))
    return registry.add(base, check, replace=replace, if_state=was)


def launch(req: LaunchRequest, registry: Registry | None = None) -> LaunchResult:
    """Validate, reserve the GPUs, start the run detached; returns once its process exists."""
    start = time.perf_counter()
    registry = registry or Registry()
    host = _checked_host(req)
    if host.kind == "slurm":  # Slurm picks node and GPUs: the run is submitted, not started
        from vlmtui.core.fleet.slurmhost import require_slurm
        from vlmtui.core.fleet.slurmlaunch import submit_run

        return submit_run(req, require_slurm(host), registry)
    t = _validate(req, host)
    for _attempt in range(5):
        run_id = new_run_id()
        workdir, model, data, run_dir = t.host.launch_paths(req.model, req.data, run_id)
        base = RunRecord(
            id=run_id, recipe=req.recipe, host=t.host.name, gpus=CPU, run_dir=run_dir,
            created=time.time(), state="launching", model=model, data=data,
            max_steps=req.max_steps,
        )  # fmt: skip
        try:
            record = _reserve(req, t, registry, base, was=None)
            break
        except sqlite3.IntegrityError:
            continue  # two launches in the same second drew the same id
    else:
        raise WorkFailed("could not allocate a run id")
    return _start(req, t, registry, record, workdir, start, previous=None)


def resume_run(
    run_id: str,
    gpu: str | None = None,
    max_steps: int | None = None,
    force: bool = False,
    registry: Registry | None = None,
) -> LaunchResult:
    """`launch --resume RUN`: start a stopped or failed run again in its own run directory,
    with `train --resume` (it continues from its last checkpoint); same row, same id."""
    from vlmtui.core.fleet.runs import get_run

    start = time.perf_counter()
    registry = registry or Registry()
    view = get_run(run_id, registry)
    if view.state not in ("stopped", "failed"):
        raise BadInput(f"run {view.id} is {view.state}; only a stopped or failed run can resume")
    rec = registry.get(view.id)
    req = LaunchRequest(
        recipe=rec.recipe, model=rec.model, data=rec.data, host=rec.host,
        gpu=rec.gpus if gpu is None else gpu, force=force,
        max_steps=rec.max_steps if max_steps is None else max_steps,
        nproc=rec.nproc if rec.gpus == CPU else None,
    )  # fmt: skip
    t = _validate(req, _checked_host(req))
    _wait_for_last_start(t.host, rec)
    workdir = t.host.launch_paths(req.model, req.data, rec.id)[0]
    base = replace(
        rec, state="launching", pid=None, error=None, max_steps=req.max_steps, checked=time.time()
    )
    record = _reserve(req, t, registry, base, was=rec.state)
    return _start(req, t, registry, record, workdir, start, previous=rec)


RESUME_WAIT_S = 15.0
"""How long `launch --resume` waits for the processes of the run's last start to end."""


def _wait_for_last_start(host: Host, rec: RunRecord) -> None:
    """A run writes its final state before its processes end (a checkpoint, the interpreter's
    exit): a start in the same directory before they are gone would have its status.json
    overwritten by the old supervisor's ending. Waits RESUME_WAIT_S for them, then refuses."""
    if host.kind == "slurm":  # its jobs are the scheduler's
        return
    ask = {"runs": [{"id": rec.id, "run_dir": rec.run_dir, "pid": rec.pid}]}
    deadline = time.monotonic() + RESUME_WAIT_S
    while (facts := host.call_probe("probe", ask)["runs"][rec.id]).get("proof") == ALIVE:
        if time.monotonic() > deadline:
            raise WorkFailed(
                f"run {rec.id} is {rec.state}, but the processes of its last start still run "
                f"(process group {facts.get('pid')}) after {RESUME_WAIT_S:g} s; "
                f"`vlmtui stop {rec.id}` ends them"
            )
        time.sleep(0.25)


def _plan(
    req: LaunchRequest, t: _Target, record: RunRecord, workdir: str, resume: bool
) -> LaunchPlan:
    gpus = tuple(record.gpus.split(","))
    nproc = (req.nproc or 1) if gpus == (CPU,) else len(gpus)
    run_dir = record.run_dir
    args = TrainArgs(
        recipe=req.recipe, model=record.model, data=record.data, run_dir=run_dir, gpus=gpus,
        nproc=nproc, max_steps=req.max_steps, resume=resume, strategy=req.strategy,
        recipe_files=tuple(f"{run_dir}/recipes/{name}" for name, _ in t.recipe_files),
    )  # fmt: skip
    command = train_command(t.host.python_argv(), args)
    env = {"PYTHONUNBUFFERED": "1", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    env["CUDA_VISIBLE_DEVICES"] = "" if gpus == (CPU,) else ",".join(gpus)
    token = f"{record.id}-{secrets.token_hex(4)}"
    info = {
        "id": record.id, "token": token, "recipe": record.recipe, "host": record.host,
        "gpus": record.gpus, "nproc": nproc, "model": record.model, "data": record.data,
        "max_steps": req.max_steps, "created": record.created, "command": command,
        "resume": resume,
    }  # fmt: skip
    return LaunchPlan(
        python_argv=tuple(t.host.python_argv()), workdir=workdir, model=record.model,
        data=record.data, run_dir=run_dir, run_id=record.id, command=tuple(command),
        env=tuple(env.items()), recipe_files=tuple(t.recipe_files),
        check_python=t.status is None or t.status.source != "vlmtui",
        token=token, launch_info=json.dumps(info), resume=resume,
    )  # fmt: skip


def _start(
    req: LaunchRequest,
    t: _Target,
    registry: Registry,
    record: RunRecord,
    workdir: str,
    start: float,
    previous: RunRecord | None,
) -> LaunchResult:
    """Run the start script; the row learns the pid, or why it did not start, or (the reply
    was lost) becomes `unknown` for the next reconciliation to settle — never deleted then."""
    host = t.host
    plan = _plan(req, t, record, workdir, resume=previous is not None)
    res = host.run(launch_script(plan))
    out = res.stdout
    code = out.split("@@error ", 1)[1].split()[0] if "@@error " in out else ""
    if code and not res.transport_error:
        if previous is None:
            registry.delete(record.id)  # the host refused: nothing started
        else:
            registry.add(previous, replace=True)
        raise BadInput(
            SCRIPT_ERRORS.get(code, "launch on {host} failed").format(
                host=host.name, workdir=workdir, model=plan.model, data=plan.data,
                python=host.config.python, run_dir=plan.run_dir,
            )
        )  # fmt: skip
    if res.transport_error or "@@ok " not in out:
        why = res.transport_error or (out + res.stderr).strip()[-300:] or "no reply"
        registry.update(record.id, state="unknown", error=f"start not confirmed: {why}")
        raise WorkFailed(
            f"host {host.name} did not confirm the start of run {record.id} ({why}); "
            "it stays in the registry as `unknown` until `vlmtui runs` can settle it"
        )
    pid_text, _, abs_dir = out.split("@@ok ", 1)[1].strip().partition(" ")
    pid = int(pid_text) or None  # 0: started before, supervisor.json not written yet
    abs_dir = abs_dir.strip() or plan.run_dir
    # The run has started: a registry held by another process must not fail the launch
    # (the next reconciliation learns the pid from supervisor.json).
    registry.note(
        record.id, patient=True, pid=pid, run_dir=abs_dir, state="pending",
        command=json.dumps(plan.command),
    )  # fmt: skip
    return LaunchResult(
        run_id=record.id,
        host=host.name,
        gpu=record.gpus,
        run_dir=abs_dir,
        pid=pid or 0,
        elapsed_s=time.perf_counter() - start,
        command=plan.command,
    )
