"""`vlmtui launch --host CLUSTER`: write the batch script(s) into the run dir and sbatch them.

A multi-stage recipe (r3) becomes one job per stage, each after the previous one
(`--dependency=afterok:<job>`), so Slurm can place the stages on different nodes and a
failed stage cancels the rest. The registry row keeps the job ids; Slurm picks the GPUs, so
the row reserves none (`gpus` reads `2gpu`, or `4gpux2` for two nodes).
"""

from __future__ import annotations

import json
import sqlite3
import time
from typing import TYPE_CHECKING, Any

from vlmtui.core.errors import BadInput, WorkFailed
from vlmtui.core.fleet.hosts import HostUnreachable
from vlmtui.core.fleet.registry import Registry, RunRecord
from vlmtui.core.fleet.shell import HomePath
from vlmtui.core.fleet.slurm import JobSpec, batch_script, check_value, sbatch_argv
from vlmtui.core.fleet.slurmhost import SlurmHost
from vlmtui.core.recipes.recipe import check_count

if TYPE_CHECKING:
    from vlmtui.core.fleet.launchreq import LaunchRequest, LaunchResult

SUBMIT_ERRORS = {
    "workdir": "cannot enter the working directory {workdir!r} on {host}",
    "model": "model path {model!r} does not exist on {host}",
    "data": "data path {data!r} does not exist on {host}",
    "exists": "run directory {run_dir!r} already exists on {host}",
    "rundir": "cannot create the run directory {run_dir!r} on {host}: {detail}",
}


def check_request(req: LaunchRequest) -> tuple[int, int]:
    """(GPUs per node, nodes) of a cluster launch; BadInput for what a cluster refuses."""
    if req.gpu not in ("auto", ""):
        raise BadInput("--gpu: Slurm picks the GPUs on a cluster; use --gpus N")
    if req.nproc is not None:
        raise BadInput("--nproc: a cluster run uses one process per GPU (--gpus N)")
    gpus = 1 if req.gpus is None else req.gpus
    nodes = 1 if req.nodes is None else req.nodes
    check_count("--gpus", gpus)
    check_count("--nodes", nodes)
    if req.time is not None:
        check_value("time", req.time)
    if req.partition is not None:
        check_value("partition", req.partition)
    return gpus, nodes


def _train_argv(req: LaunchRequest, model: str, data: str, run_dir: str) -> list[str]:
    argv = ["train", "--recipe", req.recipe, "--model", HomePath(model), "--data", HomePath(data)]
    argv += ["--output", HomePath(run_dir)]
    if req.max_steps is not None:
        argv += ["--max-steps", str(req.max_steps)]
    return argv


def _specs(
    req: LaunchRequest, host: SlurmHost, run_id: str, paths: tuple[str, str, str, str],
    stages: int, recipe_files: list[tuple[str, str]],
) -> list[JobSpec]:  # fmt: skip
    workdir, model, data, run_dir = paths
    gpus, nodes = check_request(req)
    argv = _train_argv(req, model, data, run_dir)
    for name, _ in recipe_files:
        argv += ["--recipes", HomePath(f"{run_dir}/recipes/{name}")]
    common = dict(
        run_id=run_id, run_dir=run_dir, workdir=workdir, train_argv=tuple(argv),
        python=host.config.python, gpus=gpus, nodes=nodes, stages=stages, requeue=req.requeue,
        env=host.config.env,
    )  # fmt: skip
    if stages == 1:
        return [JobSpec(**common)]  # type: ignore[arg-type]
    return [JobSpec(**common, stage=i) for i in range(1, stages + 1)]  # type: ignore[arg-type]


def _register(
    req: LaunchRequest, host: SlurmHost, registry: Registry, label: str, nproc: int
) -> tuple[str, tuple[str, str, str, str]]:
    """Insert the `launching` row under a fresh run id; (run id, launch paths)."""
    from vlmtui.core.fleet.launchreq import new_run_id

    for _attempt in range(5):
        run_id = new_run_id()
        paths = host.launch_paths(req.model, req.data, run_id)
        record = RunRecord(
            id=run_id, recipe=req.recipe, host=host.name, gpus=label, run_dir=paths[3],
            created=time.time(), state="launching", model=paths[1], data=paths[2],
            max_steps=req.max_steps, nproc=nproc,
        )  # fmt: skip
        try:
            registry.add(record)
            return run_id, paths
        except sqlite3.IntegrityError:
            continue  # two launches in the same second drew the same id
    raise WorkFailed("could not allocate a run id")


def _submit_error(out: dict[str, Any], host: SlurmHost, paths: tuple[str, ...]) -> Exception:
    template = SUBMIT_ERRORS.get(out["error"])
    if template is None:
        return WorkFailed(f"sbatch on {host.name} failed: {out.get('detail')}")
    return BadInput(
        template.format(
            host=host.name, workdir=paths[0], model=paths[1], data=paths[2], run_dir=paths[3],
            detail=out.get("detail"),
        )
    )  # fmt: skip


def submit_run(req: LaunchRequest, host: SlurmHost, registry: Registry) -> LaunchResult:
    """Register the run, write its job scripts into the run dir, sbatch them; the job ids."""
    from vlmtui.core.fleet.launchreq import LaunchResult, recipe_files_for
    from vlmtui.core.recipes.catalog import get_recipe, stage_recipes

    start = time.perf_counter()
    gpus, nodes = check_request(req)
    stages = len(stage_recipes(get_recipe(req.recipe)))
    recipe_files = recipe_files_for(host, req.recipe)
    label = f"{gpus}gpu" + (f"x{nodes}" if nodes > 1 else "")
    run_id, paths = _register(req, host, registry, label, gpus * nodes)
    s = host.settings
    jobs: list[dict[str, Any]] = [
        {
            "name": spec.script_name,
            "script": batch_script(spec, s, req.time),
            "argv": sbatch_argv("", s, partition=req.partition)[:-1],
            "after_previous": i > 0,
        }
        for i, spec in enumerate(_specs(req, host, run_id, paths, stages, recipe_files))
    ]
    payload = {
        "run_dir": paths[3], "workdir": paths[0], "model": paths[1], "data": paths[2],
        "run_id": run_id, "jobs": jobs, "recipe_files": recipe_files,
    }  # fmt: skip
    try:
        out = host.slurm_call("submit", payload)
    except HostUnreachable as exc:
        registry.delete(run_id)
        raise WorkFailed(f"host {host.name} is unreachable: {exc.why}") from None
    if out.get("error"):  # the login node cancelled any stage it had submitted
        registry.delete(run_id)
        raise _submit_error(out, host, paths)
    ids = ",".join(out["jobs"])
    run_dir = out.get("dir") or paths[3]
    command = json.dumps([j["argv"] for j in jobs])
    registry.update(run_id, job=ids, run_dir=run_dir, state="queued", command=command)
    return LaunchResult(
        run_id=run_id, host=host.name, gpu=label, run_dir=run_dir, pid=None,
        elapsed_s=time.perf_counter() - start, command=tuple(jobs[0]["argv"]), job=ids,
    )  # fmt: skip
