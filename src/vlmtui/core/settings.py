"""User settings: settings.toml in the user's config dir, read and validated.

settings.toml (in `config_dir()`), every key optional:

    gpu_refresh_s = 2.0     # seconds between GPU queries in the app
    runs_refresh_s = 2.0    # seconds between run registry reads in the app
    log_lines = 5000        # output lines the app keeps in a run's log view
    theme = "dark"          # "dark" or "light": the app's theme at start (ctrl+t switches)

A missing file means the defaults. An unknown key, a wrong type or an out-of-range value is a
`BadInput` naming the file and the field (exit code 2 on the command line; the app shows it
as a notification and starts with the defaults).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from vlmtui.core.errors import BadInput
from vlmtui.core.paths import config_dir
from vlmtui.core.tomlio import read_toml, unknown_keys

SETTINGS_FILE = "settings.toml"
THEMES = ("dark", "light")
MIN_REFRESH_S = 0.1
MIN_LOG_LINES = 100


@dataclass(frozen=True)
class Settings:
    """What settings.toml may set. The defaults are what the app uses without the file."""

    gpu_refresh_s: float = 2.0
    """Seconds between GPU refreshes (every host, in a worker); at least 0.1."""
    runs_refresh_s: float = 2.0
    """Seconds between reads of the run registry; at least 0.1."""
    log_lines: int = 5000
    """Lines of a run's output kept in the log view (older ones are dropped); at least 100."""
    theme: str = "dark"
    """The app's theme at start: "dark" or "light"."""


DEFAULTS = Settings()


def settings_path() -> Path:
    return config_dir() / SETTINGS_FILE


def _number(key: str, value: Any, minimum: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{key}: expected a number of seconds, got {value!r}")
    if not value >= minimum:  # also rejects nan
        raise ValueError(f"{key}: must be at least {minimum}, got {value!r}")
    return float(value)


def _log_lines(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"log_lines: expected a whole number, got {value!r}")
    if value < MIN_LOG_LINES:
        raise ValueError(f"log_lines: must be at least {MIN_LOG_LINES}, got {value}")
    return value


def _theme(value: Any) -> str:
    if value not in THEMES:
        raise ValueError(f'theme: expected "dark" or "light", got {value!r}')
    return str(value)


def parse_settings(table: dict[str, Any], path: Path) -> Settings:
    """Validate a parsed settings table (`path` only names the file in errors). Every problem
    is reported at once, one per line, so one edit fixes the file."""
    problems = unknown_keys(table, (f.name for f in fields(Settings)))
    checks: dict[str, Any] = {
        "gpu_refresh_s": lambda v: _number("gpu_refresh_s", v, MIN_REFRESH_S),
        "runs_refresh_s": lambda v: _number("runs_refresh_s", v, MIN_REFRESH_S),
        "log_lines": _log_lines,
        "theme": _theme,
    }
    values: dict[str, Any] = {}
    for key, check in checks.items():
        if key in table:
            try:
                values[key] = check(table[key])
            except ValueError as exc:
                problems.append(str(exc))
    if len(problems) == 1:
        raise BadInput(f"{path}: {problems[0]}")
    if problems:
        raise BadInput(f"{path}: {len(problems)} problems:\n  " + "\n  ".join(problems))
    return Settings(**values)


def load_settings(path: Path | None = None) -> Settings:
    """settings.toml (default: in `config_dir()`) validated; the defaults when it is absent."""
    path = path or settings_path()
    if not path.exists():
        return DEFAULTS
    return parse_settings(read_toml(path, "settings file"), path)
