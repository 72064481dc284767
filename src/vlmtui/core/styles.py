"""How states look: one colour per state, shared by the CLI and the app.

Plain Rich style strings (core never imports rich): the CLI's tables and the app's widgets
look them up here, so "full" is the same colour in `vlmtui inspect --tree` and the module
tree pane.
"""

from __future__ import annotations

from collections.abc import Mapping

MODE_STYLES: Mapping[str, str] = {
    "frozen": "dim",
    "full": "bold red",
    "lora": "bold green",
    "mixed": "bold yellow",
}
"""What trains in a module or area: frozen, full, LoRA, or a mix below it."""

RUN_STATE_STYLES: Mapping[str, str] = {
    "finished": "bold green",
    "failed": "bold red",
    "stopped": "yellow",
    "unknown": "magenta",
    "training": "bold cyan",
    "queued": "cyan",
}
"""Run states; the others (pending, loading, saving, launching) use the default style."""

GPU_STATE_STYLES: Mapping[str, str] = {
    "free": "bold green",
    "busy": "yellow",
    "reserved": "bold magenta",
    "unreachable": "bold red",
    "cpu": "cyan",
}
"""`Gpu.state`, plus a host that can't be reached and the CPU device."""
