"""Checking `train --output` before anything is loaded, so a bad path is one line, exit 2.

A run directory receives checkpoints that are rotated (deleted) and weights that replace
older ones, so it must be a real, writable directory of its own: not a file, not under a
file, not a kernel filesystem, and never the dataset or the model it reads.
"""

from __future__ import annotations

import os
from pathlib import Path

from vlmtui.core.errors import BadInput
from vlmtui.core.rundir import RUN_JSON, STATUS, read_status

# Kernel filesystems: writable-looking to root, but no place for files.
VIRTUAL_ROOTS = (Path("/proc"), Path("/sys"))


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def check_output(output: Path, *, model: Path, data: Path, resume: bool) -> None:
    """Refuse an unusable run directory (BadInput naming `--output` and why)."""
    target = output.absolute().resolve()
    for root in VIRTUAL_ROOTS:
        if _inside(target, root):
            raise BadInput(f"--output: {output} is on the kernel's {root} filesystem")
    if target.exists() and not target.is_dir():
        raise BadInput(f"--output: {output} is a file, not a directory")
    existing = next(p for p in (target, *target.parents) if p.exists())
    if not existing.is_dir():
        raise BadInput(f"--output: {existing} is a file, so {output} cannot be created under it")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise BadInput(f"--output: {existing} is not writable")
    for flag, other in (("--model", model), ("--data", data)):
        source = other.absolute().resolve()
        if _inside(source, target):
            what = "is" if source == target else "contains"
            raise BadInput(f"--output: {output} {what} the {flag} path {other}; use a new folder")
    if resume and not ((target / STATUS).is_file() or (target / RUN_JSON).is_file()):
        raise BadInput(f"--resume: {output} holds no run to resume (no {STATUS})")
    if not resume and (target / STATUS).exists():
        state = (read_status(target) or {}).get("state")
        if state not in (None, "pending"):
            raise BadInput(f"--output: {output} already holds a run ({state}); use --resume")


def make_output(output: Path) -> None:
    """Create the run directory; a failure (read-only, permissions) is bad input."""
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BadInput(f"--output: cannot create {output}: {exc.strerror}") from None
