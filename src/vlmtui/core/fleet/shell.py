"""Shell-safe command building: name and path validation, quoting, and the ssh command line.

Every command vlmtui runs on a host — this machine or one reached over SSH — is a POSIX `sh`
script assembled here from argument lists. Values are validated first (names may not hold
shell metacharacters; paths may hold anything but NUL and line breaks) and then quoted with
`shlex.quote`, so a value never reaches a shell unquoted.

SSH goes through the system OpenSSH client: `BatchMode=yes` (never prompt), a connect
timeout, and one shared connection per host (`ControlMaster=auto` + `ControlPersist`) whose
socket lives in a short private directory (Unix socket paths are limited to ~100 bytes).
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import subprocess
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from vlmtui.core.errors import BadInput

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
"""Host, recipe and run names: letters, digits, '.', '_' and '-', at most 64 characters."""
TARGET_RE = re.compile(r"^(?:[A-Za-z0-9._%+-]+@)?[A-Za-z0-9][A-Za-z0-9._:-]*$")
"""An ssh destination: an `~/.ssh/config` alias, `host`, or `user@host` (no spaces, no quotes)."""
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
CONTROL_PERSIST_S = 600
"""How long an idle shared SSH connection stays open (seconds)."""
SERVER_ALIVE_S = 2
SERVER_ALIVE_COUNT = 2
"""A host that stops answering mid-connection (a dead link, a hung sshd) is given up after
about SERVER_ALIVE_S × SERVER_ALIVE_COUNT seconds. Without this, every command multiplexed
over the shared master waits for TCP to notice, which took 45 s with 15 × 3. The probes are
a few bytes each, and a host that answers them is never dropped, however long its command."""


def check_name(kind: str, value: str) -> str:
    """`value` if it is a valid name of `kind` (host, recipe, run), else BadInput."""
    if not isinstance(value, str) or not NAME_RE.match(value):
        raise BadInput(
            f"invalid {kind} name {value!r}: use letters, digits, '.', '_' or '-' (max 64)"
        )
    return value


def check_path(kind: str, value: str) -> str:
    """`value` if it can be a path (quoted later, so spaces and `$` are fine), else BadInput."""
    if not isinstance(value, str) or not value or any(c in value for c in "\0\n\r"):
        raise BadInput(f"invalid {kind} path {value!r}: empty or contains a NUL or line break")
    return value


def check_target(value: str) -> str:
    if not TARGET_RE.match(value) or value.startswith("-"):
        raise BadInput(f"invalid ssh target {value!r}: expected an alias, host or user@host")
    return value


class HomePath(str):
    """A path argument whose leading `~` or `~/` the remote shell expands to `$HOME`."""


def quote_path(path: str) -> str:
    """Shell-quoted path; a leading `~` becomes `"$HOME"` (quoting would disable `~`)."""
    if path == "~":
        return '"$HOME"'
    if path.startswith("~/"):
        return '"$HOME"/' + shlex.quote(path[2:]) if path[2:] else '"$HOME"/'
    return shlex.quote(path)


def join(argv: Iterable[str]) -> str:
    """One shell command line from an argument list; `HomePath` items keep `~` working."""
    return " ".join(quote_path(a) if isinstance(a, HomePath) else shlex.quote(a) for a in argv)


def env_prefix(env: Mapping[str, str] | Iterable[tuple[str, str]]) -> str:
    """`export K='v'` lines for a script; names are checked, values quoted."""
    items = env.items() if isinstance(env, Mapping) else env
    lines = []
    for key, value in items:
        if not ENV_NAME_RE.match(key):
            raise BadInput(f"invalid environment variable name {key!r}")
        lines.append(f"export {key}={shlex.quote(value)}")
    return "".join(line + "\n" for line in lines)


def control_dir() -> Path:
    """Private directory for the shared-connection sockets (short path, mode 0700)."""
    override = os.environ.get("VLMTUI_SSH_DIR")
    path = Path(override) if override else Path(tempfile.gettempdir()) / f"vlmtui-ssh-{os.getuid()}"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.stat()
    if st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise BadInput(f"{path}: ssh control directory must be private to this user (mode 700)")
    return path


def ssh_base(
    target: str,
    *,
    port: int | None = None,
    identity: str | None = None,
    options: Sequence[tuple[str, str]] = (),
    connect_timeout: float = 5.0,
) -> list[str]:
    """The `ssh` argument list up to (not including) the destination."""
    argv = [
        "ssh",
        "-o",
        "BatchMode=yes",
        "-o",
        f"ConnectTimeout={max(1, round(connect_timeout))}",
        "-o",
        "ControlMaster=auto",
        "-o",
        f"ControlPath={control_dir()}/%C",
        "-o",
        f"ControlPersist={CONTROL_PERSIST_S}",
        "-o",
        f"ServerAliveInterval={SERVER_ALIVE_S}",
        "-o",
        f"ServerAliveCountMax={SERVER_ALIVE_COUNT}",
        "-o",
        "LogLevel=ERROR",
        "-T",
    ]
    for key, value in options:
        if not re.match(r"^[A-Za-z]+$", key) or any(c in value for c in "\0\n\r"):
            raise BadInput(f"invalid ssh option {key}={value!r}")
        argv += ["-o", f"{key}={value}"]
    if identity:
        argv += ["-i", os.path.expanduser(identity), "-o", "IdentitiesOnly=yes"]
    if port:
        argv += ["-p", str(int(port))]
    return argv


def ssh_argv(base: Sequence[str], target: str, script: str) -> list[str]:
    """Run a POSIX sh `script` on `target`, whatever the remote user's login shell is."""
    return [*base, "--", check_target(target), "sh -c " + shlex.quote(script)]


def ssh_control_argv(base: Sequence[str], target: str, op: str) -> list[str]:
    """`ssh -O check|exit` on the shared connection."""
    return [*base, "-O", op, "--", check_target(target)]


def run_process(
    argv: Sequence[str], timeout: float, input: bytes | None = None
) -> tuple[int, bytes, bytes, bool]:
    """(returncode, stdout, stderr, timed_out). On timeout the whole process group is killed,
    so a stuck child can neither outlive the call nor keep its pipes open."""
    proc = subprocess.Popen(
        list(argv),
        stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(input, timeout=timeout)
        return proc.returncode, out, err, False
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):  # ended between timeout and kill
            os.killpg(proc.pid, signal.SIGKILL)
        try:
            out, err = proc.communicate(timeout=2)
        except subprocess.TimeoutExpired:
            out, err = b"", b""
        return -9, out or b"", err or b"", True
