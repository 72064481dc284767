"""`vlmtui train` against a plain TRL SFTTrainer script: steady-state time per step.

Both train r1-llm-only (4-bit NF4 QLoRA) on the same tiny Qwen2-VL, synthetic data and step
count, alternating (and which goes first), in this one run. Steady state skips the first
WARMUP steps (allocator, first batches). Target: vlmtui <= 1.05x the plain script's time
per step.
Usage: python bench/train_overhead.py [--steps 120] [--repeats 6]  (shorter runs are noise-bound
here: step times on a shared 2-core machine vary by about 10 %)
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

WARMUP = 10
HERE = Path(__file__).resolve().parent


def per_step(times: list[float]) -> float:
    """Median wall time between consecutive steady-state steps (robust to one-off stalls)."""
    steady = times[WARMUP:]
    return statistics.median(b - a for a, b in itertools.pairwise(steady))


def run_vlmtui(model: Path, data: Path, out: Path, steps: int) -> float:
    cmd = [sys.executable, "-m", "vlmtui", "train", "--recipe", "r1-llm-only",
           "--model", str(model), "--data", str(data), "--output", str(out),
           "--max-steps", str(steps), "--gpu", "cpu"]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True)
    events = [json.loads(x) for x in (out / "events.jsonl").read_text().splitlines()]
    return per_step([e["time"] for e in events if "loss" in e])


def run_plain(model: Path, data: Path, out: Path, steps: int) -> float:
    cmd = [sys.executable, str(HERE / "plain_trl_train.py"), str(model), str(data), str(out),
           str(steps)]  # fmt: skip
    proc = subprocess.run(cmd, check=True, capture_output=True, text=True)
    line = [x for x in proc.stdout.splitlines() if x.startswith("{")][-1]
    return per_step(json.loads(line)["step_times"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--repeats", type=int, default=6)
    args = parser.parse_args()
    from vlmtui.core.data.shapes import make_shapes_dataset
    from vlmtui.core.model.demo import make_demo_model

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = make_demo_model(root / "model", "qwen2-vl")
        data = make_shapes_dataset(root / "data", n=32, seed=0)
        ours, plain = [], []
        for i in range(args.repeats):
            # Alternate which goes first, so a machine warming up or slowing down over the
            # run does not favour one side.
            pair = [
                lambda i=i: plain.append(run_plain(model, data, root / f"plain{i}", args.steps)),
                lambda i=i: ours.append(run_vlmtui(model, data, root / f"ours{i}", args.steps)),
            ]
            for job in pair if i % 2 == 0 else pair[::-1]:
                job()
    p, o = statistics.median(plain), statistics.median(ours)
    print(f"plain TRL script : {1 / p:7.2f} steps/s  ({p * 1000:.1f} ms/step)")
    print(f"vlmtui train     : {1 / o:7.2f} steps/s  ({o * 1000:.1f} ms/step)")
    print(f"ratio vlmtui/plain time per step: {o / p:.3f}  (target <= 1.05)")
    print(f"(steps {args.steps}, steady state after {WARMUP}, median of {args.repeats} runs each)")


if __name__ == "__main__":
    main()
