"""Fault bench: the fleet faults of issue 11, each done for real to runs on this machine and on
a loopback SSH host, and what vlmtui made of it afterwards.

Per scenario it counts runs lost (launched, but absent from `vlmtui runs`), runs in a wrong
state (once the scenario has settled), and processes wrongly signalled (a stranger that died,
or a run that `stop` had to leave alone and did not). All must be zero.

The runs execute the stand-in trainer of tests/conftest_ssh.py (the faults are about the
fleet, not training); the SSH host is a real OpenSSH daemon on 127.0.0.1 (tests/sshd.py); the
faults are those of tests/faultkit.py. Each scenario gets a fresh VLMTUI_HOME.

    .venv/bin/python bench/faults.py [--runs N]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import faultkit  # noqa: E402
from conftest_ssh import STANDIN_TRAIN  # noqa: E402
from sshd import NVIDIA_SMI_DIR, LoopbackSshd, ensure_sshd, start_sshd  # noqa: E402
from vlmtui.core.errors import WorkFailed  # noqa: E402
from vlmtui.core.fleet import launch as launch_mod  # noqa: E402
from vlmtui.core.fleet.hosts import get_host, load_hosts, save_host  # noqa: E402
from vlmtui.core.fleet.launch import LaunchRequest, launch  # noqa: E402
from vlmtui.core.fleet.registry import Registry  # noqa: E402
from vlmtui.core.fleet.runs import list_runs, stop_run  # noqa: E402
from vlmtui.core.fleet.shell import HomePath  # noqa: E402

RECIPE = "r1-llm-only"


@dataclass
class Outcome:
    expected: dict[str, str] = field(default_factory=dict)
    """run id -> the state it must end in."""
    must_live: list[Callable[[], bool]] = field(default_factory=list)
    """One check per process that nothing may signal."""
    strangers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    groups: list[int] = field(default_factory=list)
    """Process groups of the runs, killed at the end."""


@dataclass
class Bench:
    work: Path
    sshd: LoopbackSshd | None
    runs: int
    standin: Path = field(init=False)

    def __post_init__(self) -> None:
        self.standin = self.work / "standin_train.py"
        self.standin.write_text(STANDIN_TRAIN)
        for name in ("model", "data"):
            (self.work / name).mkdir(exist_ok=True)

    def fresh_home(self, name: str) -> None:
        os.environ["VLMTUI_HOME"] = str(self.work / f"home-{name}")
        if self.sshd is not None:
            table = self.sshd.host_table(self.work / f"remote-{name}")
            table["env"] = {**table["env"], "VLMTUI_NVML": "off"}
            save_host("loop", **table)

    def use_standin(self, steps: int, step_s: float) -> None:
        script = str(self.standin)

        def command(python_argv: list[str], targs: launch_mod.TrainArgs) -> list[str]:
            return [*python_argv, script, HomePath(targs.run_dir), "ok", str(steps), str(step_s)]

        launch_mod.train_command = command

    def launch(self, host: str = "local") -> launch_mod.LaunchResult:
        model, data = str(self.work / "model"), str(self.work / "data")
        return launch(LaunchRequest(recipe=RECIPE, model=model, data=data, host=host, gpu="cpu"))


def wait_states(ids: list[str], states: tuple[str, ...], timeout: float = 60.0) -> None:
    faultkit.poll(
        lambda: all(v.state in states for v in list_runs() if v.id in ids), timeout, every=0.2
    )


def _lives(proc: subprocess.Popen[bytes]) -> bool:
    return proc.poll() is None


# --- scenarios ----------------------------------------------------------------------------


def pid_reuse(b: Bench, out: Outcome) -> None:
    """The run dies (SIGKILL to its group); its pid goes to a new session leader."""
    b.use_standin(500, 0.1)
    runs = [b.launch() for _ in range(b.runs)]
    wait_states([r.run_id for r in runs], ("training",))
    for i, run in enumerate(runs):
        faultkit.kill_group(run.pid)
        faultkit.poll(lambda r=run: not faultkit.processes_of(r.run_id, marker=b""))
        other = faultkit.stranger()
        out.strangers.append(other)
        faultkit.pretend_reused(run.run_dir, other.pid, copy_starttime=i % 2 == 1)
        Registry().update(run.run_id, pid=other.pid)
        out.must_live.append(functools.partial(_lives, other))
        out.expected[run.run_id] = "failed"
    list_runs()
    for run in runs:
        stop_run(run.run_id, grace_s=1)


def lost_reply(b: Bench, out: Outcome) -> None:
    """The launch reply is lost on the SSH link after the host ran the start script."""
    b.use_standin(4, 0.25)
    host = faultkit.LostReplyHost(load_hosts()["loop"])
    launch_mod.get_host = lambda name: host
    try:
        for _ in range(b.runs):
            with contextlib.suppress(WorkFailed):
                b.launch("loop")
    finally:
        launch_mod.get_host = get_host
    # The truth is on the host: every run directory there is a run that must be found.
    for d in (b.work / "remote-relay" / "runs").iterdir():
        out.expected[d.name] = "finished"


def _finished_runs(b: Bench, out: Outcome, hosts: tuple[str, ...] = ("local",)) -> None:
    b.use_standin(2, 0.0)
    ids = [b.launch(h).run_id for h in hosts for _ in range(b.runs)]
    wait_states(ids, ("finished",))
    out.expected.update(dict.fromkeys(ids, "finished"))


def corrupt_registry(b: Bench, out: Outcome) -> None:
    _finished_runs(b, out)
    faultkit.corrupt(Registry().path, "header")


def deleted_registry(b: Bench, out: Outcome) -> None:
    _finished_runs(b, out, ("local", "loop") if b.sshd else ("local",))
    for p in Registry().path.parent.glob("runs.sqlite*"):
        p.unlink()


def zeroed_registry(b: Bench, out: Outcome) -> None:
    """The registry file left 0 bytes long (a file system crash): SQLite reads it as empty."""
    _finished_runs(b, out)
    path = Registry().path
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    path.write_bytes(b"")


LOCKER = """
import sqlite3, sys
con = sqlite3.connect(sys.argv[1], isolation_level=None)
con.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.read()
"""


def locked_registry(b: Bench, out: Outcome) -> None:
    """Another process holds the registry's write transaction open while runs go on."""
    b.use_standin(8, 0.25)
    ids = [b.launch().run_id for _ in range(b.runs)]
    locker = subprocess.Popen(
        [sys.executable, "-c", LOCKER, str(Registry().path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )  # fmt: skip
    assert locker.stdout is not None and locker.stdout.readline() == b"locked\n"
    out.strangers.append(locker)  # held until the states are measured
    out.expected.update(dict.fromkeys(ids, "finished"))


def killed_launcher(b: Bench, out: Outcome) -> None:
    """`launch` SIGKILLed after the start script ran, before the row got the pid; then stop."""
    for _ in range(b.runs):
        subprocess.run(
            [sys.executable, "-c", faultkit.KILLED_LAUNCHER, str(b.standin),
             str(b.work / "model"), str(b.work / "data")],
            capture_output=True, timeout=60,
        )  # fmt: skip
    for rec in Registry().all():
        faultkit.poll(lambda r=rec: Path(r.run_dir, "supervisor.json").exists())
        out.expected[rec.id] = "stopped"
        stop_run(rec.id, grace_s=5)


def reboot(b: Bench, out: Outcome) -> None:
    """The host restarted (another boot id): runs are `failed`, and `stop` signals nothing."""
    b.use_standin(500, 0.1)
    runs = [b.launch() for _ in range(b.runs)]
    wait_states([r.run_id for r in runs], ("training",))
    for run in runs:
        faultkit.pretend_rebooted(run.run_dir)
        out.groups.append(run.pid)
        out.expected[run.run_id] = "failed"
        out.must_live.append(functools.partial(faultkit.alive, run.pid))
    list_runs()
    for run in runs:
        stop_run(run.run_id, grace_s=1)


SCENARIOS: dict[str, Callable[[Bench, Outcome], None]] = {
    "pid reused by a session leader": pid_reuse,
    "relay drops the launch reply": lost_reply,
    "corrupt registry": corrupt_registry,
    "deleted registry": deleted_registry,
    "zeroed registry (0 bytes)": zeroed_registry,
    "registry write-locked by another": locked_registry,
    "launcher killed mid-launch": killed_launcher,
    "host rebooted (boot id changed)": reboot,
}


def measure(out: Outcome, timeout: float = 60.0) -> tuple[int, int, int, int]:
    """(runs, lost, wrong state, wrongly signalled) once the states settle (or time out)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            views = {v.id: v for v in list_runs()}
        except Exception as exc:  # the fault broke `runs` itself: nothing can be found
            print(f"  runs failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            views = {}
        wrong = [i for i, s in out.expected.items() if i in views and views[i].state != s]
        if not wrong or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    lost = [i for i in out.expected if i not in views]
    signalled = sum(1 for alive in out.must_live if not alive())
    return len(out.expected), len(lost), len(wrong), signalled


def cleanup(out: Outcome) -> None:
    try:
        records = Registry().all()
    except Exception:  # a registry the fault broke: the recorded groups still get killed
        records = []
    for rec in records:
        for pid in faultkit.processes_of(rec.id, marker=b""):
            faultkit.kill_group(pid)
    for pid in out.groups:
        faultkit.kill_group(pid)
    for other in out.strangers:
        other.kill()
        other.wait()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3, help="runs per scenario (3)")
    args = ap.parse_args()
    os.environ["VLMTUI_NVML"] = "off"
    os.environ["PATH"] = f"{NVIDIA_SMI_DIR}:{os.environ.get('PATH', '')}"
    with tempfile.TemporaryDirectory(prefix="vlmtui-faults-") as tmp:
        work = Path(tmp)
        why = ensure_sshd()
        sshd = None if why else start_sshd(work / "sshd")
        bench = Bench(work, sshd, args.runs)
        rows: list[tuple[Any, ...]] = []
        try:
            for name, scenario in SCENARIOS.items():
                if sshd is None and scenario is lost_reply:
                    rows.append((name, f"skipped: {why}"))
                    continue
                bench.fresh_home(name.split()[0])
                start = time.monotonic()
                out = Outcome()
                try:
                    scenario(bench, out)
                except Exception as exc:  # the scenario's own steps hit the fault
                    print(f"{name}: {type(exc).__name__}: {exc}", file=sys.stderr)
                figures = measure(out)
                cleanup(out)
                rows.append((name, figures, time.monotonic() - start))
        finally:
            if sshd is not None:
                sshd.stop()
    print_table(rows)
    bad = [r for r in rows if len(r) == 3 and any(r[1][1:])]
    return 1 if bad else 0


def print_table(rows: list[tuple[Any, ...]]) -> None:
    head = f"| {'scenario':<34} | runs | lost | wrong state | wrongly signalled | time |"
    print(head)
    print("|" + "|".join("-" * len(c) for c in head.split("|")[1:-1]) + "|")
    for row in rows:
        if len(row) == 2:
            print(f"| {row[0]:<34} | {row[1]} |")
            continue
        name, (n, lost, wrong, signalled), secs = row
        figures = f"{n:>4} | {lost:>4} | {wrong:>11} | {signalled:>17}"
        print(f"| {name:<34} | {figures} | {secs:>3.0f} s |")
    print("\nfull disk (small tmpfs): not run here; the disk pre-flight is issue 11 item 4.")


if __name__ == "__main__":
    raise SystemExit(main())
