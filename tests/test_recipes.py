"""Recipes: built-ins as DESIGN.md defines them, TOML loading and its one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from vlmtui.core.errors import BadInput
from vlmtui.core.recipes.catalog import all_recipes, stage_recipes
from vlmtui.core.recipes.parse import load_recipe_file
from vlmtui.core.recipes.recipe import BUILTIN_RECIPES, recipe_summary


def test_builtins_match_the_design() -> None:
    r1, r2, r3, r4 = (BUILTIN_RECIPES[n] for n in BUILTIN_RECIPES)
    assert (r1.vision.mode, r1.projector.mode, r1.llm.mode, r1.quantization) == (
        "frozen",
        "frozen",
        "lora",
        "4bit",
    )
    assert set(r1.llm.targets) == {"q_proj", "k_proj", "v_proj", "o_proj"} | {
        "gate_proj",
        "up_proj",
        "down_proj",
    }
    assert (r2.vision.mode, r2.projector.mode, r2.llm.mode, r2.quantization) == (
        "full",
        "full",
        "frozen",
        "none",
    )
    assert [s.name for s in stage_recipes(r3)] == ["r2-vision-only", "r1-llm-only"]
    assert (r4.vision.mode, r4.projector.mode, r4.llm.mode) == ("lora", "frozen", "lora")
    assert r4.vision.targets == ("qkv", "fc1", "fc2")


def test_summary_keeps_the_cli_contract() -> None:
    for recipe in BUILTIN_RECIPES.values():
        row = recipe_summary(recipe)
        for key in ("name", "description", "quantized", "vision", "projector", "llm"):
            assert key in row
        assert {row["vision"], row["projector"], row["llm"]} <= {"frozen", "full", "lora"}
    r3 = recipe_summary(BUILTIN_RECIPES["r3-two-stage"])
    assert r3["quantized"] is True
    assert (r3["vision"], r3["llm"]) == ("full", "lora")


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mine.toml"
    path.write_text(text)
    return path


def test_user_recipe_extends_a_builtin(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[recipe.small-qlora]
extends = "r1-llm-only"
description = "rank 8 on attention only"
max_steps = 50
llm = { mode = "lora", targets = ["q_proj", "v_proj"], learning_rate = 1e-4 }
lora = { r = 8, alpha = 16 }

[recipe.two]
stages = ["r2-vision-only", "small-qlora"]
""",
    )
    recipes = load_recipe_file(path, BUILTIN_RECIPES)
    mine = recipes["small-qlora"]
    assert mine.quantization == "4bit"
    assert mine.llm.targets == ("q_proj", "v_proj")
    assert mine.llm.learning_rate == 1e-4
    assert (mine.lora.r, mine.lora.alpha, mine.lora.dropout) == (8, 16, 0.05)
    assert mine.max_steps == 50
    assert mine.source == str(path)
    assert [s.name for s in stage_recipes(recipes["two"], [path])] == [
        "r2-vision-only",
        "small-qlora",
    ]


def test_user_recipes_folder_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLMTUI_HOME", str(tmp_path))
    folder = tmp_path / "config" / "recipes"
    folder.mkdir(parents=True)
    (folder / "a.toml").write_text('[recipe.vis]\nvision = "full"\n')
    assert all_recipes()["vis"].vision.mode == "full"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[recipe.x]\nvison = 'full'\n", "recipe 'x': unknown key 'vison'"),
        ("[recipe.x]\nvision = 'trained'\n", "vision.mode: unknown mode 'trained'"),
        ("[recipe.x]\nllm = { mode = 'lora' }\n", "llm.targets: mode 'lora' needs at least one"),
        ("[recipe.x]\nstages = ['r2-vision-only', 'nope']\n", "stages: unknown recipe 'nope'"),
        ("[recipe.x]\nextends = 'r9'\n", "extends: unknown recipe 'r9'"),
        ("[recipe.x]\nllm = 'full'\nquantization = '4bit'\n", "cannot train in mode 'full'"),
        ("[recipe.x]\nvision = 'full'\nquantization = '3bit'\n", "quantization: unknown value"),
        ("[recipe.x]\nvision = 'full'\nlearning_rate = 'fast'\n", "learning_rate: expected float"),
        ("[recipe.x]\nvision = { mode = 'full', patterns = ['(('] }\n", "is not a valid regex"),
        ("[recipe.x]\nprojector = { mode = 'lora', targets = ['a'] }\n", "projector.mode"),
        ("[recipe.x]\ndescription = 'nothing trains'\n", "every area is frozen"),
        ("[recipe.'bad name;rm']\nvision = 'full'\n", "name must be"),
        ("[recipe.r1-llm-only]\nvision = 'full'\n", "taken by a built-in"),
        ("[recipe.x\n", "not valid TOML"),
        ("[recipes.x]\nvision = 'full'\n", "unknown top-level key 'recipes'"),
    ],
)
def test_malformed_recipes_name_file_recipe_and_field(
    tmp_path: Path, text: str, message: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(BadInput) as err:
        load_recipe_file(path, BUILTIN_RECIPES)
    assert str(path) in str(err.value)
    assert message in str(err.value)


def test_cli_malformed_recipe_is_one_line_exit_2(tmp_path: Path) -> None:
    path = write(tmp_path, "[recipe.x]\nvision = 'trained'\n")
    proc = subprocess.run(
        [sys.executable, "-m", "vlmtui", "recipes", "--recipes", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert str(path) in lines[0] and "vision.mode" in lines[0]
    assert "Traceback" not in proc.stderr


def test_cli_recipes_json(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "vlmtui", "recipes", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    rows = json.loads(proc.stdout)
    assert [r["name"] for r in rows][:4] == list(BUILTIN_RECIPES)
