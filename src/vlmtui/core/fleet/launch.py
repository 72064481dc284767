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
import os
import secrets
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from vlmtui.core.errors import BadInput, WorkFailed
from vlmtui.core.fleet.gpus import CPU, Gpu, HostGpus, query_host
from vlmtui.core.fleet.hosts import get_host
from vlmtui.core.fleet.launchscript import (
    SCRIPT_ERRORS,
    launch_script,
    recipe_files_for,
    run_paths,
    train_command,
)
from vlmtui.core.fleet.onhost import hostprobe
from vlmtui.core.fleet.runs import Registry, RunRecord
from vlmtui.core.fleet.shell import HomePath, check_name, check_path, quote_path


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


@dataclass(frozen=True)
class LaunchResult:
    run_id: str
    host: str
    gpu: str
    """The device(s) the run got: `0`, `0,1` or `cpu`."""
    run_dir: str
    """Absolute run directory on the host."""
    pid: int
    """Supervisor pid = the run's process group id on its host."""
    elapsed_s: float
    """From the call to the run id, in seconds."""
    command: tuple[str, ...]
    """The training command line the supervisor runs."""


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
            for g in status.gpus:
                if g.free and g.index not in taken:
                    return (str(g.index),)
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


def _check_strategy(req: LaunchRequest, spec: str | tuple[int, ...]) -> None:
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
    spec = parse_gpu_spec(req.gpu)
    status = None
    if spec != CPU:
        status = query_host(host)
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
    _check_strategy(req, spec)
    recipe_files = recipe_files_for(host, req.recipe)

    for _attempt in range(5):
        run_id = new_run_id()
        workdir, model, data, run_dir = run_paths(host, req, run_id)
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
    command = train_command(host, replace(req, model=model, data=data), run_dir, gpus, nproc)
    for name, _ in recipe_files:
        command += ["--recipes", HomePath(f"{run_dir}/recipes/{name}")]
    env = {"PYTHONUNBUFFERED": "1", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    env["CUDA_VISIBLE_DEVICES"] = "" if gpus == (CPU,) else ",".join(gpus)
    script = launch_script(
        host, workdir=workdir, model=model, data=data, run_dir=run_dir, run_id=run_id,
        command=command, env=env, recipe_files=recipe_files,
        check_python=status is None or status.source != "vlmtui",
    )  # fmt: skip
    res = host.run(script)
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


# --- stop -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StopResult:
    run_id: str
    was_running: bool
    """False when the run had already ended (its state is then unchanged)."""
    killed: bool
    """True when the grace period ran out and the group got SIGKILL."""
    state: str
    """The run's state afterwards (`stopped`, or the final state it already had)."""


def stop_run(run_id: str, grace_s: float = 30.0, registry: Registry | None = None) -> StopResult:
    """SIGTERM to the run's process group; SIGKILL after `grace_s`; the run ends `stopped`."""
    registry = registry or Registry()
    rec = registry.get(run_id)
    host = get_host(rec.host)
    if rec.pid is None:
        raise WorkFailed(f"run {rec.id} has no process yet (still launching); try again")
    if host.is_local:
        result = hostprobe.stop(rec.run_dir, rec.pid, grace_s)
    else:
        args = json.dumps({"run_dir": rec.run_dir, "pid": rec.pid, "grace_s": grace_s})
        src = Path(hostprobe.__file__).read_text(encoding="utf-8")
        res = host.run_python(src, ["stop", args], timeout=grace_s + host.config.timeout + 15)
        if res.transport_error or res.returncode != 0:
            why = res.transport_error or res.stderr.strip()[-300:]
            raise WorkFailed(f"cannot stop {rec.id} on {host.name}: {why}")
        result = json.loads(res.stdout)
    status = result.get("status") or {}
    state = status.get("state") or rec.state
    changes = {"state": state, "error": status.get("error"), "checked": time.time()}
    if result.get("last"):
        changes.update(step=result["last"].get("step"), loss=result["last"].get("loss"))
    if state in ("finished", "failed", "stopped"):
        registry.update(rec.id, **changes)
    return StopResult(rec.id, bool(result.get("was_running")), bool(result.get("killed")), state)


# --- logs -------------------------------------------------------------------------------------


class LogTail:
    """Reads a run's output.log incrementally: each `read` returns only the bytes added since
    the previous one (remote: `tail -c +OFFSET` over the shared connection)."""

    def __init__(self, record: RunRecord, offset: int = 0) -> None:
        self.record = record
        self.offset = offset
        self._host = get_host(record.host)
        self._path = f"{record.run_dir}/output.log"
        self._drop_partial_line = False

    def skip_to_tail(self, keep_bytes: int = 256 << 10) -> None:
        """Start the next read `keep_bytes` before the end, at a line start: a view that holds
        a few thousand lines need not fetch a long backlog (one round trip per MiB remotely)."""
        if self._host.is_local:
            try:
                size = os.path.getsize(self._path)
            except FileNotFoundError:
                return
        else:
            res = self._host.run(f"wc -c < {quote_path(self._path)} 2>/dev/null")
            if res.transport_error:
                raise WorkFailed(f"host {self._host.name} is unreachable: {res.transport_error}")
            size = int(res.stdout.strip() or 0)
        if size > keep_bytes:
            self.offset = size - keep_bytes
            self._drop_partial_line = True

    def read(self, max_bytes: int = 1 << 20) -> bytes:
        chunk = self._read(max_bytes)
        if self._drop_partial_line and chunk:
            cut = chunk.find(b"\n")
            if cut >= 0:
                self._drop_partial_line = False
                return chunk[cut + 1 :]
            return b""
        return chunk

    def _read(self, max_bytes: int) -> bytes:
        if self._host.is_local:
            try:
                with open(self._path, "rb") as fh:
                    fh.seek(self.offset)
                    chunk = fh.read(max_bytes)
            except FileNotFoundError:
                chunk = b""
        else:
            script = (
                f"tail -c +{self.offset + 1} {quote_path(self._path)} 2>/dev/null"
                f" | head -c {int(max_bytes)}"
            )
            res = self._host.run(script)
            if res.transport_error:
                raise WorkFailed(f"host {self._host.name} is unreachable: {res.transport_error}")
            chunk = res.stdout_bytes
        self.offset += len(chunk)
        return chunk


def follow_log(
    run_id: str,
    write: Callable[[bytes], None],
    *,
    follow: bool = False,
    interval_s: float = 0.5,
    registry: Registry | None = None,
) -> str:
    """Copy the run's log to `write`; with `follow`, keep going until the run has ended and
    its log is drained. Returns the run's state at the end."""
    from vlmtui.core.fleet.runs import FINAL_STATES, reconcile

    registry = registry or Registry()
    rec = registry.get(run_id)
    tail = LogTail(rec)
    state = reconcile([rec], registry)[0].state
    last_check = time.monotonic()
    while True:
        chunk = tail.read()
        if chunk:
            write(chunk)
            continue
        if not follow or state in FINAL_STATES:
            return state
        time.sleep(interval_s)
        if time.monotonic() - last_check > 2.0:
            state = reconcile([registry.get(rec.id)], registry)[0].state
            last_check = time.monotonic()


__all__ = [
    "LaunchRequest",
    "LaunchResult",
    "LogTail",
    "StopResult",
    "follow_log",
    "launch",
    "parse_gpu_spec",
    "stop_run",
]
