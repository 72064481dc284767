"""Fault suite, recipes (issue 11 items 12, 13, 15): each scenario as a user meets it, through
the real CLI, asserting the exact one line and exit code."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from vlmtui.core.errors import BadInput
from vlmtui.core.recipes.parse import load_recipe_file
from vlmtui.core.recipes.recipe import BUILTIN_RECIPES


def vlmtui(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vlmtui", *args], capture_output=True, text=True, check=False
    )


def test_extends_may_refer_forward_within_a_file(tmp_path: Path) -> None:
    path = tmp_path / "fwd.toml"
    path.write_text(
        "[recipe.child]\nextends = 'parent'\nlearning_rate = 1e-5\n\n"
        "[recipe.parent]\nvision = 'full'\nlearning_rate = 3e-5\n"
    )
    recipes = load_recipe_file(path, BUILTIN_RECIPES)
    assert recipes["child"].vision.mode == "full"
    assert recipes["child"].learning_rate == 1e-5
    proc = vlmtui("recipes", "--json", "--recipes", str(path))
    assert proc.returncode == 0, proc.stderr
    assert {"child", "parent"} <= {r["name"] for r in json.loads(proc.stdout)}


@pytest.mark.parametrize(
    ("text", "cycle"),
    [
        (
            "[recipe.a]\nextends = 'b'\n\n[recipe.b]\nextends = 'a'\nvision = 'full'\n",
            "a -> b -> a",
        ),
        ("[recipe.a]\nextends = 'a'\nvision = 'full'\n", "a -> a"),
    ],
)
def test_extends_cycle_is_named(tmp_path: Path, text: str, cycle: str) -> None:
    path = tmp_path / "cycle.toml"
    path.write_text(text)
    proc = vlmtui("recipes", "--recipes", str(path))
    assert proc.returncode == 2
    assert proc.stderr == f"vlmtui: {path}: recipe 'a': extends: cycle {cycle}\n"


@pytest.mark.parametrize(
    "field", ["learning_rate = 0", "vision = { mode = 'full', learning_rate = 0 }"]
)
def test_zero_learning_rate_is_refused(tmp_path: Path, field: str) -> None:
    path = tmp_path / "lr.toml"
    path.write_text(
        f"[recipe.z]\nvision = 'full'\n{field}\n".replace("vision = 'full'\nvision", "vision")
    )
    with pytest.raises(BadInput) as err:
        load_recipe_file(path, BUILTIN_RECIPES)
    key = "vision.learning_rate" if "mode" in field else "learning_rate"
    assert str(err.value) == f"{path}: recipe 'z': {key}: must be greater than 0, got 0.0"
    proc = vlmtui("recipes", "--recipes", str(path))
    assert (proc.returncode, proc.stderr) == (2, f"vlmtui: {err.value}\n")


def test_broken_user_file_warns_and_keeps_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("VLMTUI_HOME", str(home))
    folder = home / "config" / "recipes"
    folder.mkdir(parents=True)
    broken = folder / "a-broken.toml"
    broken.write_text("[recipe.x\n")
    (folder / "b-good.toml").write_text("[recipe.mine]\nvision = 'full'\n")

    proc = vlmtui("recipes", "--json")
    assert proc.returncode == 0, proc.stderr
    names = [r["name"] for r in json.loads(proc.stdout)]
    assert names[:4] == list(BUILTIN_RECIPES) and "mine" in names
    [line] = proc.stderr.splitlines()
    assert line.startswith(f"vlmtui: warning: {broken}: not valid TOML (")
    assert line.endswith(" (skipped this file)")

    # The same file named with --recipes was asked for: refuse, one line, exit 2.
    named = vlmtui("recipes", "--recipes", str(broken))
    assert named.returncode == 2
    assert named.stderr.splitlines()[-1].startswith(f"vlmtui: {broken}: not valid TOML (")
    assert "Traceback" not in named.stderr

    # The app's loader keeps working too (it reads the same function).
    from vlmtui.core.recipes.catalog import all_recipes

    seen: list[str] = []
    assert "mine" in all_recipes(on_problem=seen.append)
    assert len(seen) == 1 and str(broken) in seen[0]
