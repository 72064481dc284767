"""bench/gpu_memory.py without a GPU: its skip line, and its whole path on the CPU (--smoke)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "gpu_memory.py"


def bench(*args: str) -> subprocess.CompletedProcess[str]:
    # No CUDA device is visible, as on a machine without one.
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=600
    )


def test_without_cuda_it_says_why_in_one_line_and_exits_0() -> None:
    proc = bench()
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines() == [
        "gpu_memory: skipped: no CUDA device (torch.cuda.is_available() is False)"
    ]


@pytest.mark.slow
def test_smoke_runs_every_recipe_through_training_and_the_estimate() -> None:
    proc = bench("--smoke", "--steps", "1", "--tokens", "100")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line.split() for line in proc.stdout.splitlines() if line.startswith("tiny ")]
    names = [r[1] for r in rows]
    assert names == [
        "r1-llm-only", "r2-vision-only", "r4-joint", "r3-two-stage/1", "r3-two-stage/2"
    ]  # fmt: skip
    for row in rows:
        # No CUDA: no measured peaks, but an estimate in GiB.
        assert row[-5:-3] == ["n/a", "n/a"] and float(row[-3]) > 0, row
