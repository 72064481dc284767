"""Start detached training runs on a host (local or SSH), stop them, read their logs.

`launch` validates everything first — recipe, host, the GPUs (exist, free, not reserved by
another vlmtui run, unless `force`), then, in the one round trip that starts the run, the
model and data paths, the host's Python and a fresh run directory — writes a `pending`
status.json and starts `vlmtui train` under the supervisor (`supervise.py`) with `nohup`, in
its own session and process group, output to RUN_DIR/output.log. It returns the run id as
soon as the process exists. The run does not depend on the launching process or the SSH
connection: both may die.

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
from collections.abc import Callable
from dataclasses import dataclass, replace

from vlmtui.core.errors import BadInput, WorkFailed
from vlmtui.core.fleet.hosts import Host, get_host
from vlmtui.core.fleet.launchscript import (
    SCRIPT_ERRORS,
    LaunchPlan,
    TrainArgs,
    launch_script,
    train_command,
)
from vlmtui.core.fleet.registry import Registry, RunRecord
from vlmtui.core.fleet.shell import check_name, check_path
from vlmtui.core.fleet.snapshot import CPU, Gpu, HostGpus


@dataclass(frozen=True)
class LaunchRequest:
    """What to run where (the `vlmtui launch` options)."""

    recipe: str
    model: str
    """Checkpoint directory on the host (relative: to the host's workdir; local: to cwd)."""
    data: str
    """Dataset path on the host (same rule)."""
    host: str = "local"
    gpu: str = "auto"
    """`auto` (first free GPU, else the CPU), `cpu`, an index `0`, or several `0,1`."""
    max_steps: int | None = None
    force: bool = False
    """Use the named GPUs even when they are busy or reserved."""
    nproc: int | None = None
    """Processes of a CPU run (torchrun when > 1); GPU runs use one per GPU."""
    gpus: int | None = None
    """Cluster hosts: GPUs per node to ask Slurm for (default 1)."""
    nodes: int | None = None
    """Cluster hosts: nodes (default 1; several run `srun` torchrun)."""
    time: str | None = None
    """Cluster hosts: the job's time limit (else the host's `time`)."""
    partition: str | None = None
    """Cluster hosts: partition (else the host's `partition`)."""
    requeue: bool = False
    """Cluster hosts: let Slurm requeue the job; it resumes from its last checkpoint."""


@dataclass(frozen=True)
class LaunchResult:
    run_id: str
    host: str
    gpu: str
    """The device(s) the run got: `0`, `0,1` or `cpu`."""
    run_dir: str
    """Absolute run directory on the host."""
    pid: int | None
    """Supervisor pid = the run's process group id on its host (None on a cluster)."""
    elapsed_s: float
    """From the call to the run id, in seconds."""
    command: tuple[str, ...]
    """The training command line the supervisor runs (a cluster: the sbatch command)."""
    job: str | None = None
    """Slurm job ids, one per stage, of a run submitted to a cluster."""


def parse_gpu_spec(spec: str) -> str | tuple[int, ...]:
    """`auto`, `cpu`, or a tuple of distinct GPU indices; BadInput otherwise."""
    spec = spec.strip()
    if spec in ("auto", CPU):
        return spec
    parts = spec.split(",")
    if not all(p.strip().isdigit() for p in parts):
        raise BadInput(f"--gpu: expected 'auto', 'cpu', an index or a list like 0,1; got {spec!r}")
    indices = tuple(int(p) for p in parts)
    if len(set(indices)) != len(indices):
        raise BadInput(f"--gpu: {spec!r} names a GPU twice")
    return indices


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)


def _describe_busy(g: Gpu) -> str:
    bits = []
    if g.processes:
        bits.append(f"{len(g.processes)} compute process(es)")
    if g.mem_used_mib is not None:
        bits.append(f"{g.mem_used_mib:.0f} MiB used")
    if g.util_pct is not None:
        bits.append(f"{g.util_pct:.0f}% busy")
    return ", ".join(bits) or "busy"


def _chooser(
    spec: str | tuple[int, ...], status: HostGpus, host: str, force: bool
) -> Callable[[list[RunRecord]], tuple[str, ...]]:
    """Picks the GPUs against the host's active runs (called inside the registry txn)."""
    by_index = {g.index: g for g in status.gpus}

    def choose(active: list[RunRecord]) -> tuple[str, ...]:
        taken = {g: r.id for r in active for g in r.gpu_indices}
        if spec == "auto":
            pick = status.first_free(taken)
            if pick is not None:
                return (str(pick.index),)
            raise BadInput(
                f"no free GPU on {host}: "
                + "; ".join(
                    f"GPU {g.index}: "
                    + (
                        f"reserved by run {taken[g.index]}"
                        if g.index in taken
                        else _describe_busy(g)
                    )
                    for g in status.gpus
                )
                + " (use --gpu cpu, or --gpu N --force)"
            )
        assert isinstance(spec, tuple)
        for i in spec:
            if force:
                continue
            if i in taken:
                raise BadInput(
                    f"GPU {i} on {host} is reserved by run {taken[i]} (--force to share)"
                )
            if not by_index[i].free:
                raise BadInput(
                    f"GPU {i} on {host} is busy ({_describe_busy(by_index[i])}); "
                    "use --gpu auto, or --force"
                )
        return tuple(str(i) for i in spec)

    return choose


def _reserving(
    base: RunRecord, choose: Callable[[list[RunRecord]], tuple[str, ...]]
) -> Callable[[list[RunRecord]], RunRecord]:
    def check(active: list[RunRecord]) -> RunRecord:
        return replace(base, gpus=",".join(choose(active)))

    return check


def recipe_files_for(host: Host, recipe_name: str) -> list[tuple[str, str]]:
    """(file name, TOML text) of the user recipe files the host needs for this recipe."""
    from vlmtui.core.recipes.recipe import get_recipe, user_recipe_dir

    recipe = get_recipe(recipe_name)
    if recipe.source == "built-in" or not host.needs_recipe_files:
        return []
    files = sorted(user_recipe_dir().glob("*.toml"))
    return [(f"{i:02d}-{f.name}", f.read_text(encoding="utf-8")) for i, f in enumerate(files)]


def launch(req: LaunchRequest, registry: Registry | None = None) -> LaunchResult:
    """Validate, reserve the GPUs, start the run detached; returns once its process exists."""
    start = time.perf_counter()
    registry = registry or Registry()
    check_name("recipe", req.recipe)
    check_path("model", req.model)
    check_path("data", req.data)
    if req.max_steps is not None and req.max_steps < 1:
        raise BadInput(f"--max-steps: must be at least 1, got {req.max_steps}")
    if req.nproc is not None and req.nproc < 1:
        raise BadInput(f"--nproc: must be at least 1, got {req.nproc}")
    from vlmtui.core.recipes.recipe import get_recipe

    get_recipe(req.recipe)
    host = get_host(req.host)
    if host.kind == "slurm":
        from vlmtui.core.fleet.slurmhost import require_slurm
        from vlmtui.core.fleet.slurmlaunch import submit_run

        return submit_run(req, require_slurm(host), registry)
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
    recipe_files = recipe_files_for(host, req.recipe)

    for _attempt in range(5):
        run_id = new_run_id()
        workdir, model, data, run_dir = host.launch_paths(req.model, req.data, run_id)
        base = RunRecord(
            id=run_id, recipe=req.recipe, host=host.name, gpus=CPU, run_dir=run_dir,
            created=time.time(), state="launching", model=model, data=data,
            max_steps=req.max_steps,
        )  # fmt: skip
        check = None
        if spec != CPU:
            assert status is not None
            check = _reserving(base, _chooser(spec, status, host.name, req.force))

        try:
            record = registry.add(base, check)
            break
        except sqlite3.IntegrityError:
            continue  # two launches in the same second drew the same id
    else:
        raise WorkFailed("could not allocate a run id")
    gpus = tuple(record.gpus.split(","))
    nproc = (req.nproc or 1) if gpus == (CPU,) else len(gpus)
    args = TrainArgs(
        recipe=req.recipe, model=model, data=data, run_dir=run_dir, gpus=gpus, nproc=nproc,
        max_steps=req.max_steps,
        recipe_files=tuple(f"{run_dir}/recipes/{name}" for name, _ in recipe_files),
    )  # fmt: skip
    command = train_command(host.python_argv(), args)
    env = {"PYTHONUNBUFFERED": "1", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    env["CUDA_VISIBLE_DEVICES"] = "" if gpus == (CPU,) else ",".join(gpus)
    plan = LaunchPlan(
        python_argv=tuple(host.python_argv()), workdir=workdir, model=model, data=data,
        run_dir=run_dir, run_id=run_id, command=tuple(command), env=tuple(env.items()),
        recipe_files=tuple(recipe_files),
        check_python=status is None or status.source != "vlmtui",
    )  # fmt: skip
    res = host.run(launch_script(plan))
    out = res.stdout
    if res.transport_error or "@@ok " not in out:
        registry.delete(run_id)
        if res.transport_error:
            raise WorkFailed(f"host {host.name} is unreachable: {res.transport_error}")
        code = out.split("@@error ", 1)[1].split()[0] if "@@error " in out else ""
        template = SCRIPT_ERRORS.get(code)
        if template is None:
            raise WorkFailed(f"launch on {host.name} failed: {(out + res.stderr).strip()[-300:]}")
        raise BadInput(
            template.format(
                host=host.name, workdir=workdir, model=model, data=data,
                python=host.config.python, run_dir=run_dir,
            )
        )  # fmt: skip
    pid_text, _, abs_dir = out.split("@@ok ", 1)[1].strip().partition(" ")
    pid = int(pid_text)
    abs_dir = abs_dir.strip() or run_dir
    registry.update(run_id, pid=pid, run_dir=abs_dir, state="pending", command=json.dumps(command))
    return LaunchResult(
        run_id=run_id,
        host=host.name,
        gpu=record.gpus,
        run_dir=abs_dir,
        pid=pid,
        elapsed_s=time.perf_counter() - start,
        command=tuple(command),
    )
