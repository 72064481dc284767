"""A compact footer that keeps the help key in sight at any width.

Textual's footer lists the focused pane's keys, then the app's, and cuts whatever does not
fit at the right edge; at 80 columns that hid Dispatch, Help and Quit. This one is compact,
shows the pane keys 1–4 as one group, and docks the help key at the right edge, where the
command palette key would be (ctrl+p still works and the help lists it).
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.widgets import Footer
from textual.widgets._footer import FooterKey

HELP_ACTION = "help"


class KeysFooter(Footer):
    DEFAULT_CSS = """
    KeysFooter.-compact FooterLabel {
        margin: 0 1 0 0;
    }
    KeysFooter FooterKey.-help {
        dock: right;
        padding-right: 0;
        border-left: vkey $foreground 20%;
    }
    """

    def __init__(self) -> None:
        super().__init__(compact=True, show_command_palette=False)

    def compose(self) -> ComposeResult:
        if not self._bindings_ready:
            return
        yield from (w for w in super().compose() if not _is_help(w))
        for _node, binding, enabled, tooltip in self.screen.active_bindings.values():
            if binding.show and binding.action == HELP_ACTION:
                yield FooterKey(
                    binding.key,
                    self.app.get_key_display(binding),
                    binding.description,
                    binding.action,
                    classes="-help",
                    disabled=not enabled,
                    tooltip=tooltip,
                ).data_bind(compact=Footer.compact)
                return


def _is_help(widget: object) -> bool:
    return isinstance(widget, FooterKey) and widget.action == HELP_ACTION
