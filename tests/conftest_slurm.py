"""Fixtures for the cluster tests (a pytest plugin loaded by conftest.py).

- `slurm_cluster`: a real one-node Slurm (munged, slurmctld, slurmd; four fake GPUs), one per
  test session and xdist worker (see slurm_cluster.py); skips with the reason when Slurm
  cannot run here.
- `slurm_cluster2`: a real two-node Slurm on this machine (two slurmd, n1 and n2, two fake
  GPUs each), its own daemons, files and ports beside the one-node cluster.
- `cluster_host` / `cluster2_host`: hosts.toml (in the test's VLMTUI_HOME) with a `kind =
  "slurm"` host `cluster` on that cluster whose login node is this machine; every job is
  cancelled after the test.
- `slurm_standin`: the jobs run the stand-in trainer of conftest_ssh (a few steps, SIGTERM
  handled like the real one) instead of `vlmtui train`, for tests about Slurm's states
  rather than training. It stands in for `slurm.train_command`, the command inside the job.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from slurm_cluster import Cluster, ClusterUnavailable, start_cluster


def _cluster(tmp_path_factory: pytest.TempPathFactory, nodes: int) -> Iterator[Cluster]:
    try:
        cluster = start_cluster(tmp_path_factory.mktemp(f"slurm{nodes}n"), nodes=nodes)
    except ClusterUnavailable as exc:
        pytest.skip(f"no {nodes}-node Slurm test cluster: {exc}")
    yield cluster
    cluster.cancel_all()
    cluster.stop()


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    yield from _cluster(tmp_path_factory, 1)


@pytest.fixture(scope="session")
def slurm_cluster2(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    yield from _cluster(tmp_path_factory, 2)


@dataclass
class ClusterHost:
    name: str
    cluster: Cluster
    runs_dir: Path


def _host(
    cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[ClusterHost]:
    from vlmtui.core.fleet.hosts import save_host

    monkeypatch.setenv("SLURM_CONF", str(cluster.conf))
    runs = tmp_path / "cluster-runs"
    save_host("cluster", kind="slurm", runs_dir=str(runs), python=sys.executable)
    cluster.wait_idle()
    yield ClusterHost("cluster", cluster, runs)
    cluster.cancel_all()


@pytest.fixture
def cluster_host(
    slurm_cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[ClusterHost]:
    yield from _host(slurm_cluster, tmp_path, monkeypatch)


@pytest.fixture
def cluster2_host(
    slurm_cluster2: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[ClusterHost]:
    yield from _host(slurm_cluster2, tmp_path, monkeypatch)


@pytest.fixture
def slurm_standin(_standin_script: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Call as `slurm_standin(mode="ok", steps=5, step_s=0.2)` before launching."""
    from vlmtui.core.fleet import slurm

    def use(mode: str = "ok", steps: int = 5, step_s: float = 0.2) -> None:
        def command(spec: Any) -> list[str]:
            return [spec.python, str(_standin_script), spec.run_dir, mode, str(steps), str(step_s)]

        monkeypatch.setattr(slurm, "train_command", command)

    return use


def wait_for(what: str, check: Callable[[], Any], timeout: float = 90, every: float = 0.5) -> Any:
    """Poll `check` until it returns something true; fail naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what} (last: {last!r})")
