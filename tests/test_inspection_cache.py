"""The inspection cache on disk: a marking computed once is read back by any later process
without importing torch, and any change to what it depends on is a different entry."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vlmtui.core.inspection import cache
from vlmtui.core.recipes.recipe import BUILTIN_RECIPES

CHILD = """
import sys, time
from vlmtui.core.recipes.recipe import BUILTIN_RECIPES
from vlmtui.tui.inspection import marking
t = time.perf_counter()
m = marking(sys.argv[1], BUILTIN_RECIPES["r1-llm-only"])
print(f"{time.perf_counter() - t:.3f}", "torch" in sys.modules, m.trainable_params)
"""


def _child(model: Path) -> tuple[float, bool, int]:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(model)], capture_output=True, text=True,
        env=os.environ.copy(), check=True, timeout=300,
    ).stdout.split()  # fmt: skip
    return float(out[0]), out[1] == "True", int(out[2])


@pytest.mark.slow
def test_second_process_reads_the_marking_without_torch(qwen2_vl_dir: Path) -> None:
    first_s, first_torch, trainable = _child(qwen2_vl_dir)
    assert first_torch and trainable > 0
    assert len(list(cache.cache_dir().glob("*.pickle"))) == 1
    second_s, second_torch, again = _child(qwen2_vl_dir)
    assert not second_torch and again == trainable
    assert second_s <= 0.3 * first_s, (first_s, second_s)


def test_key_follows_config_recipe_and_versions(tmp_path: Path) -> None:
    r1, r2 = BUILTIN_RECIPES["r1-llm-only"], BUILTIN_RECIPES["r2-vision-only"]
    config = {"model_type": "qwen2_vl", "hidden_size": 64}
    base = cache.cache_key(config, "qwen2-vl", r1)
    assert base == cache.cache_key(json.loads(json.dumps(config)), "qwen2-vl", r1)
    assert base != cache.cache_key({**config, "hidden_size": 128}, "qwen2-vl", r1)
    assert base != cache.cache_key(config, "qwen2-vl", r2)
    assert base != cache.cache_key(config, "qwen2.5-vl", r1)
    assert base != cache.cache_key(config, "qwen2-vl", r1, [r2])  # a stage's definition
    entry = cache.Entry(inspection=None, tree=None)
    cache.store(base, entry)
    assert cache.load(base) == entry
    (cache.cache_dir() / f"{base}.pickle").write_bytes(b"torn")
    assert cache.load(base) is None  # unreadable: rebuilt, never an error
