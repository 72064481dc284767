"""Module tree marking in the app, first and second time, and quitting after it.

Each look runs in a fresh interpreter (as a user restarting the app): the first marks the
tiny demo model for r1-llm-only with an empty inspection cache (the inspection child imports
torch, builds the meta model, applies PEFT on meta), the second finds the marking in the
on-disk cache; a third quits one second into a first marking. Prints seconds from the
tree request to the tree shown, and from `exit()` to the app being gone. Targets: second
≤ 0.3× first, quit ≤ 0.5 s.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = """
import asyncio, json, sys, time
sys.path.insert(0, sys.argv[2])
from tui_fakes import fake_sources, wait_for
from vlmtui.tui.app import VlmtuiApp
from vlmtui.tui.widgets.tree_pane import TreePane

async def main():
    midway = sys.argv[3] == "midway"
    sources = fake_sources(inspection_worker=True)
    app = VlmtuiApp(sources, model=sys.argv[1], data="/data/shapes")
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: bool(app.recipes))
        pane = app.query_one(TreePane)
        t0 = time.perf_counter()
        await pilot.press("3")
        if midway:  # quit while the child is still importing torch / marking
            await pilot.pause(1.0)
        else:
            await wait_for(pilot, lambda: pane.view is not None, timeout=300)
        mark_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        app.exit()
    quit_s = time.perf_counter() - t1
    print(json.dumps({"mark_s": mark_s, "quit_s": quit_s, "torch": "torch" in sys.modules}))

asyncio.run(main())
"""


def look(model: Path, env: dict[str, str], mode: str = "full") -> dict[str, float]:
    tests = str(Path(__file__).resolve().parents[1] / "tests" / "tui")
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(model), tests, mode],
        capture_output=True, text=True, env=env, check=True, timeout=600,
    ).stdout  # fmt: skip
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    from vlmtui.core.model.demo import make_demo_model

    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "VLMTUI_HOME": home}
        model = make_demo_model(Path(home) / "model", "qwen2-vl")
        first = look(model, env)
        second = look(model, env)
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "VLMTUI_HOME": home}
        model = make_demo_model(Path(home) / "model", "qwen2-vl")
        midway = look(model, env, "midway")
    ratio = second["mark_s"] / first["mark_s"]
    print(f"first marking  {first['mark_s']:.2f} s (torch imported: {first['torch']})")
    print(f"second marking {second['mark_s']:.2f} s (torch imported: {second['torch']})")
    print(f"second/first   {ratio:.2f} (target ≤ 0.3)")
    print(f"quit           {first['quit_s']:.2f} s after the first, "
          f"{second['quit_s']:.2f} s after the second, {midway['quit_s']:.2f} s in the middle "
          "of a first marking (target ≤ 0.5)")  # fmt: skip


if __name__ == "__main__":
    main()
