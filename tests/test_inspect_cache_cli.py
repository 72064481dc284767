"""`vlmtui inspect` through the inspection cache: a second look at a model and recipe is
served from the entry the first one stored, prints exactly what a fresh build prints and
never imports torch; the entries are the app's too.

Every run is a real `vlmtui` process (the cache's whole point is the next process)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from vlmtui.core.inspection import cache

MODEL = "Qwen/Qwen2-VL-2B-Instruct"
HEAVY = ("torch", "transformers", "peft")
CHILD = f"""
import sys
from vlmtui.cli import main
code = main(sys.argv[1:])
sys.stdout.flush()
heavy = sorted(set({HEAVY!r}) & set(sys.modules))
print("HEAVY:" + ",".join(heavy), file=sys.stderr)
sys.exit(code)
"""


def inspect(*args: str) -> tuple[str, set[str]]:
    """stdout of `vlmtui inspect MODEL ARGS` in a fresh process, and the heavy libraries it
    imported."""
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, "inspect", MODEL, *args],
        capture_output=True, text=True, env={**os.environ, "COLUMNS": "120"}, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    heavy = proc.stderr.rpartition("HEAVY:")[2].strip()
    return proc.stdout, set(heavy.split(",")) - {""}


def entries() -> list[str]:
    return sorted(p.name for p in cache.cache_dir().glob("*.pickle"))


VIEWS = {
    "text": ["--recipe", "r4-joint", "--tree", "--filter", r"mlp\.fc1", "--gpus", "2",
             "--strategy", "fsdp", "--seq-len", "2048", "--gpu-mem", "24"],
    "json": ["--recipe", "r4-joint", "--json", "--tree", "--filter", "merger",
             "--strategy", "split", "--gpus", "4"],
    "diff": ["--diff", "r1-llm-only", "r4-joint", "--image-size", "896"],
    "diff-json": ["--diff", "r1-llm-only", "r4-joint", "--json"],
}  # fmt: skip


@pytest.mark.slow
def test_warm_output_is_the_cold_output_without_torch() -> None:
    """Each view's warm output byte for byte against a rebuilt one (`--no-cache`), the
    memory options not being part of the key. The diff also covers a fault: the first build
    used to rewrite the shared config's rope_scaling, so the second recipe of a `--diff` was
    stored under a key no later process asks for."""
    inspect("--diff", "r1-llm-only", "r4-joint")
    assert len(entries()) == 2
    for name, args in VIEWS.items():
        cold, cold_heavy = inspect(*args, "--no-cache")
        warm, warm_heavy = inspect(*args)
        assert "torch" in cold_heavy, name
        assert not warm_heavy, (name, warm_heavy)
        assert warm == cold, name
    assert len(entries()) == 2


@pytest.mark.slow
def test_a_truncated_entry_is_rebuilt() -> None:
    first, _ = inspect("--recipe", "r1-llm-only", "--json")
    (path,) = cache.cache_dir().glob("*.pickle")
    size = path.stat().st_size
    path.write_bytes(path.read_bytes()[: size // 2])
    again, heavy = inspect("--recipe", "r1-llm-only", "--json")
    assert "torch" in heavy and again == first
    assert path.stat().st_size == size and cache.load(path.stem) is not None
    third, heavy = inspect("--recipe", "r1-llm-only", "--json")
    assert not heavy and third == first


PREFLIGHT = f"""
import sys
from vlmtui.core.recipes.recipe import BUILTIN_RECIPES
from vlmtui.tui.inspection import preflight
p = preflight({MODEL!r}, BUILTIN_RECIPES[sys.argv[1]], "GPU 0", 24 * 1024)
print(p.trainable_params, p.total_params, "torch" in sys.modules)
"""


def app(recipe: str) -> tuple[int, int, bool]:
    """The app's pre-flight of `recipe` (tui/inspection.py, no worker) in a fresh process."""
    out = subprocess.run(
        [sys.executable, "-c", PREFLIGHT, recipe], capture_output=True, text=True,
        env=os.environ.copy(), check=True, timeout=300,
    ).stdout.split()  # fmt: skip
    return int(out[0]), int(out[1]), out[2] == "True"


@pytest.mark.slow
def test_the_cli_and_the_app_share_entries() -> None:
    import json

    out, _ = inspect("--recipe", "r1-llm-only", "--json")
    trainable, total, heavy = app("r1-llm-only")
    assert not heavy, "the app rebuilt what the CLI stored"
    data = json.loads(out)
    assert (trainable, total) == (data["trainable_params"], data["total_params"])
    trainable, total, heavy = app("r2-vision-only")
    assert heavy and len(entries()) == 2
    out, heavy_cli = inspect("--recipe", "r2-vision-only", "--json")
    assert not heavy_cli, "the CLI rebuilt what the app stored"
    assert json.loads(out)["trainable_params"] == trainable
