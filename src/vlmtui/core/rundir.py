"""The run-directory contract: file names, run states, and how its JSON files are written.

A run writes these files itself, and whoever watches it (the CLI, the app, a remote probe)
reads facts from them rather than parsing log text; the run directory is the truth and the
registry an index of it. Standard library only: `fleet/onhost/hostprobe.py` keeps a
standalone copy of what it needs (it is shipped to hosts as one file), and
`tests/test_rundir.py` pins the copy equal to this.
"""

from __future__ import annotations

import errno
import json
import os
from enum import StrEnum
from pathlib import Path
from typing import Any

RUN_JSON = "run.json"
EVENTS = "events.jsonl"
STATUS = "status.json"
OUTPUT_LOG = "output.log"
OUTPUT_LOG_ENV = "VLMTUI_OUTPUT_LOG"
"""Environment variable naming the output.log a trainer's stdout already reaches through a
pipe (srun's, in a multi-node job), so the trainer does not copy its stdout there too."""
EXIT_JSON = "exit.json"
SUPERVISOR_JSON = "supervisor.json"
LAUNCH_JSON = "launch.json"
"""Written by `launch`: the registry row of the run, so a lost registry can be rebuilt."""
EVAL_JSON = "eval.json"
EVAL_PREDICTIONS = "eval_predictions.jsonl"
EVAL_IMAGES = "eval_images"
"""Where `eval RUN` draws its first images (eval.json's `pictures` lists them)."""
TRAINABLE_JSON = "trainable.json"
WEIGHTS_JSON = "weights.json"


class RunState(StrEnum):
    """A run's state: status.json's `state`, plus the registry's own `launching`/`unknown`."""

    LAUNCHING = "launching"
    """The registry row exists; the host has not confirmed the start yet."""
    QUEUED = "queued"
    """Submitted to a cluster's scheduler (Slurm), waiting for its resources or turn."""
    PENDING = "pending"
    LOADING = "loading"
    TRAINING = "training"
    SAVING = "saving"
    FINISHED = "finished"
    FAILED = "failed"
    STOPPED = "stopped"
    UNKNOWN = "unknown"
    """The host could not be asked; the run may be fine."""


# Plain strings (not enum members), so they go into SQL parameters and JSON unchanged.
FINAL_STATES: tuple[str, ...] = tuple(
    s.value for s in (RunState.FINISHED, RunState.FAILED, RunState.STOPPED)
)
ACTIVE_STATES: tuple[str, ...] = tuple(
    s.value
    for s in (
        RunState.LAUNCHING,
        RunState.PENDING,
        RunState.LOADING,
        RunState.TRAINING,
        RunState.SAVING,
        RunState.QUEUED,
    )
)
TRAINER_STATES: tuple[str, ...] = (
    *(s.value for s in (RunState.PENDING, RunState.LOADING, RunState.TRAINING, RunState.SAVING)),
    *FINAL_STATES,
)
"""The states a run writes into status.json itself."""


def is_final(state: str | None) -> bool:
    return state in FINAL_STATES


def write_json_atomic(path: Path, data: Any) -> None:
    """Replace `path` in one rename, so a reader sees the old file or the new, never half.

    On a full disk (no block for a new file) an existing file is rewritten in place instead,
    when the blocks it has hold the new text: a run's final state must land even then, and
    readers take a torn file for a missing one.
    """
    text = (json.dumps(data, indent=1, sort_keys=True) + "\n").encode("utf-8")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(text)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        room = path.stat().st_blocks * 512 if path.is_file() else 0  # allocated bytes
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT) or room < len(text):
            raise
        with open(path, "r+b") as fh:  # in the blocks it already has
            fh.write(text)
            fh.truncate()
        return
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    """Parsed JSON, or None when the file is missing or half-written."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def read_status(run_dir: Path) -> dict[str, Any] | None:
    return read_json(Path(run_dir) / STATUS)


def read_run_info(run_dir: Path) -> dict[str, Any] | None:
    return read_json(Path(run_dir) / RUN_JSON)


def parse_events(text: str) -> list[dict[str, Any]]:
    """Events from events.jsonl text; a torn last line (still being written) is skipped."""
    out = []
    for line in text.splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if isinstance(item, dict):
            out.append(item)
    return out


def read_events(run_dir: Path) -> list[dict[str, Any]]:
    try:
        return parse_events((Path(run_dir) / EVENTS).read_text(encoding="utf-8"))
    except OSError:
        return []


def last_step_event(events: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The newest event that carries a training step (phase events have none)."""
    for event in reversed(events):
        if "step" in event and "loss" in event:
            return event
    return None


def losses(events: list[dict[str, Any]]) -> tuple[tuple[int, float], ...]:
    """(step, loss) of every step event."""
    return tuple(
        (int(e["step"]), float(e["loss"]))
        for e in events
        if "step" in e and isinstance(e.get("loss"), (int, float))
    )


def elapsed_of(events: list[dict[str, Any]]) -> float | None:
    """Seconds of training at the newest step event, as the run measured it."""
    last = last_step_event(events)
    value = last.get("elapsed_s") if last else None
    return float(value) if isinstance(value, (int, float)) else None
