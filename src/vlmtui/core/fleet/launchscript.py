"""The command lines and the shell script that start a run on its host (see `launch.py`).

The script, run in one round trip, checks the working directory, the model and data paths
and the host's Python, refuses an existing run directory, writes a `pending` status.json and
launch.json (the registry row, for a rebuild), and starts the supervisor with `nohup` in the
background, with VLMTUI_RUN_ID in its environment, printing its pid. It is idempotent per
launch token: run again (the reply was lost), it reports the run it already started instead
of starting another. With `resume` it reuses the run's own directory (its status.json must
name the run). Every value in it is quoted (`sshcmd.join` / `quote_path`), so a path with
shell metacharacters stays data.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass

from vlmtui.core.fleet.onhost.hostprobe import RUN_ID_ENV
from vlmtui.core.fleet.shell import HomePath, join, quote_path
from vlmtui.core.fleet.snapshot import CPU
from vlmtui.core.rundir import EXIT_JSON, LAUNCH_JSON, OUTPUT_LOG, STATUS, SUPERVISOR_JSON


@dataclass(frozen=True)
class TrainArgs:
    """What `vlmtui train` is told on the host."""

    recipe: str
    model: str
    data: str
    run_dir: str
    gpus: tuple[str, ...]
    """GPU indices as strings, or (`cpu`,)."""
    nproc: int = 1
    """Processes; torchrun when > 1."""
    max_steps: int | None = None
    strategy: str = "ddp"
    """`ddp` (each process a whole model) or `fsdp` (sharded over the processes)."""
    recipe_files: tuple[str, ...] = ()
    """Recipe files copied into the run directory, passed as `--recipes`."""
    resume: bool = False
    """Continue from the run directory's last checkpoint (`train --resume`)."""


def train_command(python_argv: Sequence[str], args: TrainArgs) -> list[str]:
    """The command line the supervisor runs: `vlmtui train`, under torchrun when nproc > 1."""
    py = list(python_argv)
    argv = ["train", "--recipe", args.recipe, "--model", HomePath(args.model)]
    argv += ["--data", HomePath(args.data), "--output", HomePath(args.run_dir)]
    argv += ["--strategy", args.strategy]
    if args.gpus == (CPU,):
        argv += ["--gpu", CPU]
    elif len(args.gpus) == 1:
        argv += ["--gpu", args.gpus[0]]
    if args.max_steps is not None:
        argv += ["--max-steps", str(args.max_steps)]
    if args.resume:
        argv += ["--resume"]
    for path in args.recipe_files:
        argv += ["--recipes", HomePath(path)]
    if args.nproc > 1:
        dist = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(args.nproc)]
        return [*py, *dist, "-m", "vlmtui", *argv]
    return [*py, "-m", "vlmtui", *argv]


@dataclass(frozen=True)
class LaunchPlan:
    """Everything the start script needs, as the host should see it."""

    python_argv: tuple[str, ...]
    workdir: str
    model: str
    data: str
    run_dir: str
    run_id: str
    command: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    recipe_files: tuple[tuple[str, str], ...] = ()
    """(file name, TOML text) written into RUN_DIR/recipes/."""
    check_python: bool = True
    """False skips the import check of vlmtui (the GPU query just ran it there)."""
    token: str = ""
    """Names this start: a second run of the script with it reports the first start."""
    launch_info: str = "{}"
    """JSON written to RUN_DIR/launch.json (it must hold `"token": TOKEN`)."""
    resume: bool = False
    """Start in the run's existing directory instead of a fresh one."""


def _already_started(plan: LaunchPlan, rd: str) -> list[str]:
    """Lines that report the start this token made, if the script ran before, and end it."""
    token = join([json.dumps({"token": plan.token})[1:-1]])
    pid = f"sed -n 's/^ *\"pid\": \\([0-9][0-9]*\\).*/\\1/p' {rd}/{SUPERVISOR_JSON}"
    return [
        f"if grep -qF -- {token} {rd}/{LAUNCH_JSON} 2>/dev/null; then",
        f"  pid=$({pid} 2>/dev/null | head -n 1)",
        f'  echo "@@ok ${{pid:-0}} $(cd -- {rd} && pwd -P)"; exit 0',
        "fi",
    ]


def _claim_dir(plan: LaunchPlan, rd: str) -> list[str]:
    """A fresh run directory, or (resume) the run's own, cleared of the last start's files."""
    if not plan.resume:
        return [
            f"[ ! -e {rd} ] || {{ echo '@@error exists'; exit 3; }}",
            f"mkdir -p -- {rd} || {{ echo '@@error rundir'; exit 3; }}",
        ]
    mine = join([json.dumps({"run_id": plan.run_id})[1:-1]])
    return [
        f"grep -qF -- {mine} {rd}/{STATUS} 2>/dev/null || {{ echo '@@error notrun'; exit 3; }}",
        f"rm -f -- {rd}/{EXIT_JSON} {rd}/{SUPERVISOR_JSON}",
    ]


def _write(plan: LaunchPlan, rd: str, name: str, text: str) -> list[str]:
    """Lines that write `text` to RUN_DIR/name through a rename. A write that
    fails (a full disk) ends the script with `@@error write` before anything starts, and a
    fresh run directory is removed again: no run that cannot even record its start."""
    tmp = f"{rd}/.{name.replace('/', '.')}.tmp"
    undo = f"rm -f -- {tmp}" if plan.resume else f"rm -rf -- {rd}"
    return [
        f"printf '%s' {join([text])} > {tmp} || {{ {undo}; echo '@@error write'; exit 3; }}",
        f"mv -f -- {tmp} {rd}/{name}",
    ]


def launch_script(plan: LaunchPlan) -> str:
    """The sh script that checks the paths, writes the pending status and starts the run."""
    rd = quote_path(plan.run_dir)
    wd = quote_path(plan.workdir)
    model, data, run_id = plan.model, plan.data, plan.run_id
    py = join(plan.python_argv)
    find = "import importlib.util as u,sys;sys.exit(0 if u.find_spec('vlmtui') else 5)"
    pending = json.dumps({"state": "pending", "run_id": run_id, "updated": time.time()})
    lines = [
        f"mkdir -p -- {wd} 2>/dev/null; cd -- {wd} || {{ echo '@@error workdir'; exit 3; }}",
        f"[ -e {quote_path(model)} ] || {{ echo '@@error model'; exit 3; }}",
        f"[ -e {quote_path(data)} ] || {{ echo '@@error data'; exit 3; }}",
        *_already_started(plan, rd),
        *_claim_dir(plan, rd),
        *_write(plan, rd, STATUS, pending + "\n"),
    ]
    if plan.check_python:
        lines.insert(
            3, f"{py} -I -c {join([find])} >/dev/null 2>&1 || {{ echo '@@error python'; exit 3; }}"
        )
    if plan.recipe_files:
        lines.append(f"mkdir -p -- {rd}/recipes")
        for name, text in plan.recipe_files:
            lines += _write(plan, rd, f"recipes/{join([name])}", text)
    envs = [f"{k}={v}" for k, v in (*plan.env, (RUN_ID_ENV, run_id))]
    sup = join(["env", *envs, *plan.python_argv, "-m", "vlmtui.core.supervise"])
    lines += [
        *_write(plan, rd, LAUNCH_JSON, plan.launch_info + "\n"),
        f"nohup {sup} {rd} -- {join(plan.command)} {'>>' if plan.resume else '>'} {rd}/{OUTPUT_LOG}"
        " 2>&1 < /dev/null &",
        f'echo "@@ok $! $(cd -- {rd} && pwd -P)"',
    ]
    return "\n".join(lines) + "\n"


SCRIPT_ERRORS = {
    "workdir": "cannot enter the working directory {workdir!r} on {host}",
    "model": "model path {model!r} does not exist on {host}",
    "data": "data path {data!r} does not exist on {host}",
    "python": "{python!r} on {host} cannot import vlmtui (set `python` in hosts.toml)",
    "exists": "run directory {run_dir!r} already exists on {host}",
    "notrun": "{run_dir!r} on {host} does not hold this run (its status.json names another)",
    "rundir": "cannot create the run directory {run_dir!r} on {host}",
    "write": "cannot write into the run directory {run_dir!r} on {host} (is its disk full?)",
}
