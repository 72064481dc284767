"""The run directory's files: run.json, events.jsonl, status.json, output.log.

A run writes these itself, so whoever watches it (the TUI, `vlmtui runs`, a remote `cat`)
reads facts rather than parsing log text, and nothing is lost when the watcher dies.
status.json is replaced atomically; events.jsonl is append-only, one JSON object a line.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RUN_JSON = "run.json"
EVENTS = "events.jsonl"
STATUS = "status.json"
OUTPUT_LOG = "output.log"

STATES = ("pending", "loading", "training", "saving", "finished", "failed", "stopped")
FINAL_STATES = ("finished", "failed", "stopped")


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    """Parsed JSON, or None when the file is missing or half-written."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


@dataclass
class RunFiles:
    """Writer for one run directory, used by the training process."""

    run_dir: Path

    def __post_init__(self) -> None:
        self.run_dir = Path(self.run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)

    def write_run_info(self, info: dict[str, Any]) -> None:
        write_json_atomic(self.run_dir / RUN_JSON, info)

    def set_status(self, state: str, **extra: Any) -> None:
        assert state in STATES, state
        current = read_json(self.run_dir / STATUS) or {}
        current.update(extra)
        current.update(state=state, updated=time.time(), pid=os.getpid())
        write_json_atomic(self.run_dir / STATUS, current)

    def append_event(self, event: dict[str, Any]) -> None:
        with open(self.run_dir / EVENTS, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(event, sort_keys=True) + "\n")


def package_versions() -> dict[str, str]:
    """The versions run.json records, so a run can be reproduced and a resume checked."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("vlmtui", "torch", "transformers", "peft", "trl", "bitsandbytes", "accelerate"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


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


class _Tee:
    """A text stream that writes to the terminal and to output.log."""

    def __init__(self, stream: Any, log: Any) -> None:
        self._stream, self._log = stream, log

    def write(self, text: str) -> int:
        self._log.write(text)
        return self._stream.write(text)

    def flush(self) -> None:
        self._log.flush()
        self._stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _stdout_is(path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(sys.stdout.fileno()), os.stat(path))
    except (OSError, ValueError, AttributeError):  # no log yet, or stdout is not a real file
        return False


@contextmanager
def output_log(run_dir: Path) -> Iterator[None]:
    """Copy this process's Python-level stdout/stderr into RUN_DIR/output.log.

    A launched run's supervisor already sends both file descriptors there; a foreground
    `vlmtui train` would otherwise leave no output.log for `vlmtui logs` and the app.
    """
    path = Path(run_dir) / OUTPUT_LOG
    if _stdout_is(path):
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8", buffering=1) as log:
        out, err = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = _Tee(out, log), _Tee(err, log)
        try:
            yield
        finally:
            sys.stdout, sys.stderr = out, err
