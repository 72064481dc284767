"""Where vlmtui keeps its files: config (recipes, hosts), data (run registry, demo assets), runs.

`VLMTUI_HOME` puts everything under one folder; tests and the embedded demo use it so they
never touch the user's real directories.
"""

from __future__ import annotations

import os
from pathlib import Path

from vlmtui.core.errors import BadInput


def _home() -> Path | None:
    value = os.environ.get("VLMTUI_HOME")
    return Path(value).expanduser() if value else None


def config_dir() -> Path:
    home = _home()
    if home:
        return home / "config"
    from platformdirs import user_config_dir

    return Path(user_config_dir("vlmtui"))


def data_dir() -> Path:
    home = _home()
    if home:
        return home / "data"
    from platformdirs import user_data_dir

    return Path(user_data_dir("vlmtui"))


def runs_dir() -> Path:
    """Default parent folder of run directories on this machine."""
    return data_dir() / "runs"


def demo_dir() -> Path:
    """The embedded default's tiny model and synthetic dataset, generated on first use."""
    return data_dir() / "demo"


def check_home() -> None:
    """BadInput when the config or data folder cannot be one: it, or the nearest existing
    path above it, is a file (a VLMTUI_HOME pointing at one), so no command gets as far as a
    traceback from the first mkdir."""
    for folder in (config_dir(), data_dir()):
        check_folder("VLMTUI_HOME" if _home() else str(folder), folder)


def check_folder(label: str, folder: Path) -> None:
    """BadInput (`label: PATH is not a directory`) unless `folder` is a directory or can be
    made one: the nearest existing path at or above it must be a directory."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise BadInput(f"{label}: {existing} is not a directory")
