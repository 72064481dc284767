"""Slurm as a host kind: settings, validation, the batch script and the sbatch command line.

vlmtui submits to Slurm and lets it choose nodes and GPUs; it keeps the recipe, the run
directory (on storage the compute nodes share), the monitoring and the comparison. This
module is pure: it builds text and argument lists, and `slurmstate.py` reads Slurm's answers.
`onhost/slurmprobe.py` runs the commands on the login node; `slurmhost.py` ties them to
launch, runs, stop and gpus.

Inside a job:
- one GPU (one node) runs `vlmtui train` under the supervisor, as a local launch does;
- several GPUs on one node run torchrun `--standalone`, which picks its own free
  rendezvous port;
- several nodes run `srun` torchrun, one task per node, with the c10d rendezvous on the
  job's first node at a port derived from the job id. The endpoint is that node's address
  as Slurm knows it (`NodeAddr`), not its name, which need not resolve on the other nodes;
  node 0 hosts the rendezvous store (`--rdzv_conf is_host=1`, the others 0) rather than
  torchrun's guess (is the endpoint one of my addresses?), which makes every agent on a
  shared address try to host and misses an address that is not among the head's own (a NAT
  or an alias); each agent gives its own node's address as `--local_addr` (rank 0's becomes
  the workers' MASTER_ADDR, torchrun's default being the node's host name).

The job asks Slurm for SIGTERM `term_before_s` before its time limit (`--signal=B:TERM@N`,
to the batch shell, which forwards it to the run's process group), so the trainer saves a
checkpoint and ends `stopped`. The batch shell also notes why a SIGTERM came (a `vlmtui
stop`, the time limit, a cancel) in `stop_reason` for the state shown later. With `--requeue`
a requeued job (SLURM_RESTART_COUNT > 0) resumes from its last checkpoint.

The run's output goes to RUN_DIR/output.log like any launched run (the supervisor's stdout),
and Slurm's own `slurm-<jobid>.out` in the run directory keeps what the batch shell says
(`--output` is given on the sbatch command line by the login node, which knows the run
directory's absolute path; a #SBATCH line could not quote a path with spaces).
Not a `tee`: `vlmtui train` copies its stdout into output.log itself when stdout is not that
file, so a tee would write every line twice. Under srun the trainer's stdout is a pipe to the
supervisor's output.log, so a multi-node job names that file in `VLMTUI_OUTPUT_LOG` and the
trainer does not copy it again (one writer per file, even on shared storage).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from vlmtui.core.errors import BadInput
from vlmtui.core.fleet.shell import HomePath, quote_path
from vlmtui.core.rundir import OUTPUT_LOG_ENV

TERM_BEFORE_S = 120
STOP_REQUESTED = "stop_requested"
"""File a `vlmtui stop` writes into the run directory before it signals the job."""
STOP_REASON = "stop_reason"
"""File the batch shell writes when a SIGTERM reaches it: why (time limit, cancelled...)."""
JOB_PREFIX = "vlmtui-"

_VALUE_RE = {
    "partition": re.compile(r"^[A-Za-z0-9_.-]+(,[A-Za-z0-9_.-]+)*$"),
    "account": re.compile(r"^[A-Za-z0-9_.-]+$"),
    "qos": re.compile(r"^[A-Za-z0-9_.-]+$"),
    "time": re.compile(r"^(\d+-)?\d+(:\d{1,2}){0,2}$|^\d+-\d+$"),
    "gres": re.compile(r"^[A-Za-z0-9_]+(:[A-Za-z0-9_.-]+)?$"),
    "constraint": re.compile(r"^[A-Za-z0-9_.&|\[\]*,:-]+$"),
    "mem_per_gpu": re.compile(r"^\d+[KMGT]?$"),
}
_EXTRA_RE = re.compile(r"^--[a-z][a-z0-9-]*(=[A-Za-z0-9_.,:=@/+%-]*)?$")
_SHELL_META = set(";&|<>`$()\\\"' \t\n\r*?[]{}!#~")


def check_value(name: str, value: str) -> str:
    """`value` if it is safe as the Slurm option `name`; else BadInput naming the field.

    Values go into #SBATCH lines and argv items: shell metacharacters, spaces and line
    breaks are refused outright, and each field must look like what Slurm accepts there."""
    if not isinstance(value, str) or not value:
        raise BadInput(f"slurm {name}: expected a non-empty string, got {value!r}")
    pattern = _VALUE_RE[name]
    meta = _SHELL_META - (set("&|[]*") if name == "constraint" else set())
    bad = [c for c in value if c in meta]
    if bad or not pattern.match(value):
        why = f"contains {bad[0]!r}" if bad else "has an unexpected form"
        raise BadInput(f"slurm {name}: {value!r} {why}")
    return value


def check_extra(items: Iterable[str]) -> tuple[str, ...]:
    """`sbatch_extra`: each item one `--option` or `--option=value`, no shell metacharacters."""
    out = []
    for item in items:
        if not isinstance(item, str) or not _EXTRA_RE.match(item):
            raise BadInput(
                f"slurm sbatch_extra: {item!r} is not one --option or --option=value "
                "(letters, digits and . , : = @ / + % - only)"
            )
        out.append(item)
    return tuple(out)


@dataclass(frozen=True)
class SlurmSettings:
    """The `kind = "slurm"` fields of a hosts.toml table (all optional)."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time: str | None = None
    """Default time limit (`04:00:00`, `1-00:00:00`, minutes)."""
    gres: str = "gpu"
    """GRES name (optionally `name:type`) to request GPUs as: `--gres=gpu:N`."""
    constraint: str | None = None
    cpus_per_gpu: int | None = None
    mem_per_gpu: str | None = None
    sbatch_extra: tuple[str, ...] = ()
    term_before_s: int = TERM_BEFORE_S
    """SIGTERM this long before the time limit, so the trainer can save a checkpoint."""

    def validated(self) -> SlurmSettings:
        for name in ("partition", "account", "qos", "time", "gres", "constraint", "mem_per_gpu"):
            value = getattr(self, name)
            if value is not None:
                check_value(name, value)
        check_extra(self.sbatch_extra)
        for name in ("cpus_per_gpu", "term_before_s"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise BadInput(f"slurm {name}: expected a positive integer, got {value!r}")
        return self


@dataclass(frozen=True)
class JobSpec:
    """One job of a run: the stage it trains and how much of the cluster it asks for."""

    run_id: str
    run_dir: str
    workdir: str
    train_argv: tuple[str, ...]
    """`vlmtui train ...` arguments (after `-m vlmtui`), without --resume."""
    python: str
    gpus: int = 1
    """GPUs per node."""
    nodes: int = 1
    stage: int | None = None
    """Stage number when the recipe runs one job per stage; None: the whole recipe."""
    stages: int = 1
    requeue: bool = False
    resume: bool = False
    """Stages after the first resume the run directory the earlier ones wrote."""
    env: tuple[tuple[str, str], ...] = field(default=())

    @property
    def name(self) -> str:
        return JOB_PREFIX + self.run_id + (f"-s{self.stage}" if self.stage else "")

    @property
    def script_name(self) -> str:
        return f"job{self.stage}.sbatch" if self.stage else "job.sbatch"


class _Raw(str):
    """A command-line piece the batch shell must expand (a variable), not quote."""


def _sh(argv: Sequence[str]) -> str:
    return " ".join(
        a if isinstance(a, _Raw) else quote_path(a) if isinstance(a, HomePath) else shlex.quote(a)
        for a in argv
    )


def sbatch_directives(spec: JobSpec, s: SlurmSettings, time: str | None) -> list[str]:
    """The #SBATCH options of the job (each value validated before it gets here)."""
    opts = [
        f"--job-name={spec.name}",
        f"--signal=B:TERM@{s.term_before_s}",
        f"--nodes={spec.nodes}",
        "--ntasks-per-node=1",
        f"--gres={s.gres}:{spec.gpus}",
        "--requeue" if spec.requeue else "--no-requeue",
    ]
    if s.cpus_per_gpu:
        opts.append(f"--cpus-per-task={s.cpus_per_gpu * spec.gpus}")
    if s.mem_per_gpu:
        opts.append(f"--mem-per-gpu={s.mem_per_gpu}")
    for name in ("partition", "account", "qos", "constraint"):
        value = getattr(s, name)
        if value:
            opts.append(f"--{name}={value}")
    if time or s.time:
        opts.append(f"--time={time or s.time}")
    return opts


_NODE_ADDR = 'scontrol show node {node} | grep -o "NodeAddr=[^ ]*" | cut -d= -f2'
"""Shell: the address Slurm reaches node {node} at (its NodeAddr)."""

_PER_NODE = (
    "ADDR=$(" + _NODE_ADDR.format(node='"$SLURMD_NODENAME"') + '); exec "$0" -m '
    'torch.distributed.run --local_addr "${ADDR:-$(hostname)}" '
    '--rdzv_conf "is_host=$((SLURM_NODEID == 0))" "$@"'
)
"""`bash -c` in each srun task: what differs per node is only known there (node id, address)."""


def train_command(spec: JobSpec) -> list[str]:
    """What the supervisor runs inside the job (see the module doc for the three shapes)."""
    py = [HomePath(spec.python)]
    train = ["-m", "vlmtui", *spec.train_argv]
    if spec.stage:
        train += ["--stage", str(spec.stage)]
    train.append(_Raw("${RESUME:+--resume}"))
    nproc = ["--nproc_per_node", str(spec.gpus)]
    if spec.nodes > 1:
        rdzv = [
            "--nnodes", str(spec.nodes), *nproc, "--rdzv_backend", "c10d",
            "--rdzv_endpoint", _Raw('"$HEAD:$PORT"'), "--rdzv_id", _Raw('"$SLURM_JOB_ID"'),
        ]  # fmt: skip
        srun = ["srun", "--ntasks-per-node=1", f"--nodes={spec.nodes}", "--kill-on-bad-exit=1"]
        return [*srun, "bash", "-c", _PER_NODE, *py, *rdzv, *train]
    if spec.gpus > 1:
        return [*py, "-m", "torch.distributed.run", "--standalone", *nproc, *train]
    return [*py, *train]


_TRAP = r"""
on_term() {
    # Why a SIGTERM came: `vlmtui stop` leaves a marker first; Slurm's warning comes
    # TERM_BEFORE s before the job's end time; anything else came from outside vlmtui
    # (a cancel is told apart later, from Slurm's final job state).
    why="SIGTERM from outside vlmtui (scancel --signal=TERM)"
    if [ -e "$RUN_DIR/stop_requested" ]; then why="stopped by vlmtui stop"
    else
        end=$(date -d "$(squeue -h -j "$SLURM_JOB_ID" -o %e 2>/dev/null)" +%s 2>/dev/null)
        if [ -n "$end" ] && [ $((end - $(date +%s))) -le $((TERM_BEFORE + 60)) ]; then
            why="time limit"
        fi
    fi
    printf '%s\n' "$why" > "$RUN_DIR/stop_reason"
    kill -TERM -- "-$child" 2>/dev/null || kill -TERM "$child" 2>/dev/null
}
trap on_term TERM
"""


def batch_script(spec: JobSpec, s: SlurmSettings, time: str | None = None) -> str:
    """The bash batch script of one job, written into the run directory and submitted."""
    lines = ["#!/bin/bash", *(f"#SBATCH {opt}" for opt in sbatch_directives(spec, s, time))]
    lines += [
        f"# vlmtui run {spec.run_id}"
        + (f", stage {spec.stage} of {spec.stages}" if spec.stage else ""),
        f"RUN_DIR={quote_path(spec.run_dir)}",
        f"TERM_BEFORE={s.term_before_s}",
        ': >> "$RUN_DIR/output.log"',
        'rm -f "$RUN_DIR/stop_reason"  # a requeued job: the last attempt\'s reason is stale',
        f"cd {quote_path(spec.workdir)} || exit 3",
        "export PYTHONUNBUFFERED=1 CUDA_DEVICE_ORDER=PCI_BUS_ID VLMTUI_SLURM_JOB=$SLURM_JOB_ID",
        *(f"export {k}={shlex.quote(v)}" for k, v in spec.env),
        'RESUME=""',
        'if [ "${SLURM_RESTART_COUNT:-0}" -gt 0 ]; then RESUME=1; fi',
    ]
    if spec.resume:
        lines.append("RESUME=1")
    if spec.nodes > 1:
        lines += [
            'HEAD_NODE=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
            "HEAD=$(" + _NODE_ADDR.format(node='"$HEAD_NODE"') + ")",
            "HEAD=${HEAD:-$HEAD_NODE}",
            'case $HEAD in *:*) HEAD="[$HEAD]" ;; esac  # an IPv6 address',
            "PORT=$((20000 + SLURM_JOB_ID % 20000))",
            'echo "[vlmtui] rendezvous on $HEAD_NODE at $HEAD:$PORT"',
            f'export {OUTPUT_LOG_ENV}="$RUN_DIR/output.log"  # srun\'s pipes take stdout there',
        ]
    sup = [HomePath(spec.python), "-m", "vlmtui.core.supervise", HomePath(spec.run_dir), "--"]
    lines += [
        'echo "[vlmtui] job $SLURM_JOB_ID on $(hostname), restart ${SLURM_RESTART_COUNT:-0}"',
        _TRAP.strip(),
        f'{_sh(sup)} {_sh(train_command(spec))} >> "$RUN_DIR/output.log" 2>&1 < /dev/null &',
        "child=$!",
        "wait $child; rc=$?",
        'while kill -0 "$child" 2>/dev/null; do wait "$child"; rc=$?; done',
        'echo "[vlmtui] job $SLURM_JOB_ID: exit $rc"',
        "exit $rc",
    ]
    return "\n".join(lines) + "\n"


def sbatch_argv(
    script_path: str,
    s: SlurmSettings,
    *,
    after: str | None = None,
    partition: str | None = None,
) -> list[str]:
    """`sbatch --parsable` for one job script; `after`: job id it must follow (afterok).

    A per-launch `partition` overrides the one in the script (sbatch options beat #SBATCH);
    `sbatch_extra` comes last, one argv item each."""
    argv = ["sbatch", "--parsable"]
    if after:
        if not after.isdigit():
            raise BadInput(f"slurm dependency: job id {after!r} is not a number")
        argv += [f"--dependency=afterok:{after}", "--kill-on-invalid-dep=yes"]
    if partition:
        argv.append(f"--partition={check_value('partition', partition)}")
    return [*argv, *check_extra(s.sbatch_extra), script_path]


def parse_job_id(stdout: str) -> str:
    """The job id `sbatch --parsable` printed (`123` or `123;cluster`)."""
    first = stdout.strip().splitlines()[0] if stdout.strip() else ""
    job = first.split(";", 1)[0].strip()
    if not job.isdigit():
        raise ValueError(f"sbatch printed no job id: {stdout.strip()[:200]!r}")
    return job
