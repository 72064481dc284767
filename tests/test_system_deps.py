"""scripts/install-system-deps: run once before the test workers (make test, .ci/run).

The fault it replaces: both xdist workers ran `apt-get install openssh-server` inside the
tests, and one saw the sshd binary unpacked before the package had created its user, so
every ssh test failed with "Privilege separation user sshd does not exist". The script
checks that sshd really starts (`sshd -t`), not that the binary exists; here a stand-in sshd
that fails like that half-installed one must be reported, and `--check` never installs.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "install-system-deps"
BROKEN_SSHD = "#!/bin/sh\necho 'Privilege separation user sshd does not exist' >&2\nexit 255\n"


def run(*args: str, sshd: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **({"VLMTUI_SSHD": sshd} if sshd else {})}
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=60)


def test_an_sshd_that_cannot_start_is_reported_not_just_its_binary(tmp_path: Path) -> None:
    fake = tmp_path / "sshd"
    fake.write_text(BROKEN_SSHD)
    fake.chmod(0o755)
    res = run("--check", sshd=str(fake))
    assert res.returncode == 1
    # other packages may be missing on a machine without them; when only sshd is broken,
    # the reason is the one sshd itself gives
    if "sshd -t fails" in res.stderr:
        assert "Privilege separation user sshd does not exist" in res.stderr


def test_check_only_reports(tmp_path: Path) -> None:
    res = run("--check", sshd=str(tmp_path / "missing-sshd"))
    assert res.returncode == 1 and "missing: no " in res.stderr
    assert "installing" not in res.stderr


def test_no_test_installs_packages() -> None:
    """Installing belongs to the script, once; a test that runs apt-get races the others."""
    here = Path(__file__).resolve().parent
    offenders = [
        p.name
        for p in here.rglob("*.py")
        if p.name != Path(__file__).name and "apt-get" in p.read_text(encoding="utf-8")
    ]
    assert offenders == []
