"""Host inventory, ssh command building, and `vlmtui hosts` against a real loopback sshd."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vlmtui.cli import main
from vlmtui.core.errors import BadInput
from vlmtui.core.fleet.check import check_host
from vlmtui.core.fleet.hosts import LOCAL, get_host, hosts_file, load_hosts, remove_host, save_host
from vlmtui.core.fleet.shell import HomePath, join, quote_path, ssh_argv, ssh_base

VLMTUI = [sys.executable, "-m", "vlmtui"]


def write_hosts(text: str) -> Path:
    path = hosts_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_local_always_exists_without_a_file():
    hosts = load_hosts()
    assert list(hosts) == [LOCAL]
    assert hosts[LOCAL].is_local and hosts[LOCAL].python == sys.executable
    assert get_host(LOCAL).run("echo hi").stdout == "hi\n"


def test_hosts_toml_round_trip_and_overrides():
    save_host("gpubox", target="ann@gpu.example", port=2222, workdir="~/w", python="~/v/bin/python")
    write_hosts(
        hosts_file().read_text()
        + "\n[free]\nmax_mem_used_mib = 512\n\n[hosts.local]\nenv = { HF_HOME = '/x' }\n"
    )
    hosts = load_hosts()
    assert list(hosts) == [LOCAL, "gpubox"]
    box = hosts["gpubox"]
    assert (box.target, box.port, box.workdir, box.python) == (
        "ann@gpu.example", 2222, "~/w", "~/v/bin/python",
    )  # fmt: skip
    assert box.free_rule.max_mem_used_mib == 512
    assert hosts[LOCAL].env == (("HF_HOME", "/x"),)
    remove_host("gpubox")
    assert list(load_hosts()) == [LOCAL]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[hosts.a]\ntarget = 'h'\nbogus = 1\n", "hosts.a: unknown key 'bogus'"),
        ("[hosts.a]\nport = 22\n", "hosts.a: missing 'target'"),
        ("[hosts.a]\ntarget = 'h;touch x'\n", "invalid ssh target"),
        ("[hosts.a]\ntarget = '-oProxyCommand=x'\n", "invalid ssh target"),
        ("[hosts.\"a b\"]\ntarget = 'h'\n", "invalid host name 'a b'"),
        ("[hosts.a]\ntarget = 'h'\nport = 'x'\n", "hosts.a.port: expected a port number"),
        ("[hosts.a]\ntarget = 'h'\nenv = { 'A;B' = 'x' }\n", "invalid variable name"),
        ("[hosts.local]\ntarget = 'h'\n", "hosts.local: unknown key 'target'"),
        ("[free]\nmax_util_pct = 'x'\n", "free.max_util_pct: unexpected value"),
        ("oops = 1\n", "unknown top-level key 'oops'"),
    ],
)
def test_bad_hosts_toml_names_file_host_and_field(text, message):
    path = write_hosts(text)
    with pytest.raises(BadInput) as err:
        load_hosts()
    assert message in str(err.value) and str(path) in str(err.value)


def test_ssh_command_line_uses_batch_mode_and_a_shared_connection():
    base = ssh_base("h", port=2222, identity="/k", options=[("StrictHostKeyChecking", "no")])
    argv = ssh_argv(base, "ann@h", "echo 'a b'")
    text = " ".join(argv)
    for opt in ("BatchMode=yes", "ConnectTimeout=5", "ControlMaster=auto", "ControlPersist="):
        assert opt in text
    control = next(a for a in argv if a.startswith("ControlPath="))
    assert control.endswith("/%C") and len(control) < 80  # Unix socket paths are short
    assert argv[-3:] == ["--", "ann@h", "sh -c 'echo '\"'\"'a b'\"'\"''"]
    assert argv[argv.index("-p") : argv.index("-p") + 2] == ["-p", "2222"]


def test_quoting_keeps_tilde_and_neutralises_metacharacters(tmp_path):
    assert quote_path("~/a b") == "\"$HOME\"/'a b'"
    marker = tmp_path / "pwned"
    evil = f"x; touch {marker}; $(touch {marker}) `touch {marker}` ' \""
    res = get_host(LOCAL).run(f"printf '%s' {join([evil, HomePath('~/q')])}")
    assert res.stdout == evil + os.path.expanduser("~/q") and not marker.exists()


def test_local_timeout_kills_the_whole_group():
    start = time.monotonic()
    res = get_host(LOCAL).run("sleep 30 & sleep 30", timeout=0.5)
    assert res.transport_error == "timed out after 0.5 s"
    assert time.monotonic() - start < 5


@pytest.mark.parametrize(
    "argv",
    [
        ["hosts", "check", "a;touch {m}"],
        ["hosts", "check", "$(touch {m})"],
        ["hosts", "check", "`touch {m}`"],
        ["gpus", "--host", "a b'\"; touch {m}"],
        ["hosts", "add", "ok", "h;touch {m}"],
        ["hosts", "add", "x$(touch {m})", "h"],
    ],
)
def test_cli_refuses_metacharacters_in_host_names(argv, tmp_path, capsys):
    marker = tmp_path / "pwned"
    code = main([a.replace("{m}", str(marker)) for a in argv])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("vlmtui: ") and "invalid" in err
    assert err.count("\n") == 1 and not marker.exists()


def test_cli_hosts_json_lists_local_and_configured(capsys):
    save_host("box", target="box", workdir="/w")
    assert main(["hosts", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == ["local", "box"]
    assert rows[1]["kind"] == "ssh" and rows[1]["workdir"] == "/w"


def test_check_local(capsys):
    assert main(["hosts", "check", "local", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["reachable"] and out["vlmtui_version"]
    assert out["gpus"]["devices"][-1] == "cpu"


@pytest.mark.ssh
def test_unreachable_host_reports_error_within_timeout(sshd_server):
    from sshd import free_port

    save_host(
        "down",
        target="nobody@127.0.0.1",
        port=free_port(),
        connect_timeout=2,
        ssh_options={"StrictHostKeyChecking": "no", "UserKnownHostsFile": "/dev/null"},
    )
    start = time.monotonic()
    result = check_host(get_host("down"))
    assert not result.reachable and "Connection refused" in (result.error or "")
    assert time.monotonic() - start < 5


@pytest.mark.ssh
def test_check_over_ssh(ssh_host, capsys):
    assert main(["hosts", "check", ssh_host.name, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["reachable"] and out["error"] is None
    from vlmtui import __version__

    assert out["vlmtui_version"] == __version__
    # The stand-in nvidia-smi on the sshd host's PATH (no GPU on this machine), via the
    # remote `vlmtui gpus --local --json`.
    assert [g["index"] for g in out["gpus"]["gpus"]] == [0, 1, 2, 3]
    assert out["gpus"]["source"] == "vlmtui"
    assert out["latency_s"] < 1.0


@pytest.mark.ssh
def test_shared_connection_is_reused(ssh_host):
    host = get_host(ssh_host.name)
    assert host.run("true").ok
    pid = host.master_pid()
    assert pid
    times = []
    for _ in range(3):
        res = host.run("echo $$")
        assert res.ok
        times.append(res.elapsed_s)
    assert host.master_pid() == pid
    assert min(times) < 0.3


@pytest.mark.ssh
def test_remote_script_sees_metacharacters_as_data(ssh_host, tmp_path):
    marker = tmp_path / "pwned"
    evil = f"a'b\"c; touch {marker}; $(touch {marker}) `touch {marker}` |&<>"
    res = get_host(ssh_host.name).run(f"printf '%s' {join([evil])}")
    assert res.ok and res.stdout == evil and not marker.exists()


@pytest.mark.ssh
def test_run_survives_missing_remote_login_shell_quirks(ssh_host):
    # Scripts always run under `sh -c`, whatever the remote user's login shell is.
    res = get_host(ssh_host.name).run('echo ${0##*/}; [ -n "$PATH" ] && echo ok')
    assert res.stdout.split() == ["sh", "ok"]


def test_hosts_add_and_remove_cli(capsys):
    assert main(["hosts", "add", "box", "ann@box", "--port", "2200", "--python", "~/v/py"]) == 0
    assert load_hosts()["box"].port == 2200
    assert main(["hosts", "remove", "box"]) == 0
    assert main(["hosts", "remove", "box"]) == 2
    assert main(["hosts", "add", "local", "x"]) == 2


def test_vlmtui_help_does_not_import_torch():
    code = (
        "import sys; from vlmtui.cli import build_parser; build_parser();"
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
