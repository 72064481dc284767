"""Fault suite, bad input at the CLI (issue 11 items 11, 12, 16): each reproduced through the
real `vlmtui` process, asserting the exact one line on stderr and the exit code."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from trainhelp import train_argv


def vlmtui(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vlmtui", *args], capture_output=True, text=True, check=False
    )


def train(model: Path, data: Path, output: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return vlmtui(
        "train", "--recipe", "r2-vision-only", "--model", str(model), "--data", str(data),
        "--output", output, "--max-steps", "1", *extra,
    )  # fmt: skip


@pytest.mark.parametrize("args", [["recipes", "--json"], ["runs", "--json"]])
def test_closed_pipe_exits_quietly(args: list[str]) -> None:
    """`vlmtui recipes --json | head -1`: the reader is gone before vlmtui writes."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "vlmtui", *args],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            check=False,
        )
    finally:
        os.close(write_end)
    assert (proc.returncode, proc.stderr) == (128 + signal.SIGPIPE, "")


def test_output_paths_that_cannot_be_a_run_directory(
    qwen2_vl_dir: Path, shapes_data_dir: Path, tmp_path: Path
) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    cases = {
        str(a_file): f"--output: {a_file} is a file, not a directory",
        str(a_file / "run"): f"--output: {a_file} is a file, so {a_file}/run cannot be created "
        "under it",
        "/proc/x": "--output: /proc/x is on the kernel's /proc filesystem",
        "/sys/x": "--output: /sys/x is on the kernel's /sys filesystem",
        str(shapes_data_dir): f"--output: {shapes_data_dir} is the --data path {shapes_data_dir}; "
        "use a new folder",
        str(qwen2_vl_dir): f"--output: {qwen2_vl_dir} is the --model path {qwen2_vl_dir}; "
        "use a new folder",
    }
    for output, message in cases.items():
        proc = train(qwen2_vl_dir, shapes_data_dir, output)
        assert (proc.returncode, proc.stderr) == (2, f"vlmtui: {message}\n"), output
    assert not (qwen2_vl_dir / "status.json").exists()
    assert not (shapes_data_dir / "status.json").exists()


def test_resume_into_an_empty_directory_is_refused(
    qwen2_vl_dir: Path, shapes_data_dir: Path, tmp_path: Path
) -> None:
    for output in (tmp_path / "empty", tmp_path / "missing"):
        if output.name == "empty":
            output.mkdir()
        proc = train(qwen2_vl_dir, shapes_data_dir, str(output), "--resume")
        assert (proc.returncode, proc.stderr) == (
            2,
            f"vlmtui: --resume: {output} holds no run to resume (no status.json)\n",
        )
        assert not (output / "status.json").exists()


@pytest.mark.slow
def test_eval_of_a_stopped_run_points_to_resume(
    qwen2_vl_dir: Path, shapes_data_dir: Path, tmp_path: Path
) -> None:
    import json
    import time

    out = tmp_path / "stopme"
    argv = train_argv(qwen2_vl_dir, shapes_data_dir, out, "--max-steps", "100000")
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    events = out / "events.jsonl"
    deadline = time.monotonic() + 180
    while '"loss"' not in (events.read_text() if events.exists() else ""):
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            pytest.fail("training never logged a step")
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 128 + signal.SIGTERM
    step = [json.loads(x) for x in events.read_text().splitlines() if '"loss"' in x][-1]["step"]

    result = vlmtui("eval", str(out), "--data", str(shapes_data_dir))
    assert (result.returncode, result.stderr) == (
        2,
        f"vlmtui: {out}: no final weights: the run stopped at step {step}; finish it with "
        "`vlmtui train --resume` (same recipe, model and data, this directory as --output), "
        "then evaluate it\n",
    )
