"""`vlmtui launch`, `runs`, `logs` and `stop`: detached runs on local, SSH and Slurm hosts."""

from __future__ import annotations

import argparse
import json
import sys
import time


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("launch", help="start a detached training run; prints its id")
    p.add_argument("--recipe", help="recipe name (see `vlmtui recipes`)")
    p.add_argument("--model", help="checkpoint dir on the host")
    p.add_argument("--data", help="dataset path on the host")
    p.add_argument("--host", default="local", help="host name (see `vlmtui hosts`)")
    p.add_argument("--gpu", default=None, help="auto (default), cpu, N, or N,M,... (torchrun)")
    p.add_argument(
        "--resume",
        metavar="RUN",
        help="start a stopped or failed run again in its own run dir (train --resume)",
    )
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--nproc", type=int, default=None, help="processes for a CPU run (torchrun)")
    p.add_argument(
        "--strategy", default="ddp", help="ddp (default) or fsdp: shard over the run's processes"
    )
    p.add_argument("--force", action="store_true", help="use the GPU even if busy or reserved")
    p.add_argument("--gpus", type=int, default=None, help="Slurm host: GPUs per node (1)")
    p.add_argument("--nodes", type=int, default=None, help="Slurm host: nodes (1)")
    p.add_argument("--time", default=None, help="Slurm host: time limit, e.g. 04:00:00")
    p.add_argument("--partition", default=None, help="Slurm host: partition")
    p.add_argument("--requeue", action="store_true", help="Slurm host: requeue allowed (resumes)")
    p.add_argument("--json", action="store_true", help="print JSON instead of the bare id")
    p.set_defaults(func=run_launch)

    p = sub.add_parser("runs", help="the run registry, reconciled with the hosts")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument(
        "--rebuild", action="store_true", help="first re-add every run dir found on the hosts"
    )
    p.set_defaults(func=run_runs)

    p = sub.add_parser("logs", help="a run's output (only new bytes with --follow)")
    p.add_argument("run", help="run id (or a unique prefix)")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing until it ends")
    p.set_defaults(func=run_logs)

    p = sub.add_parser("stop", help="SIGTERM the run's process group, SIGKILL after a grace")
    p.add_argument("run", help="run id (or a unique prefix)")
    p.add_argument("--grace", type=float, default=30.0, help="seconds before SIGKILL (30)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run_stop)


def _warn_hosts() -> None:
    from vlmtui.cli.hosts_cmd import warn_hosts_problem
    from vlmtui.core.fleet.hosts import hosts_problem

    warn_hosts_problem(hosts_problem())


def run_launch(args: argparse.Namespace) -> int:
    from vlmtui.core.errors import BadInput
    from vlmtui.core.fleet.launch import LaunchRequest, launch, resume_run

    _warn_hosts()
    if args.resume is not None:
        given = [f"--{n}" for n in ("recipe", "model", "data", "nproc") if getattr(args, n)]
        if given:
            raise BadInput(f"--resume: {given[0]} comes from the run; leave it out")
        result = resume_run(args.resume, args.gpu, args.max_steps, args.force)
    else:
        missing = [f"--{n}" for n in ("recipe", "model", "data") if not getattr(args, n)]
        if missing:
            raise BadInput(f"launch: {', '.join(missing)} required (or --resume RUN)")
        result = launch(
            LaunchRequest(
                recipe=args.recipe,
                model=args.model,
                data=args.data,
                host=args.host,
                gpu="auto" if args.gpu is None else args.gpu,
                max_steps=args.max_steps,
                force=args.force,
                nproc=args.nproc,
                strategy=args.strategy,
                gpus=args.gpus,
                nodes=args.nodes,
                time=args.time,
                partition=args.partition,
                requeue=args.requeue,
            )
        )
    if args.json:
        out = {
            "id": result.run_id,
            "host": result.host,
            "gpu": result.gpu,
            "run_dir": result.run_dir,
            "pid": result.pid,
            "elapsed_s": round(result.elapsed_s, 4),
            "command": list(result.command),
            "job": result.job,
        }
        print(json.dumps(out, indent=1))
    else:
        print(result.run_id)
    return 0


def _elapsed(view: object, now: float) -> str:
    """Wall time since launch; a run that ended keeps the time it took."""
    from vlmtui.core.textfmt import clock

    created = getattr(view, "created", now)
    ended = getattr(view, "ended", None)
    return clock(max(0.0, (ended if ended is not None else now) - created))


def run_runs(args: argparse.Namespace) -> int:
    from rich.console import Console

    from vlmtui.cli.tables import ident_column, number_column, plain_table
    from vlmtui.core.fleet.registry import Registry
    from vlmtui.core.fleet.runs import list_runs

    _warn_hosts()
    registry = Registry()
    if args.rebuild:
        from vlmtui.core.fleet.rebuild import rebuild

        print(rebuild(registry).summary(), file=sys.stderr)
    views = list_runs(registry)
    if args.json:
        print(json.dumps([v.to_json() for v in views], indent=1))
        return 0
    if not views:
        print("no runs yet: start one with `vlmtui launch --recipe R --model M --data D`")
        return 0
    now = time.time()
    where = [f"{v.host}:{v.gpu}" + (f" job {v.job}" if v.job else "") for v in views]
    table = plain_table()
    ident_column(table, "run", [v.id for v in views])
    ident_column(table, "recipe", [v.recipe for v in views])
    ident_column(table, "where", where)
    ident_column(table, "state", [v.state for v in views])
    for col in ("step", "loss", "time"):
        number_column(table, col)
    for v, w in zip(views, where, strict=True):
        steps = f"{v.step if v.step is not None else '-'}/{v.max_steps or '-'}"
        loss = f"{v.loss:.4f}" if v.loss is not None else "-"
        table.add_row(v.id, v.recipe, w, v.state, steps, loss, _elapsed(v, now))
    console = Console()
    console.print(table)
    # Errors go under the table, whole: a column for them would squeeze the ids.
    for v in views:
        if v.error and v.state in ("failed", "stopped", "unknown", "queued"):
            console.print(f"{v.id} {v.state}: {v.error}", highlight=False)
    return 0


def run_logs(args: argparse.Namespace) -> int:
    from vlmtui.core.fleet.logs import follow_log

    def write(chunk: bytes) -> None:
        sys.stdout.buffer.write(chunk)
        sys.stdout.buffer.flush()

    follow_log(args.run, write, follow=args.follow)
    return 0


def run_stop(args: argparse.Namespace) -> int:
    from vlmtui.core.errors import BadInput
    from vlmtui.core.fleet.runs import stop_run

    if not 0 <= args.grace < float("inf"):  # also refuses nan
        raise BadInput(f"--grace: expected 0 or more seconds, got {args.grace}")
    result = stop_run(args.run, grace_s=args.grace)
    if args.json:
        print(json.dumps(result.__dict__, indent=1))
    elif result.was_running:
        how = " (SIGKILL after the grace period)" if result.killed else ""
        print(f"{result.run_id}: {result.state}{how}")
    else:
        why = f": {result.error}" if result.error else ""
        print(f"{result.run_id}: was not running; it is {result.state}{why}")
    return 0
