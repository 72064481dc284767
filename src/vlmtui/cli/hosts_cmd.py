"""`vlmtui hosts` (inventory, check, add, remove) and `vlmtui gpus` (GPU status of hosts)."""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any

from vlmtui.core.errors import BadInput


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("gpus", help="GPU status of this machine and the hosts in hosts.toml")
    p.add_argument("--host", action="append", default=[], metavar="NAME", help="(repeatable)")
    p.add_argument("--local", action="store_true", help="only this machine, no hosts.toml")
    p.add_argument("--timeout", type=float, default=None, help="per-host limit in seconds")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run_gpus)

    p = sub.add_parser("hosts", help="list the hosts (see `hosts check|add|remove`)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run_hosts)
    hsub = p.add_subparsers(dest="hosts_command", metavar="ACTION")
    c = hsub.add_parser("check", help="reachable? vlmtui version there? GPUs?")
    c.add_argument("name")
    c.add_argument("--json", action="store_true", help="print JSON")
    c.set_defaults(func=run_check)
    a = hsub.add_parser("add", help="add or replace a host in hosts.toml")
    a.add_argument("name")
    a.add_argument(
        "target", nargs="?", help="ssh alias, host or user@host (Slurm: the login node; "
        "leave out when it is this machine)",
    )  # fmt: skip
    a.add_argument("--kind", choices=("ssh", "slurm"), default="ssh")
    a.add_argument("--port", type=int)
    a.add_argument("--workdir", help="remote working directory (default: the login dir)")
    a.add_argument("--python", help="remote interpreter that has vlmtui (default: python3)")
    a.add_argument("--identity", help="ssh private key file")
    a.add_argument("--runs-dir", help="where run directories go (Slurm: on shared storage)")
    for key in ("partition", "account", "qos", "time", "gres", "constraint", "mem-per-gpu"):
        a.add_argument(f"--{key}", help="Slurm host: default for its jobs")
    a.add_argument("--cpus-per-gpu", type=int, help="Slurm host: CPUs per GPU")
    a.add_argument(
        "--sbatch-extra", action="append", default=None, metavar="OPTION",
        help="Slurm host: one more sbatch --option[=value] (repeatable)",
    )  # fmt: skip
    a.set_defaults(func=run_add)
    r = hsub.add_parser("remove", help="remove a host from hosts.toml")
    r.add_argument("name")
    r.set_defaults(func=run_remove)


def _fmt(value: float | None, unit: str = "", digits: int = 0) -> str:
    return "-" if value is None else f"{value:.{digits}f}{unit}"


def run_gpus(args: argparse.Namespace) -> int:
    from vlmtui.core.fleet.gpus import local_gpus
    from vlmtui.core.fleet.hosts import hosts_problem
    from vlmtui.core.fleet.status import gpu_status, iter_gpu_status

    if args.timeout is not None and not 0 < args.timeout < math.inf:
        raise BadInput(f"--timeout: expected a positive number of seconds, got {args.timeout}")
    if not args.local:
        warn_hosts_problem(hosts_problem())
    if args.json:
        statuses = [local_gpus()] if args.local else gpu_status(args.host or None, args.timeout)
        print(json.dumps({"hosts": [s.to_json() for s in statuses]}, indent=1))
        return 0
    each = [local_gpus()] if args.local else iter_gpu_status(args.host or None, args.timeout)
    for s in each:  # each host as soon as it answers: a slow one holds back no other
        head = f"{s.name}: " + ("reachable" if s.reachable else f"UNREACHABLE ({s.error})")
        if s.source == "slurm":
            _print_cluster(head, s)
            continue
        print(head + (f" — {s.note}" if s.note else ""))
        for g in s.gpus:
            state = f"reserved by {g.reserved_by}" if g.state == "reserved" else g.state
            print(
                f"  [{g.index}] {g.name:<24} {_fmt(g.util_pct, '%'):>5} "
                f"{_fmt(g.mem_used_mib)}/{_fmt(g.mem_total_mib)} MiB "
                f"{_fmt(g.temp_c, 'C'):>4} {_fmt(g.power_w, 'W'):>5} "
                f"{len(g.processes)} proc  {state}"
            )
        sys.stdout.flush()
    return 0


def _print_cluster(head: str, s: Any) -> None:
    """A Slurm host: one line per node and the queue, then its GPUs (Slurm allocates them)."""
    print(head + " — Slurm")
    for part in (s.note or "").split("; "):
        print(f"  {part}")
    for g in s.gpus:
        state = "free" if g.free else f"allocated ({g.reserved_by})" if g.reserved_by else "down"
        print(f"  [{g.index}] {g.name:<24} {state}")


def warn_hosts_problem(problem: str | None) -> None:
    """One line on stderr when hosts.toml is broken; the command goes on with `local`."""
    if problem:
        print(f"warning: {problem}; only the local host is usable", file=sys.stderr)


def _host_row(c: Any) -> dict[str, Any]:
    return {
        "name": c.name,
        "kind": "slurm" if c.slurm else "local" if c.is_local else "ssh",
        "target": c.target,
        "port": c.port,
        "workdir": c.workdir,
        "python": c.python,
        "runs_dir": c.runs_dir,
    }


def run_hosts(args: argparse.Namespace) -> int:
    from vlmtui.core.fleet.hosts import load_hosts

    rows = [_host_row(c) for c in load_hosts().values()]
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    for r in rows:
        where = (r["target"] or "this machine") + (" (Slurm)" if r["kind"] == "slurm" else "")
        port = f":{r['port']}" if r["port"] else ""
        print(f"{r['name']:<16} {where}{port}  python={r['python']}  workdir={r['workdir'] or '-'}")
    return 0


def run_check(args: argparse.Namespace) -> int:
    from vlmtui.core.fleet.check import check_host
    from vlmtui.core.fleet.hosts import get_host

    result = check_host(get_host(args.name))
    if args.json:
        print(json.dumps(result.to_json(), indent=1))
    else:
        print(f"{result.name} ({result.where})")
        if not result.reachable:
            print(f"  unreachable: {result.error}")
        else:
            if result.latency_s is not None:
                print(f"  round trip: {result.latency_s * 1000:.0f} ms")
            for label, value in result.details:
                print(f"  {label}: {value}")
            print(f"  vlmtui: {result.vlmtui_version or 'not found with ' + result.python}")
            if result.gpus.note:
                print(f"  note: {result.gpus.note}")
            for g in result.gpus.gpus:
                print(f"  GPU {g.index}: {g.name} ({g.state})")
    return 0 if result.reachable else 1


def run_add(args: argparse.Namespace) -> int:
    from vlmtui.core.fleet.hosts import LOCAL, save_host

    if args.name == LOCAL:
        raise BadInput("'local' is built in; edit [hosts.local] in hosts.toml to change it")
    if args.kind == "ssh" and not args.target:
        raise BadInput("hosts add: a target (ssh alias, host or user@host) is required")
    slurm_only = ("partition", "account", "qos", "time", "gres", "constraint", "mem_per_gpu")
    slurm = {k: getattr(args, k) for k in (*slurm_only, "cpus_per_gpu", "sbatch_extra")}
    if args.kind != "slurm" and any(v is not None for v in slurm.values()):
        raise BadInput("hosts add: Slurm options need --kind slurm")
    save_host(
        args.name,
        kind="slurm" if args.kind == "slurm" else None,
        target=args.target,
        port=args.port,
        workdir=args.workdir,
        python=args.python,
        identity=args.identity,
        runs_dir=args.runs_dir,
        **slurm,
    )
    return 0


def run_remove(args: argparse.Namespace) -> int:
    from vlmtui.core.fleet.hosts import remove_host

    remove_host(args.name)
    return 0
