"""The headless core never loads textual, and `vlmtui --help` never loads torch.

Checked in fresh interpreters (as harlequin does), since this test process has long since
imported everything.
"""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import vlmtui.core


def loaded_after(code: str) -> set[str]:
    probe = f"{code}\nimport sys\nprint(' '.join(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    return set(out.split())


def test_core_modules_never_import_textual_or_torch_at_import_time() -> None:
    # walk_packages recurses into the subpackages, so a module added anywhere under core is
    # covered without editing this list.
    names = [m.name for m in pkgutil.walk_packages(vlmtui.core.__path__, "vlmtui.core.")]
    assert "vlmtui.core.recipes.policy" in names and "vlmtui.core.training.train" in names
    imports = "\n".join(f"import {n}" for n in names)
    loaded = loaded_after(imports)
    assert not {m for m in loaded if m.split(".")[0] == "textual"}
    assert not {"torch", "transformers", "peft", "trl"} & loaded


def test_cli_help_loads_no_heavy_module() -> None:
    loaded = loaded_after(
        "import contextlib, io\n"
        "from vlmtui.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "    main(['--help'])"
    )
    assert not {"torch", "transformers", "peft", "trl", "textual"} & loaded
