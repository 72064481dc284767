"""Bad input at the command line, found by probing every command (the developers' guide: one
line naming the file, field or value, exit code 2, no traceback, no half-written run). Each
case runs the real `vlmtui` process with a private VLMTUI_HOME (conftest) and asserts the
exact stderr line and exit code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BAD_UTF8 = b"\xff\xfe[recipe.a]\n"


def vlmtui(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [sys.executable, "-m", "vlmtui", *args],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **(env or {})},
    )


def refused(proc: subprocess.CompletedProcess[str], line: str) -> None:
    assert (proc.returncode, proc.stderr) == (2, f"vlmtui: {line}\n"), proc.stdout


# ------------------------------------------------------------------------------ recipes

RECIPE_CASES = {
    "not-utf8": (BAD_UTF8, "not a text file (byte 0xff at offset 0 is not UTF-8)"),
    "extends-list": (
        b"[recipe.a]\nextends = ['r1-llm-only']\n",
        "recipe 'a': extends: expected a recipe name, got ['r1-llm-only']",
    ),
    "lr-nan": (
        b"[recipe.a]\nextends = 'r1-llm-only'\nlearning_rate = nan\n",
        "recipe 'a': learning_rate: expected a finite number, got nan",
    ),
    "lr-inf": (
        b"[recipe.a]\nextends = 'r1-llm-only'\nlearning_rate = inf\n",
        "recipe 'a': learning_rate: expected a finite number, got inf",
    ),
    "area-lr-nan": (
        b"[recipe.a]\nextends = 'r1-llm-only'\nllm = { mode = 'lora', learning_rate = nan }\n",
        "recipe 'a': llm.learning_rate: expected a finite number, got nan",
    ),
    "huge-steps": (
        b"[recipe.a]\nextends = 'r1-llm-only'\nmax_steps = 9223372036854775807\n",
        "recipe 'a': max_steps: must be at most 2147483647, got 9223372036854775807",
    ),
    "dropout-1": (
        b"[recipe.a]\nextends = 'r1-llm-only'\nlora = { dropout = 1.0 }\n",
        "recipe 'a': lora.dropout: must be less than 1, got 1.0",
    ),
    "warmup-3": (
        b"[recipe.a]\nextends = 'r1-llm-only'\nwarmup_ratio = 3.0\n",
        "recipe 'a': warmup_ratio: must be less than 1, got 3.0",
    ),
}


@pytest.mark.parametrize("case", sorted(RECIPE_CASES))
def test_bad_recipe_file_is_refused(tmp_path: Path, case: str) -> None:
    content, message = RECIPE_CASES[case]
    path = tmp_path / f"{case}.toml"
    path.write_bytes(content)
    refused(vlmtui("recipes", "--recipes", str(path)), f"{path}: {message}")


def test_non_utf8_file_in_the_recipes_folder_is_skipped(_isolated_vlmtui_home: Path) -> None:
    folder = _isolated_vlmtui_home / "config" / "recipes"
    folder.mkdir(parents=True)
    (folder / "bin.toml").write_bytes(BAD_UTF8)
    proc = vlmtui("recipes", "--json")
    assert proc.returncode == 0
    assert proc.stderr == (
        f"vlmtui: warning: {folder / 'bin.toml'}: not a text file (byte 0xff at offset 0 is "
        "not UTF-8) (skipped this file)\n"
    )


# ------------------------------------------------------------------------ hosts.toml, gpus

HOSTS_CASES = {
    "not-utf8": (b"\xff\xfe[hosts.a]\n", "not a text file (byte 0xff at offset 0 is not UTF-8)"),
    "not-toml": (
        b"[hosts.a\n",
        "not valid TOML (Expected ']' at the end of a table declaration (at line 1, column 9))",
    ),
    "hosts-list": (b"hosts = [1]\n", "'hosts' must be a table of [hosts.NAME] tables"),
    "port-float": (
        b"[hosts.a]\ntarget = 'h'\nport = 22.5\n",
        "hosts.a.port: expected a port number 1-65535, got 22.5",
    ),
    "port-big": (
        b"[hosts.a]\ntarget = 'h'\nport = 70000\n",
        "hosts.a.port: expected a port number 1-65535, got 70000",
    ),
    "timeout-nan": (
        b"[hosts.a]\ntarget = 'h'\nconnect_timeout = nan\n",
        "hosts.a.connect_timeout: expected a positive number, got nan",
    ),
    "timeout-inf": (
        b"[hosts.a]\ntarget = 'h'\ntimeout = inf\n",
        "hosts.a.timeout: expected a positive number, got inf",
    ),
}


@pytest.mark.parametrize("case", sorted(HOSTS_CASES))
def test_bad_hosts_toml_is_refused_by_every_hosts_command(
    _isolated_vlmtui_home: Path, case: str
) -> None:
    """`hosts` and `hosts add` refuse it, and so does `hosts remove` when the file cannot be
    parsed (a bad field is what `remove` is for); the file stays as it was."""
    content, message = HOSTS_CASES[case]
    path = _isolated_vlmtui_home / "config" / "hosts.toml"
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    commands = [["hosts"], ["hosts", "add", "box", "u@h"]]
    if "." not in message.split(":")[0]:
        commands.append(["hosts", "remove", "a"])
    for args in commands:
        refused(vlmtui(*args), f"{path}: {message}")
    assert path.read_bytes() == content


def test_hosts_toml_that_is_a_directory(_isolated_vlmtui_home: Path) -> None:
    path = _isolated_vlmtui_home / "config" / "hosts.toml"
    path.mkdir(parents=True)
    refused(vlmtui("hosts", "add", "b", "u@h"), f"{path}: cannot read hosts file (Is a directory)")


def test_hosts_add_does_not_write_over_a_broken_host(_isolated_vlmtui_home: Path) -> None:
    path = _isolated_vlmtui_home / "config" / "hosts.toml"
    path.parent.mkdir(parents=True)
    path.write_text("[hosts.a]\ntarget = 'h'\nport = 0\n")
    refused(
        vlmtui("hosts", "add", "box", "u@h"), f"{path}: hosts.a.port: expected a port number "
        "1-65535, got 0",
    )  # fmt: skip
    assert vlmtui("hosts", "add", "a", "h", "--port", "22").returncode == 0  # the fix works
    assert "port = 22" in path.read_text()


# `{hosts}` stands for the private home's hosts.toml.
NUMBER_CASES = [
    (["hosts", "add", "box", "u@h", "--port", "70000"],
     "{hosts}: hosts.box.port: expected a port number 1-65535, got 70000"),
    (["gpus", "--timeout", "nan"], "--timeout: expected a positive number of seconds, got nan"),
    (["gpus", "--timeout", "0"], "--timeout: expected a positive number of seconds, got 0.0"),
    (["stop", "x", "--grace", "nan"], "--grace: expected 0 or more seconds, got nan"),
    (["stop", "x", "--grace", "-1"], "--grace: expected 0 or more seconds, got -1.0"),
]  # fmt: skip


@pytest.mark.parametrize(("args", "line"), NUMBER_CASES)
def test_bad_numbers_for_hosts_gpus_and_stop(
    _isolated_vlmtui_home: Path, args: list[str], line: str
) -> None:
    hosts = _isolated_vlmtui_home / "config" / "hosts.toml"
    refused(vlmtui(*args), line.format(hosts=hosts))
    assert not hosts.exists()
