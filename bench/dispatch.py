"""Dispatch benchmark: launch-to-run-id latency over a warm SSH connection, one `gpus`
refresh of 4 hosts in parallel against the same 4 in series, and launch-to-job-id through a
one-node Slurm cluster on this machine.

The hosts are real OpenSSH daemons on 127.0.0.1 (tests/sshd.py) with the stand-in nvidia-smi
on their PATH (this machine has no NVIDIA GPU). The launched command is a sleeping stand-in
instead of `vlmtui train`: what is measured is everything up to the run id (validation, GPU
query, registry transaction, the remote script that checks paths and starts the supervisor),
which does not depend on the command. Every figure is measured in the same run; targets:
launch ≤ 0.3 s, 4 hosts in parallel ≤ 1.3 × one host, Slurm launch → job id ≤ 0.5 s.

The Slurm part uses the test cluster of tests/slurm_cluster.py (root, slurm-wlm and munge;
skipped with the reason otherwise); its jobs run a sleeping stand-in and are cancelled.

    .venv/bin/python bench/dispatch.py [--repeat N]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))


class Delayed:
    """A host whose every command first waits 100 ms: stands in for a distant host's network
    round trip (loopback has none), without touching the machine's network settings."""

    def __init__(self, host):
        self._host = host

    def __getattr__(self, name):
        return getattr(self._host, name)

    def run(self, script, **kw):
        return self._host.run("sleep 0.1\n" + script, **kw)


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def fmt(xs: list[float]) -> str:
    xs = sorted(xs)
    return f"median {median(xs) * 1000:6.1f} ms  min {xs[0] * 1000:6.1f}  max {xs[-1] * 1000:6.1f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    from sshd import bench_hosts, ensure_sshd

    why = ensure_sshd()
    if why:
        print(f"skipped: {why}")
        return 0
    root, servers, tables = bench_hosts(4)

    from vlmtui.core.fleet import launch as launch_mod
    from vlmtui.core.fleet.hosts import get_host, save_host
    from vlmtui.core.fleet.launch import LaunchRequest, launch
    from vlmtui.core.fleet.registry import Registry
    from vlmtui.core.fleet.status import query_hosts

    names = [f"loop{i}" for i in range(4)]
    for name, table in zip(names, tables, strict=True):
        # The same daemon without vlmtui there: the query falls back to (stand-in) nvidia-smi,
        # which costs the remote side almost no CPU, leaving the dispatch overhead.
        save_host(f"smi{name[-1]}", **{**table, "python": "/nonexistent/python"})
    (root / "model").mkdir()
    (root / "data").mkdir()
    launch_mod.train_command = lambda python_argv, targs: [  # type: ignore[assignment]
        *python_argv, "-c", "import time; time.sleep(60)",
    ]  # fmt: skip
    hosts = [get_host(n) for n in names]
    pids: list[int] = []
    try:
        for h in hosts:  # warm: open each shared connection
            assert h.run("true").ok, h.run("true").transport_error
        host = hosts[0]
        ping = [host.run("true").elapsed_s for _ in range(args.repeat)]
        cpu: list[float] = []
        auto: list[float] = []
        for _ in range(args.repeat):
            for gpu, out in (("cpu", cpu), ("auto", auto)):
                req = LaunchRequest(
                    recipe="r1-llm-only",
                    model=str(root / "model"),
                    data=str(root / "data"),
                    host=host.name,
                    gpu=gpu,
                    force=True,
                )
                start = time.perf_counter()
                result = launch(req)
                out.append(time.perf_counter() - start)
                pids.append(result.pid)
                if gpu == "auto":  # free the GPU again for the next round
                    Registry().update(result.run_id, state="failed")
        refresh = {}
        groups = {
            "vlmtui": hosts,
            "nvidia-smi": [get_host(f"smi{i}") for i in range(4)],
            "nvidia-smi, +100 ms latency": [Delayed(get_host(f"smi{i}")) for i in range(4)],
        }
        for label, group in groups.items():
            one, series, parallel = [], [], []
            for _ in range(args.repeat):
                start = time.perf_counter()
                assert group[0].query_gpus().source == label.split(",")[0]
                one.append(time.perf_counter() - start)
                start = time.perf_counter()
                results = [h.query_gpus() for h in group]
                series.append(time.perf_counter() - start)
                assert all(r.reachable and len(r.gpus) == 4 for r in results), results
                start = time.perf_counter()
                results = query_hosts(group)
                parallel.append(time.perf_counter() - start)
                assert all(r.reachable and len(r.gpus) == 4 for r in results), results
            refresh[label] = (one, series, parallel)
    finally:
        time.sleep(1.0)  # the stand-ins become group leaders within moments of starting
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):  # already gone
                os.killpg(pid, signal.SIGKILL)
        for h in hosts:
            h.close()
        for s in servers:
            s.stop()

    print(f"dispatch benchmark: loopback sshd, {args.repeat} repeats, {os.cpu_count()} CPUs")
    print("  (both ends of every connection share this machine's CPUs)")
    print(f"  ssh round trip (`true`, warm)         {fmt(ping)}")
    print(f"  launch --gpu cpu -> run id            {fmt(cpu)}")
    print(f"  launch --gpu auto -> run id           {fmt(auto)}   (GPU query + launch)")
    for label, (one, series, parallel) in refresh.items():
        print(f"  gpus via remote {label}:")
        print(f"    1 host                              {fmt(one)}")
        print(f"    4 hosts in series                   {fmt(series)}")
        print(f"    4 hosts in parallel                 {fmt(parallel)}")
        print(
            f"    parallel / 1 host: {median(parallel) / median(one):.2f} (target <= 1.3)  "
            f"series / parallel: {median(series) / median(parallel):.2f}"
        )
    target = 0.3
    print(
        f"  launch (auto) / 0.3 s target: {median(auto) / target:.2f}  "
        f"launch (cpu) / target: {median(cpu) / target:.2f}"
    )
    slurm_launch(root, args.repeat)
    return 0


def slurm_launch(root: Path, repeat: int) -> None:
    """`launch --host cluster` to the job id (validation, registry, batch script, sbatch)."""
    from slurm_cluster import ClusterUnavailable, start_cluster
    from vlmtui.core.fleet import slurm
    from vlmtui.core.fleet.hosts import save_host
    from vlmtui.core.fleet.launch import LaunchRequest, launch

    try:
        cluster = start_cluster(root / "slurm")
    except ClusterUnavailable as exc:
        print(f"  slurm launch -> job id: skipped ({exc})")
        return
    os.environ["SLURM_CONF"] = str(cluster.conf)
    save_host("cluster", kind="slurm", runs_dir=str(root / "cluster-runs"), python=sys.executable)
    slurm.train_command = lambda spec: [spec.python, "-c", "import time; time.sleep(60)"]  # type: ignore[assignment]
    times = []
    try:
        for _ in range(repeat):
            req = LaunchRequest("r1-llm-only", str(root / "model"), str(root / "data"), "cluster")
            start = time.perf_counter()
            result = launch(req)
            times.append(time.perf_counter() - start)
            assert result.job and result.job.isdigit(), result
    finally:
        cluster.cancel_all()
        cluster.stop()
    print(f"  slurm launch -> job id (sbatch)       {fmt(times)}")
    print(f"  slurm launch / 0.5 s target: {median(times) / 0.5:.2f}")


if __name__ == "__main__":
    raise SystemExit(main())
