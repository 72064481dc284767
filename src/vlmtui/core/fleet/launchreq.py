"""What `vlmtui launch` is asked and what it answers, shared by every host kind's launcher
(`launch.py` for local and SSH hosts, `slurmlaunch.py` for clusters)."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

from vlmtui.core.errors import BadInput
from vlmtui.core.fleet.hosts import Host
from vlmtui.core.fleet.snapshot import CPU


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
    strategy: str = "ddp"
    """`ddp` (a whole model per process) or `fsdp` (sharded; needs 2 or more processes)."""
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


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)


def recipe_files_for(host: Host, recipe_name: str) -> list[tuple[str, str]]:
    """(file name, TOML text) of the user recipe files the host needs for this recipe."""
    from vlmtui.core.recipes.catalog import get_recipe, usable_user_files

    recipe = get_recipe(recipe_name)
    if recipe.source == "built-in" or not host.needs_recipe_files:
        return []
    files = usable_user_files()
    return [(f"{i:02d}-{f.name}", f.read_text(encoding="utf-8")) for i, f in enumerate(files)]


def check_launch_strategy(req: LaunchRequest, spec: str | tuple[int, ...]) -> None:
    """fsdp shards over the run's processes: refuse it before any GPU is reserved when the
    run would have only one."""
    from vlmtui.core.training.sharding import check_strategy

    if check_strategy(req.strategy) != "fsdp":
        return
    procs = len(spec) if isinstance(spec, tuple) else (req.nproc or 1) if spec == CPU else 1
    if procs < 2:
        raise BadInput(
            "--strategy fsdp: shards over 2 or more processes; "
            "give --gpu with several GPUs (0,1) or --gpu cpu --nproc 2"
        )
