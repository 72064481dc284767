"""A real OpenSSH daemon on 127.0.0.1 for tests and benchmarks: the "remote" host.

Everything lives in one temp dir: host key, client key, authorized_keys, config, pid file and
log. The daemon listens on a free port and logs in only the current user with the generated
key. `SetEnv SHLVL=1` makes bash skip ~/.bashrc for ssh commands (bash sources it when it
sees it was started by sshd with SHLVL unset): some development images run slow setup there
(e.g. `pyenv init`, ~0.1 s per command), which a typical remote host does not.

`scripts/install-system-deps` installs openssh-server once, before the test workers start
(`make test`, `.ci/run`); without it the ssh tests skip with that reason.
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

SSHD = "/usr/sbin/sshd"
NVIDIA_SMI_DIR = Path(__file__).parent / "fixtures" / "nvidia-smi"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def ensure_sshd() -> str | None:
    """None when sshd and ssh are usable; else why not.

    Tests never install packages: two xdist workers installing openssh-server at once left one
    of them with an sshd binary whose privilege-separation user did not exist yet.
    `scripts/install-system-deps` (run by `make test` and `.ci/run` before pytest) does it.
    """
    if not os.path.exists(SSHD) or not shutil.which("ssh") or not shutil.which("ssh-keygen"):
        return "openssh-server/-client are not installed (run scripts/install-system-deps as root)"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LoopbackSshd:
    """A running test daemon."""

    dir: Path
    port: int
    key: Path
    """Client private key that the daemon accepts."""
    user: str = field(default_factory=getpass.getuser)

    @property
    def target(self) -> str:
        return f"{self.user}@127.0.0.1"

    def pid(self) -> int | None:
        try:
            return int((self.dir / "sshd.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def host_table(self, workdir: Path, **extra: object) -> dict[str, object]:
        """A hosts.toml `[hosts.NAME]` table reaching this daemon (stand-in nvidia-smi on PATH)."""
        table: dict[str, object] = {
            "target": self.target,
            "port": self.port,
            "identity": str(self.key),
            "workdir": str(workdir),
            "python": sys.executable,
            "env": {"PATH": f"{NVIDIA_SMI_DIR}:{DEFAULT_PATH}"},
            "ssh_options": {
                "StrictHostKeyChecking": "no",
                "UserKnownHostsFile": "/dev/null",
            },
            "connect_timeout": 5,
            "timeout": 30,
        }
        table.update(extra)
        return table

    def stop(self) -> None:
        pid = self.pid()
        if pid:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                return


def _keygen(path: Path) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)],
        check=True,
        capture_output=True,
    )


def start_sshd(dir: Path) -> LoopbackSshd:
    """Start a daemon in `dir` (created) on a free loopback port; waits until it accepts."""
    dir.mkdir(parents=True, exist_ok=True)
    for name in ("hostkey", "client_key"):
        if not (dir / name).exists():
            _keygen(dir / name)
    (dir / "authorized_keys").write_text((dir / "client_key.pub").read_text())
    os.chmod(dir / "authorized_keys", 0o600)
    Path("/run/sshd").mkdir(parents=True, exist_ok=True)
    last_error = ""
    for _ in range(5):
        port = free_port()
        (dir / "sshd_config").write_text(
            f"Port {port}\n"
            "ListenAddress 127.0.0.1\n"
            f"HostKey {dir / 'hostkey'}\n"
            f"AuthorizedKeysFile {dir / 'authorized_keys'}\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            "PermitRootLogin prohibit-password\n"
            f"PidFile {dir / 'sshd.pid'}\n"
            "StrictModes no\n"
            "UsePAM no\n"
            "UseDNS no\n"
            "PrintMotd no\n"
            "MaxSessions 64\n"
            "MaxStartups 64\n"
            "SetEnv SHLVL=1\n"
        )
        (dir / "sshd.pid").unlink(missing_ok=True)
        res = subprocess.run(
            [SSHD, "-f", str(dir / "sshd_config"), "-E", str(dir / "sshd.log")],
            capture_output=True,
            text=True,
        )
        if res.returncode != 0:
            last_error = res.stderr.strip() or (dir / "sshd.log").read_text()[-500:]
            continue
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    return LoopbackSshd(dir=dir, port=port, key=dir / "client_key")
            except OSError:
                time.sleep(0.05)
        last_error = (dir / "sshd.log").read_text()[-500:]
    raise RuntimeError(f"sshd did not start: {last_error}")


def bench_hosts(count: int) -> tuple[Path, list[LoopbackSshd], list[dict[str, object]]]:
    """For benchmarks: a fresh VLMTUI_HOME with `count` daemons saved as hosts `loop0`… in its
    hosts.toml, NVML off on both ends (this machine has no GPU: the stand-in nvidia-smi on
    the daemons' PATH answers). Returns (temp root, daemons, their host tables)."""
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="vlmtui-bench-"))
    os.environ["VLMTUI_HOME"] = str(root / "home")
    os.environ["VLMTUI_NVML"] = "off"
    from vlmtui.core.fleet.hosts import save_host

    servers = [start_sshd(root / f"sshd{i}") for i in range(count)]
    tables = []
    for i, server in enumerate(servers):
        table = server.host_table(root / "work")
        table["env"] = {**table["env"], "VLMTUI_NVML": "off"}  # type: ignore[dict-item]
        save_host(f"loop{i}", **table)
        tables.append(table)
    return root, servers, tables
