"""The command lines and the shell script that start a run on its host (see `launch.py`).

The script, run in one round trip, checks the working directory, the model and data paths
and the host's Python, refuses an existing run directory, writes a `pending` status.json,
and starts the supervisor with `nohup` in the background, printing its pid. Every value in
it is quoted (`sshcmd.join` / `quote_path`), so a path with shell metacharacters stays data.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from vlmtui.core.fleet.gpus import CPU
from vlmtui.core.fleet.shell import HomePath, join, quote_path

if TYPE_CHECKING:
    from vlmtui.core.fleet.hosts import Host
    from vlmtui.core.fleet.launch import LaunchRequest

REMOTE_RUNS_DIR = "~/.local/share/vlmtui/runs"
"""Run directories on a remote host without `runs_dir` or `workdir` in hosts.toml."""


def run_paths(host: Host, req: LaunchRequest, run_id: str) -> tuple[str, str, str, str]:
    """(workdir, model, data, run_dir) as the host should see them."""
    c = host.config
    if host.is_local:
        workdir = os.path.expanduser(c.workdir) if c.workdir else os.getcwd()

        def absolute(p: str) -> str:
            return os.path.normpath(os.path.join(workdir, os.path.expanduser(p)))

        from vlmtui.core.paths import runs_dir

        base = absolute(c.runs_dir) if c.runs_dir else str(runs_dir())
        return workdir, absolute(req.model), absolute(req.data), os.path.join(base, run_id)
    workdir = c.workdir or "~"
    base = c.runs_dir or (f"{workdir.rstrip('/')}/runs" if c.workdir else REMOTE_RUNS_DIR)
    if not base.startswith(("/", "~")):
        base = f"{workdir.rstrip('/')}/{base}"
    return workdir, req.model, req.data, f"{base.rstrip('/')}/{run_id}"


def train_command(
    host: Host, req: LaunchRequest, run_dir: str, gpus: tuple[str, ...], nproc: int
) -> list[str]:
    """The command line the supervisor runs: `vlmtui train`, under torchrun when nproc > 1."""
    py = host.python_argv()
    args = ["train", "--recipe", req.recipe, "--model", HomePath(req.model)]
    args += ["--data", HomePath(req.data), "--output", HomePath(run_dir)]
    args += ["--strategy", req.strategy]
    if gpus == (CPU,):
        args += ["--gpu", CPU]
    elif len(gpus) == 1:
        args += ["--gpu", gpus[0]]
    if req.max_steps is not None:
        args += ["--max-steps", str(req.max_steps)]
    if nproc > 1:
        dist = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)]
        return [*py, *dist, "-m", "vlmtui", *args]
    return [*py, "-m", "vlmtui", *args]


def recipe_files_for(host: Host, recipe_name: str) -> list[tuple[str, str]]:
    """(file name, TOML text) of the user recipe files a remote host needs for this recipe."""
    from vlmtui.core.recipes.recipe import get_recipe, user_recipe_dir

    recipe = get_recipe(recipe_name)
    if recipe.source == "built-in" or host.is_local:
        return []
    files = sorted(user_recipe_dir().glob("*.toml"))
    return [(f"{i:02d}-{f.name}", f.read_text(encoding="utf-8")) for i, f in enumerate(files)]


def launch_script(
    host: Host,
    *,
    workdir: str,
    model: str,
    data: str,
    run_dir: str,
    run_id: str,
    command: list[str],
    env: dict[str, str],
    recipe_files: Sequence[tuple[str, str]] = (),
    check_python: bool = True,
) -> str:
    """The sh script that checks the paths, writes the pending status and starts the run.

    `check_python=False` skips the import check of vlmtui (the GPU query just ran it there)."""
    rd = quote_path(run_dir)
    wd = quote_path(workdir)
    py = join(host.python_argv())
    find = "import importlib.util as u,sys;sys.exit(0 if u.find_spec('vlmtui') else 5)"
    pending = json.dumps({"state": "pending", "run_id": run_id, "updated": time.time()})
    lines = [
        f"mkdir -p -- {wd} 2>/dev/null; cd -- {wd} || {{ echo '@@error workdir'; exit 3; }}",
        f"[ -e {quote_path(model)} ] || {{ echo '@@error model'; exit 3; }}",
        f"[ -e {quote_path(data)} ] || {{ echo '@@error data'; exit 3; }}",
        f"[ ! -e {rd} ] || {{ echo '@@error exists'; exit 3; }}",
        f"mkdir -p -- {rd} || {{ echo '@@error rundir'; exit 3; }}",
        f"printf '%s\\n' {join([pending])} > {rd}/.status.json.tmp",
        f"mv -f -- {rd}/.status.json.tmp {rd}/status.json",
    ]
    if check_python:
        lines.insert(
            3, f"{py} -I -c {join([find])} >/dev/null 2>&1 || {{ echo '@@error python'; exit 3; }}"
        )
    if recipe_files:
        lines.append(f"mkdir -p -- {rd}/recipes")
        for name, text in recipe_files:
            lines.append(f"printf '%s' {join([text])} > {rd}/recipes/{join([name])}")
    envs = [f"{k}={v}" for k, v in env.items()]
    sup = join(["env", *envs, *host.python_argv(), "-m", "vlmtui.core.supervise"])
    lines += [
        f"nohup {sup} {rd} -- {join(command)} > {rd}/output.log 2>&1 < /dev/null &",
        f'echo "@@ok $! $(cd -- {rd} && pwd -P)"',
    ]
    return "\n".join(lines) + "\n"


SCRIPT_ERRORS = {
    "workdir": "cannot enter the working directory {workdir!r} on {host}",
    "model": "model path {model!r} does not exist on {host}",
    "data": "data path {data!r} does not exist on {host}",
    "python": "{python!r} on {host} cannot import vlmtui (set `python` in hosts.toml)",
    "exists": "run directory {run_dir!r} already exists on {host}",
    "rundir": "cannot create the run directory {run_dir!r} on {host}",
}
