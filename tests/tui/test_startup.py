"""The first frame never waits for torch (nor textual_image): not imported until a pane
needs it."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_app_mounts_without_torch(tmp_path) -> None:
    code = textwrap.dedent(
        """
        import asyncio, sys
        from vlmtui.tui.app import VlmtuiApp

        async def main():
            app = VlmtuiApp()
            async with app.run_test(size=(80, 24)) as pilot:
                await pilot.pause(0.3)
                late = ("torch", "transformers", "peft", "trl", "textual_image")
                loaded = [m for m in late if m in sys.modules]
                print("LOADED", loaded)

        asyncio.run(main())
        """
    )
    env = {"VLMTUI_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert "LOADED []" in res.stdout, res.stdout + res.stderr[-2000:]


def test_core_never_imports_textual() -> None:
    code = (
        "import sys, vlmtui.core.fleet.gpus, vlmtui.core.fleet.runs, vlmtui.core.fleet.launch, "
        "vlmtui.core.recipes.recipe, vlmtui.core.inspection.tree, vlmtui.core.inspection.meta, "
        "vlmtui.core.model.demo; "
        "print([m for m in sys.modules if m.split('.')[0] == 'textual'])"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.stdout.strip() == "[]", res.stderr[-2000:]
