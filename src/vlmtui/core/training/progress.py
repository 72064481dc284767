"""Writing a run's progress files from the training process (names: `core/rundir.py`).

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlmtui.core.rundir import (
    EVENTS,
    OUTPUT_LOG,
    OUTPUT_LOG_ENV,
    RUN_JSON,
    STATUS,
    TRAINER_STATES,
    read_json,
    write_json_atomic,
)


@dataclass
class RunFiles:
    """Writer for one run directory, used by the training process."""

    run_dir: Path
    _at_line_start: bool = field(default=False, init=False, repr=False)
    """Whether this writer's last append ended whole (then the file's end is not read)."""

    def __post_init__(self) -> None:
        self.run_dir = Path(self.run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)

    def write_run_info(self, info: dict[str, Any]) -> None:
        write_json_atomic(self.run_dir / RUN_JSON, info)

    def set_status(self, state: str, **extra: Any) -> None:
        assert state in TRAINER_STATES, state
        current = read_json(self.run_dir / STATUS) or {}
        current.update(extra)
        current.update(state=state, updated=time.time(), pid=os.getpid())
        write_json_atomic(self.run_dir / STATUS, current)

    def append_event(self, event: dict[str, Any]) -> None:
        line = json.dumps(event, sort_keys=True) + "\n"
        if not self._at_line_start:
            # A writer killed mid-line (or a full disk) may have left a torn last line: end
            # it first, or this event is glued onto it and both are lost to every reader.
            line = ("" if _ends_a_line(self.run_dir / EVENTS) else "\n") + line
        self._at_line_start = False
        with open(self.run_dir / EVENTS, "a", encoding="utf-8") as fh:
            fh.write(line)
        self._at_line_start = True


def _ends_a_line(path: Path) -> bool:
    """True when `path` is empty, missing, or ends with a newline."""
    try:
        with open(path, "rb") as fh:
            if fh.seek(0, os.SEEK_END) == 0:
                return True
            fh.seek(-1, os.SEEK_END)
            return fh.read(1) == b"\n"
    except OSError:
        return True


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
    """Whether stdout is `path` itself, or a pipe the launcher says leads there."""
    try:
        said = os.environ.get(OUTPUT_LOG_ENV)
        if said and os.path.samefile(said, path):
            return True
        return os.path.samestat(os.fstat(sys.stdout.fileno()), os.stat(path))
    except (OSError, ValueError, AttributeError):  # no log yet, or stdout is not a real file
        return False


@contextmanager
def output_log(run_dir: Path) -> Iterator[None]:
    """Copy this process's Python-level stdout/stderr into RUN_DIR/output.log.

    A launched run's supervisor already sends both file descriptors there (through srun's
    pipes in a multi-node job, which sets OUTPUT_LOG_ENV); a foreground `vlmtui train` would
    otherwise leave no output.log for `vlmtui logs` and the app.
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
