"""Reading and writing the user's TOML files (recipes, hosts.toml, settings.toml).

One check for unknown keys, so every file reports them the same way (naming the file, the
table and the keys it knows), and one writer of TOML values, since `tomllib` only reads.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from vlmtui.core.errors import BadInput

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def read_toml(path: Path, what: str) -> dict[str, Any]:
    """The parsed TOML file, or BadInput naming it: unreadable (a directory, no permission),
    not UTF-8, or not TOML. `what` says which file it is (`recipe file`, `hosts file`)."""
    if path.exists() and not path.is_file() and not path.is_dir():
        # A FIFO would block the read forever (every command that lists recipes would hang);
        # a device could be endless.
        raise BadInput(f"{path}: cannot read {what} (not a regular file)")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise BadInput(f"{path}: cannot read {what} ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise BadInput(
            f"{path}: not a text file (byte {exc.object[exc.start]:#04x} at offset "
            f"{exc.start} is not UTF-8)"
        ) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise BadInput(f"{path}: not valid TOML ({exc})") from None


def unknown_keys(data: Mapping[str, Any], known: Iterable[str]) -> list[str]:
    """One problem line per key of `data` that is not in `known`, naming the keys known."""
    allowed = sorted(known)
    return [
        f"unknown key {key!r} (known: {', '.join(allowed)})"
        for key in sorted(set(data) - set(allowed))
    ]


def check_keys(where: str, data: Mapping[str, Any], known: Iterable[str]) -> None:
    """BadInput naming the first unknown key of `data` and the keys `where` accepts."""
    problems = unknown_keys(data, known)
    if problems:
        raise BadInput(f"{where}: {problems[0]}")


def toml_key(key: str) -> str:
    return key if _BARE_KEY.match(key) else json.dumps(key)


def toml_value(value: Any) -> str:
    """A TOML value: booleans, numbers, strings, lists and inline tables."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        items = ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items())
        return "{ " + items + " }"
    raise TypeError(f"cannot write {value!r} as TOML")


def write_text_atomic(path: Path, text: str) -> None:
    """Replace `path` in one rename: a reader (or a crash) never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
