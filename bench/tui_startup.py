"""First frame of the vlmtui app vs a bare Textual app, each in a fresh interpreter.

Prints seconds from process start to the first frame (median of N) and the ratio. The app
must reach its first frame within 1 s and without importing torch.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time

N = 5
BARE = """
from textual.app import App
from textual.widgets import Footer, Header
class Bare(App):
    def compose(self):
        yield Header(); yield Footer()
    def on_mount(self):
        self.call_after_refresh(self.frame)
    def frame(self):
        import sys, time
        print("FRAME=" + repr(time.time()), file=sys.stderr)
        self.exit()
Bare().run(headless=True, size=(80, 24))
import sys; sys.stderr.write("TORCH=%s" % ("torch" in sys.modules))
"""
VLMTUI = """
from vlmtui.tui.app import VlmtuiApp
class Timed(VlmtuiApp):
    def on_mount(self):
        super().on_mount()
        self.call_after_refresh(self.frame)
    def frame(self):
        import sys, time
        print("FRAME=" + repr(time.time()), file=sys.stderr)
        self.exit()
Timed().run(headless=True, size=(80, 24))
import sys; sys.stderr.write("TORCH=%s" % ("torch" in sys.modules))
"""


def measure(code: str, env: dict[str, str]) -> tuple[float, str]:
    """(seconds from spawning the interpreter to the first frame, torch imported?)."""
    start = time.time()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    frame = float(out.stderr.split("FRAME=", 1)[1].split()[0])
    return frame - start, out.stderr.rpartition("TORCH=")[2].strip()


def main() -> None:
    with tempfile.TemporaryDirectory() as home:
        env = dict(os.environ, VLMTUI_HOME=home)
        bare = [measure(BARE, env)[0] for _ in range(N)]
        runs = [measure(VLMTUI, env) for _ in range(N)]
    b, v = statistics.median(bare), statistics.median(t for t, _ in runs)
    torch = {flag for _, flag in runs}
    print(f"bare textual app, first frame: {b:.3f} s (median of {N})")
    print(f"vlmtui app, first frame:       {v:.3f} s (median of {N})")
    print(f"ratio vlmtui / bare:           {v / b:.2f}x")
    print(f"torch imported by first frame: {torch}")


if __name__ == "__main__":
    main()
