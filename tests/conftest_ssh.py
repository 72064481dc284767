"""Fixtures for the host, GPU and launch tests (a pytest plugin loaded by conftest.py).

- `sshd_server`: a real OpenSSH daemon on 127.0.0.1 (see sshd.py), one per test session.
- `ssh_host`: hosts.toml (in the test's VLMTUI_HOME) with a host `loop` reaching it; its
  PATH starts with the stand-in nvidia-smi, because these machines have no NVIDIA GPU.
- `fake_local_gpus`: the same stand-in for this machine (NVML off, stand-in first on PATH).
- `standin_train`: replaces the training command of `launch` with a small Python script that
  writes the run directory's files like `vlmtui train` does, for the tests that need a
  long-running run (stop, SIGKILL, reservations), not training.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sshd import DEFAULT_PATH, NVIDIA_SMI_DIR, LoopbackSshd, ensure_sshd, start_sshd

STANDIN_TRAIN = r'''
"""Stand-in for `vlmtui train` in tests that need a running run, not training."""
import signal, subprocess, sys, time
from vlmtui.core.training.progress import RunFiles

run_dir, mode, steps, step_s = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
files = RunFiles(run_dir)
stopping = []
if mode == "ignore-term":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
else:
    signal.signal(signal.SIGTERM, lambda signum, frame: stopping.append(signum))
if mode == "child":
    subprocess.Popen(["sleep", "300"])  # a grandchild that `stop` must end as well
if mode == "session-child":  # as torchrun starts its workers: outside the run's group
    subprocess.Popen(["sleep", "300"], start_new_session=True)
print("stand-in training in", run_dir, flush=True)
for arg in sys.argv[5:]:
    print("arg:", arg, flush=True)
files.set_status("loading")
files.set_status("training")
for step in range(1, steps + 1):
    if stopping:
        files.set_status("stopped", error="stopped by SIGTERM", exit_code=143)
        sys.exit(143)
    time.sleep(step_s)
    files.append_event({"step": step, "max_steps": steps, "loss": round(2.0 / step, 4)})
    print(f"step {step}/{steps}", flush=True)
if mode == "oom":
    print("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB", flush=True)
    sys.exit(1)
if mode == "crash":
    raise RuntimeError("stand-in crashed")
if mode == "linger":  # records its failure, then takes a while to end (a slow teardown)
    files.set_status("failed", error="stand-in failed", exit_code=1)
    time.sleep(3)
    sys.exit(1)
files.set_status("finished", exit_code=0, error=None)
'''


def _executable_stand_in() -> None:
    smi = NVIDIA_SMI_DIR / "nvidia-smi"
    if not os.access(smi, os.X_OK):
        smi.chmod(0o755)


@pytest.fixture(scope="session")
def sshd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopbackSshd]:
    why = ensure_sshd()
    if why:
        pytest.skip(why)
    _executable_stand_in()
    try:
        server = start_sshd(tmp_path_factory.mktemp("sshd"))
    except (OSError, RuntimeError) as exc:
        if os.geteuid() == 0:
            raise  # CI runs as root: a daemon that does not start is a failure
        pytest.skip(f"sshd cannot start without root here: {exc}")
    yield server
    from vlmtui.core.fleet.hosts import HostConfig, SshHost

    cfg = server.host_table(Path("/"))
    SshHost(
        HostConfig(
            name="loop",
            target=server.target,
            port=server.port,
            identity=str(server.key),
            ssh_options=tuple(cfg["ssh_options"].items()),  # type: ignore[union-attr]
        )
    ).close()
    server.stop()


@dataclass
class SshTestHost:
    name: str
    server: LoopbackSshd
    workdir: Path


@pytest.fixture
def ssh_host(sshd_server: LoopbackSshd, tmp_path: Path) -> SshTestHost:
    """Host `loop` in hosts.toml: the loopback sshd, stand-in nvidia-smi (scenario a100x4)."""
    from vlmtui.core.fleet.hosts import save_host

    workdir = tmp_path / "remote-work"
    table = sshd_server.host_table(workdir)
    table["env"] = {**table["env"], "VLMTUI_NVML": "off"}  # type: ignore[dict-item]
    save_host("loop", **table)
    return SshTestHost("loop", sshd_server, workdir)


@pytest.fixture
def fake_local_gpus(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    """Call with a scenario name (a100x4, mixed, nodriver) to give `local` stand-in GPUs."""
    _executable_stand_in()

    def use(scenario: str = "a100x4") -> None:
        monkeypatch.setenv("VLMTUI_NVML", "off")
        monkeypatch.setenv("PATH", f"{NVIDIA_SMI_DIR}:{os.environ.get('PATH', DEFAULT_PATH)}")
        monkeypatch.setenv("NVIDIA_SMI_SCENARIO", scenario)

    return use


@pytest.fixture(scope="session")
def _standin_script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("standin") / "standin_train.py"
    path.write_text(STANDIN_TRAIN)
    return path


@pytest.fixture
def paths(tmp_path: Path) -> tuple[str, str]:
    """A model dir and a data dir that exist (the stand-in does not read them)."""
    (tmp_path / "model").mkdir()
    (tmp_path / "data").mkdir()
    return str(tmp_path / "model"), str(tmp_path / "data")


@pytest.fixture
def standin_train(_standin_script: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Call as `standin_train(mode="ok", steps=5, step_s=0.2)` before `launch`: the run then
    executes the stand-in script instead of `vlmtui train` (modes: ok, child, session-child,
    ignore-term, oom, crash, linger)."""
    from vlmtui.core.fleet import launch as launch_mod
    from vlmtui.core.fleet.shell import HomePath

    def use(mode: str = "ok", steps: int = 5, step_s: float = 0.2) -> None:
        def command(python_argv, targs):  # same signature as train_command
            args = [str(_standin_script), HomePath(targs.run_dir), mode, str(steps), str(step_s)]
            recipes = [a for path in targs.recipe_files for a in ("--recipes", HomePath(path))]
            return [*python_argv, *args, "--model", targs.model, "--data", targs.data, *recipes]

        monkeypatch.setattr(launch_mod, "train_command", command)

    return use
