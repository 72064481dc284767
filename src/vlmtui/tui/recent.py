"""The app's small memory between sessions: recently used models and datasets.

Kept in `config_dir()/tui.json`; a missing or unreadable file is an empty history.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from vlmtui.core.paths import config_dir

KEEP = 8


def _file() -> Path:
    return config_dir() / "tui.json"


def load() -> dict[str, list[str]]:
    try:
        data = json.loads(_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"models": [], "data": []}
    if not isinstance(data, dict):
        return {"models": [], "data": []}
    return {k: [str(v) for v in data.get(k, []) if isinstance(v, str)] for k in ("models", "data")}


def remember(kind: str, value: str) -> None:
    """Put `value` first in the `kind` (`models` or `data`) list and save."""
    data = load()
    items = [value, *(v for v in data.get(kind, []) if v != value)][:KEEP]
    data[kind] = items
    path = _file()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tui.json.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
    os.replace(tmp, path)
