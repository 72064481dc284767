"""One row of the run registry: what was launched where, and the last known state.

A value type of its own so that the registry and what rebuilds it (`rebuild.py`, which the
registry calls when its file is missing or corrupt) both use it without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RunRecord:
    """One registry row: what was launched, plus the last conclusively known state."""

    id: str
    recipe: str
    host: str
    gpus: str
    """`0`, `0,1` or `cpu`."""
    run_dir: str
    """Absolute run directory on `host`."""
    created: float
    state: str
    """Last known state (`launching` until the process has started)."""
    nproc: int = 1
    model: str = ""
    data: str = ""
    max_steps: int | None = None
    pid: int | None = None
    """Supervisor pid = process group id of the run on its host."""
    step: int | None = None
    loss: float | None = None
    error: str | None = None
    checked: float | None = None
    """When the state was last confirmed on the host (epoch seconds)."""
    command: str = "[]"
    """JSON list: the command line the supervisor runs."""
    job: str | None = None
    """Slurm job ids, one per stage (`123,124`), for a run submitted to a cluster."""

    @property
    def gpu_indices(self) -> tuple[int, ...]:
        """GPU indices the run holds on its host; () for the CPU and for a cluster run
        (`2gpu`, `4gpux2`: Slurm places those, vlmtui reserves nothing)."""
        parts = self.gpus.split(",")
        return tuple(int(g) for g in parts) if all(p.isdigit() for p in parts) else ()

    @property
    def jobs(self) -> list[str]:
        return self.job.split(",") if self.job else []
