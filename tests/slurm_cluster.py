"""A real Slurm cluster on this machine for tests and benchmarks: one node, or two.

munged, slurmctld and slurmd run as root with everything in one temp dir: slurm.conf,
gres.conf, state, spool, pid and log files, the munge socket, the job-completion file. The
one-node cluster's node is this machine's hostname with four fake GPUs (`gpu:4` GRES backed
by four empty files: slurmd needs `File=` entries, a bare `Count=` leaves the node INVAL);
ports are unused ones, and `JobCompType=jobcomp/filetxt` records finished jobs (there is no
accounting database, hence no sacct).

The two-node cluster (`start_cluster(d, nodes=2)`) runs two slurmd on this machine, `-N n1`
and `-N n2`, each with its own port, spool, pid and log file, two fake GPUs and all of this
machine's CPUs, both at `NodeAddr=127.0.0.1`. The names n1/n2 do not resolve, as a compute
node's short name need not on a real cluster: a job must ask Slurm for a node's address.
Every file, port and the munge socket is its own, so it runs beside a one-node cluster.

Commands reach this cluster through `SLURM_CONF`; `Cluster.env()` gives the variables and
`Cluster.path_dir` holds wrappers for sinfo/sbatch/... that set it, so a `kind = "slurm"`
host can use it with a plain `PATH`. `scripts/install-system-deps` installs the packages;
without them, or without root, `start_cluster` raises `ClusterUnavailable` with the reason
and the tests skip.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from sshd import free_port

GPUS = 4
"""Fake GPUs of the one-node cluster's node."""
GPUS_PER_NODE = 2
"""Fake GPUs of each node of a multi-node cluster."""
SLURM_COMMANDS = ("sbatch", "squeue", "sinfo", "scontrol", "scancel", "srun", "sacct")


class ClusterUnavailable(RuntimeError):
    """Slurm cannot run here (not installed, not root, a daemon did not start)."""


@dataclass
class Cluster:
    dir: Path
    nodes: tuple[str, ...]
    partition: str
    conf: Path
    jobcomp: Path
    path_dir: Path
    """Wrappers of the Slurm client commands with SLURM_CONF set: put first on PATH."""
    pids: dict[str, int]

    @property
    def node(self) -> str:
        """The first node (the only one of a one-node cluster)."""
        return self.nodes[0]

    @property
    def slurmds(self) -> list[str]:
        """Daemon names of the slurmd processes (pid file `<name>.pid` in `dir`)."""
        return ["slurmd"] if len(self.nodes) == 1 else [f"slurmd-{n}" for n in self.nodes]

    def env(self) -> dict[str, str]:
        return {"SLURM_CONF": str(self.conf)}

    def run(self, *argv: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            list(argv),
            env={**os.environ, **self.env()},
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def node_state(self, node: str | None = None) -> str:
        res = self.run("sinfo", "-h", "-N", "-n", node or self.node, "-o", "%T")
        return res.stdout.strip() if res.returncode == 0 else f"error: {res.stderr.strip()}"

    def wait_idle(self, timeout: float = 30) -> None:
        """Until every node is idle (resumed when drained or down), or ClusterUnavailable."""
        deadline = time.monotonic() + timeout
        states: dict[str, str] = {}
        while time.monotonic() < deadline:
            states = {node: self.node_state(node) for node in self.nodes}
            if all(state == "idle" for state in states.values()):
                return
            for node, state in states.items():
                if any(s in state for s in ("drain", "down")):
                    self.run("scontrol", "update", f"nodename={node}", "state=resume")
            time.sleep(0.2)
        raise ClusterUnavailable(f"nodes not idle after {timeout:g} s: {states}")

    def cancel_all(self) -> None:
        """Cancel every job and wait until the queue is empty (between tests)."""
        self.run("scancel", "--full", "--signal=KILL", "--user", "root")
        self.run("scancel", "--user", "root")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if not self.run("squeue", "-h", "-o", "%i").stdout.strip():
                return
            time.sleep(0.2)

    def stop_daemon(self, name: str) -> None:
        pid = self.pids.get(name) or _read_pid(self.dir / f"{name}.pid")
        if pid:
            _kill_wait(pid)

    def start_slurmctld(self) -> None:
        self.pids["slurmctld"] = _start_daemon(
            ["slurmctld", "-f", str(self.conf)], self.dir / "slurmctld.pid", self.env()
        )

    def stop(self) -> None:
        for name in (*self.slurmds, "slurmctld", "munged"):
            self.stop_daemon(name)


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _kill_wait(pid: int, timeout: float = 10) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return


def _start_daemon(argv: list[str], pidfile: Path, env: dict[str, str]) -> int:
    """Start a daemonizing command and return the pid its pid file names."""
    pidfile.unlink(missing_ok=True)
    res = subprocess.run(
        argv, env={**os.environ, **env}, capture_output=True, text=True, timeout=30
    )
    if res.returncode != 0:
        raise ClusterUnavailable(f"{argv[0]} did not start: {(res.stderr or res.stdout).strip()}")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        pid = _read_pid(pidfile)
        if pid:
            return pid
        time.sleep(0.05)
    raise ClusterUnavailable(f"{argv[0]} wrote no pid file {pidfile}")


def _wait_munge(socket_path: Path, timeout: float = 10) -> None:
    """Until munged answers on its socket (`munge -n`): a pid alone may be a dying daemon's."""
    deadline = time.monotonic() + timeout
    res = None
    while time.monotonic() < deadline:
        res = subprocess.run(
            ["munge", "-n", f"--socket={socket_path}"], capture_output=True, text=True, timeout=10
        )
        if res.returncode == 0:
            return
        time.sleep(0.1)
    raise ClusterUnavailable(f"munged does not answer on {socket_path}: {res and res.stderr}")


def _why_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "the Slurm test cluster needs root (slurmd runs as root)"
    missing = [c for c in ("munged", "slurmctld", "slurmd", *SLURM_COMMANDS) if not shutil.which(c)]
    if missing:
        return f"Slurm is not installed (no {missing[0]}; run scripts/install-system-deps as root)"
    return None


def _node_lines(d: Path, nodes: tuple[str, ...], host: str) -> tuple[str, str, str]:
    """(the slurmd file settings, the NodeName lines, gres.conf's node lines)."""
    cpus = os.cpu_count() or 1
    if len(nodes) == 1:
        for i in range(GPUS):
            (d / f"nvidia{i}").touch()
        (d / "spool").mkdir(exist_ok=True)
        files = f"SlurmdSpoolDir={d}/spool\nSlurmdPidFile={d}/slurmd.pid\n"
        files += f"SlurmdLogFile={d}/slurmd.log\n"
        node_conf = f"NodeName={nodes[0]} CPUs={cpus} Gres=gpu:{GPUS} State=UNKNOWN\n"
        return files, node_conf, f"NodeName={nodes[0]} Name=gpu File={d}/nvidia[0-{GPUS - 1}]\n"
    # One machine, several slurmd: each is told its node name (-N), `%n` in the paths keeps
    # their files apart, and each listens on a port of its own at the loopback address.
    files = f"SlurmdSpoolDir={d}/spool-%n\nSlurmdPidFile={d}/slurmd-%n.pid\n"
    files += f"SlurmdLogFile={d}/slurmd-%n.log\n"
    node_conf = gres = ""
    for node in nodes:
        (d / f"spool-{node}").mkdir(exist_ok=True)
        for i in range(GPUS_PER_NODE):
            (d / f"gpu-{node}-{i}").touch()
        node_conf += (
            f"NodeName={node} NodeHostname={host} NodeAddr=127.0.0.1 Port={free_port()} "
            f"CPUs={cpus} Gres=gpu:{GPUS_PER_NODE} State=UNKNOWN\n"
        )
        gres += f"NodeName={node} Name=gpu File={d}/gpu-{node}-[0-{GPUS_PER_NODE - 1}]\n"
    return files, node_conf, gres


def _write_config(d: Path, nodes: tuple[str, ...], partition: str) -> tuple[Path, Path]:
    host = socket.gethostname().split(".")[0]
    conf, jobcomp = d / "slurm.conf", d / "jobcomp.txt"
    (d / "state").mkdir(exist_ok=True)
    files, node_conf, gres = _node_lines(d, nodes, host)
    conf.write_text(
        f"ClusterName=vlmtuitest{len(nodes)}\n"
        f"SlurmctldHost={host}\n"
        "SlurmUser=root\n"
        "SlurmdUser=root\n"
        "AuthType=auth/munge\n"
        f"AuthInfo=socket={d}/munge.socket\n"
        f"SlurmctldPort={free_port()}\n"
        f"SlurmdPort={free_port()}\n"
        f"StateSaveLocation={d}/state\n"
        f"{files}"
        f"SlurmctldPidFile={d}/slurmctld.pid\n"
        f"SlurmctldLogFile={d}/slurmctld.log\n"
        "ProctrackType=proctrack/linuxproc\n"
        "TaskPlugin=task/none\n"
        "SelectType=select/cons_tres\n"
        "SelectTypeParameters=CR_Core\n"
        "AccountingStorageType=accounting_storage/none\n"
        "JobCompType=jobcomp/filetxt\n"
        f"JobCompLoc={jobcomp}\n"
        "GresTypes=gpu\n"
        "ReturnToService=2\n"
        "SchedulerParameters=sched_interval=1\n"
        "SchedulerType=sched/backfill\n"
        "MinJobAge=2\n"
        "KillWait=5\n"
        "InactiveLimit=0\n"
        "SlurmctldTimeout=10\n"
        "SlurmdTimeout=30\n"
        f"{node_conf}"
        f"PartitionName={partition} Nodes={','.join(nodes)} Default=YES MaxTime=INFINITE "
        "State=UP OverSubscribe=NO\n"
    )
    (d / "gres.conf").write_text(f"AutoDetect=off\n{gres}")
    return conf, jobcomp


def _wrappers(d: Path, conf: Path) -> Path:
    bindir = d / "bin"
    bindir.mkdir(exist_ok=True)
    for cmd in SLURM_COMMANDS:
        real = shutil.which(cmd)
        if real:
            path = bindir / cmd
            path.write_text(f'#!/bin/sh\nSLURM_CONF={conf} exec {real} "$@"\n')
            path.chmod(0o755)
    return bindir


def start_cluster(d: Path, partition: str = "debug", nodes: int = 1) -> Cluster:
    """Start munged, slurmctld and a slurmd per node with everything under `d`; waits until
    every node is idle. One node is this machine's hostname; several are n1, n2, ..."""
    why = _why_unavailable()
    if why:
        raise ClusterUnavailable(why)
    d.mkdir(parents=True, exist_ok=True)
    if nodes == 1:
        names: tuple[str, ...] = (socket.gethostname().split(".")[0],)
    else:
        names = tuple(f"n{i}" for i in range(1, nodes + 1))
    conf, jobcomp = _write_config(d, names, partition)
    env = {"SLURM_CONF": str(conf)}
    pids: dict[str, int] = {}
    cluster = Cluster(d, names, partition, conf, jobcomp, _wrappers(d, conf), pids)
    try:
        # Its own socket and key copy: the system munged (if any) is left alone.
        key = d / "munge.key"
        shutil.copyfile("/etc/munge/munge.key", key) if Path(
            "/etc/munge/munge.key"
        ).exists() else key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        pids["munged"] = _start_daemon(
            [
                "munged", "--force", f"--socket={d}/munge.socket", f"--key-file={key}",
                f"--pid-file={d}/munged.pid", f"--log-file={d}/munged.log",
                f"--seed-file={d}/munged.seed",
            ],
            d / "munged.pid",
            {},
        )  # fmt: skip
        _wait_munge(d / "munge.socket")
        cluster.start_slurmctld()
        for node, name in zip(names, cluster.slurmds, strict=True):
            argv = ["slurmd", "-f", str(conf), *(["-N", node] if nodes > 1 else [])]
            pids[name] = _start_daemon(argv, d / f"{name}.pid", env)
        cluster.wait_idle()
    except (ClusterUnavailable, OSError, subprocess.TimeoutExpired) as exc:
        cluster.stop()
        logs = " | ".join(
            f"{n}: {(d / n).read_text()[-300:]}"
            for n in ("slurmctld.log", *(f"{name}.log" for name in cluster.slurmds))
            if (d / n).exists()
        )
        raise ClusterUnavailable(f"{exc} ({logs})") from None
    return cluster
