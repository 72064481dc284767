"""The TrainerCallback that links a running Trainer to the run directory.

It is the only place the training loop reports out: one events.jsonl line per logged step,
and a stop signal recorded by `StopState` turned into a save-then-stop.
"""

from __future__ import annotations

import time
from typing import Any

from vlmtui.core.training.process import StopState
from vlmtui.core.training.progress import RunFiles


def _print_step(step: int, max_steps: int, logs: dict[str, Any], elapsed_s: float) -> None:
    """`step 3/10  loss 6.1950  lr 2e-04  0:04` instead of the Trainer's raw log dicts."""
    from vlmtui.core.textfmt import clock

    parts = [f"step {step}/{max_steps}", f"loss {logs['loss']:.4f}"]
    if isinstance(logs.get("learning_rate"), (int, float)):
        parts.append(f"lr {logs['learning_rate']:.0e}")
    parts.append(clock(elapsed_s))
    print("  ".join(parts), flush=True)


def progress_callback(files: RunFiles | None, stage: int, stop: StopState) -> Any:
    from transformers import TrainerCallback

    class ProgressCallback(TrainerCallback):
        """Writes one events.jsonl line per logged step; turns a stop signal into a save."""

        def __init__(self) -> None:
            self.started = time.monotonic()

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
            if files is None or not state.is_world_process_zero or not logs:
                return
            if "loss" in logs:
                _print_step(
                    state.global_step, state.max_steps, logs, time.monotonic() - self.started
                )
                files.append_event(
                    {
                        "stage": stage,
                        "step": state.global_step,
                        "max_steps": state.max_steps,
                        "loss": logs.get("loss"),
                        "learning_rate": logs.get("learning_rate"),
                        "grad_norm": logs.get("grad_norm"),
                        "epoch": logs.get("epoch"),
                        "elapsed_s": round(time.monotonic() - self.started, 3),
                        "time": time.time(),
                    }
                )
            elif "train_runtime" in logs:
                files.append_event({"stage": stage, "summary": dict(logs), "time": time.time()})

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if stop.signum is not None:
                control.should_save = True
                control.should_training_stop = True

    return ProgressCallback()
