"""Which GPUs a launch gets: parsing `--gpu`, and the choice made inside the registry
transaction that inserts the run, so two launches at once never take the same GPU."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from vlmtui.core.errors import BadInput
from vlmtui.core.fleet.registry import RunRecord
from vlmtui.core.fleet.snapshot import CPU, Gpu, HostGpus


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


def describe_busy(g: Gpu) -> str:
    bits = []
    if g.processes:
        bits.append(f"{len(g.processes)} compute process(es)")
    if g.mem_used_mib is not None:
        bits.append(f"{g.mem_used_mib:.0f} MiB used")
    if g.util_pct is not None:
        bits.append(f"{g.util_pct:.0f}% busy")
    return ", ".join(bits) or "busy"


def chooser(
    spec: str | tuple[int, ...], status: HostGpus, host: str, force: bool
) -> Callable[[list[RunRecord]], tuple[str, ...]]:
    """Picks the GPUs against the host's active runs (called inside the registry txn)."""
    by_index = {g.index: g for g in status.gpus}

    def choose(active: list[RunRecord]) -> tuple[str, ...]:
        taken = {g: r.id for r in active for g in r.gpu_indices}
        if spec == "auto":
            pick = status.first_free(taken)
            if pick is not None:
                return (str(pick.index),)
            raise BadInput(
                f"no free GPU on {host}: "
                + "; ".join(
                    f"GPU {g.index}: "
                    + (
                        f"reserved by run {taken[g.index]}"
                        if g.index in taken
                        else describe_busy(g)
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
                    f"GPU {i} on {host} is busy ({describe_busy(by_index[i])}); "
                    "use --gpu auto, or --force"
                )
        return tuple(str(i) for i in spec)

    return choose


def reserving(
    base: RunRecord, choose: Callable[[list[RunRecord]], tuple[str, ...]]
) -> Callable[[list[RunRecord]], RunRecord]:
    def check(active: list[RunRecord]) -> RunRecord:
        return replace(base, gpus=",".join(choose(active)))

    return check
