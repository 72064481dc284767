"""The help screen: what each pane shows, the colours, and every key."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Markdown, Static

HELP = """\
# vlmtui

Fine-tune Qwen2-VL-family models for object detection. Runs keep going when you quit.

## Panes

| key | pane | shows |
|---|---|---|
| `1` | Recipes | every recipe, its per-area modes; the model and data the app works on |
| `2` | GPUs | every host × GPU: utilisation, memory, history, processes, free/busy/reserved |
| `3` | Module tree | the model's modules coloured by what the recipe trains |
| `4` | Runs | all runs; the highlighted run's output, loss curve, eval metrics and pictures |

## Keys

| key | does |
|---|---|
| `d` | dispatch the marked (or highlighted) recipes: pick devices, check, launch |
| `space` | mark / unmark a recipe (Recipes) or a run for the charts (Runs) |
| `c` | charts in place of the log: loss of the marked runs, eval metrics (Runs) |
| `m` | smooth the loss curves on / off (Runs) |
| `p` | eval pictures (gold and predicted boxes) in place of the log (Runs) |
| `[` `]` | previous / next picture (Runs) |
| `c` | copy the recipe into a user TOML file to edit (Recipes) |
| `t` | show the recipe in the module tree (Recipes) |
| `/` | search the log (Runs) / filter modules by regex (Module tree) |
| `n` `N` | next / previous log match |
| `f` | follow the log on / off (scrolling up stops following) |
| `s` | stop the highlighted run (asks first) |
| `0`–`9` `c` `a` | in the dispatch dialog: toggle that GPU, the CPU, next free |
| `esc` | leave a text field; close a dialog |
| `r` | refresh now: GPUs, runs (a new eval too), recipes (an edited TOML) |
| `ctrl+t` | light / dark theme |
| `ctrl+p` | command palette |
| `?` `f1` | this help |
| `q` | quit (runs keep going) |

## Colours

frozen (dim) · **full** (red) · **lora** (green) · **mixed** (yellow)

GPU states: **free** (green) · busy (yellow) · **reserved** by a vlmtui run (magenta) ·
**unreachable** (red, with the error).
"""


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "dismiss", "Close"),
        Binding("q", "dismiss", "Close", show=False),
        Binding("question_mark", "dismiss", "Close", show=False),
    ]

    def compose(self) -> ComposeResult:
        with Vertical(id="help", classes="dialog"):
            yield Static("Help — esc to close", classes="dialog--title")
            with VerticalScroll(id="help-scroll"):
                yield Markdown(HELP)

    def on_mount(self) -> None:
        # The scroll area takes the keys at once, so Down / PgDn scroll without a Tab first.
        self.query_one("#help-scroll", VerticalScroll).focus()

    def action_dismiss(self, result: None = None) -> None:  # type: ignore[override]
        self.dismiss(None)
