"""The Textual app. It talks only to `vlmtui.core` (through `sources.py`) and never imports
torch or transformers before a pane needs them, so the first frame comes up fast."""
