"""Sharded (FSDP2) training on the CPU: two processes under torchrun, gloo, the tiny models.

For every built-in recipe, `tests/fsdp_worker.py` runs the real `run_training` with
`strategy="fsdp"` for 3 steps; then: every parameter (frozen ones and 4-bit ones included)
was sharded, every frozen tensor is bit-identical after training and every trainable one
moved, the optimizer's parameters are exactly inspect's trainable names, and the saved
(gathered) result loads and generates in `vlmtui eval`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vlmtui.core.recipes.recipe import BUILTIN_RECIPES

pytestmark = pytest.mark.slow
WORKER = Path(__file__).with_name("fsdp_worker.py")

# One family per recipe keeps the suite short; both families and the tied lm_head of the
# tiny Qwen2.5-VL are covered. r1 is QLoRA: its 4-bit weights are sharded too.
CASES = {
    "r1-llm-only": "qwen2.5-vl",
    "r2-vision-only": "qwen2-vl",
    "r3-two-stage": "qwen2.5-vl",
    "r4-joint": "qwen2-vl",
}


def test_every_builtin_recipe_has_a_case() -> None:
    assert set(CASES) == set(BUILTIN_RECIPES)


def torchrun(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    dist = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    return subprocess.run(
        [sys.executable, *dist, *args],
        capture_output=True, text=True, check=False, env=env, timeout=timeout,
    )  # fmt: skip


@pytest.mark.parametrize("recipe_name", list(CASES))
def test_fsdp_trains_each_recipe_on_two_cpu_processes(
    capsys, demo_model_dirs, shapes_data_dir: Path, tmp_path: Path, recipe_name: str
) -> None:
    from vlmtui.cli import main
    from vlmtui.core.inspection.meta import ModelInspector

    model = demo_model_dirs[CASES[recipe_name]]
    out = tmp_path / "run"
    proc = torchrun(str(WORKER), recipe_name, str(model), str(shapes_data_dir), str(out), "3")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    info = json.loads((out / "run.json").read_text())
    assert (info["strategy"], info["world_size"]) == ("fsdp", 2)
    assert json.loads((out / "status.json").read_text())["state"] == "finished"

    reports = json.loads((out / "fsdp_report.json").read_text())
    inspected = ModelInspector(str(model)).inspect(BUILTIN_RECIPES[recipe_name])
    assert len(reports) == len(inspected.stages)
    for report, stage in zip(reports, inspected.stages, strict=True):
        assert report["sharded"] == report["params"], report
        assert report["quantized_sharded"] == report["quantized"], report
        assert report["frozen_changed"] == [], report
        # LoRA B starts at zero and A only moves once B has: 3 steps move every adapter.
        assert report["trainable_unchanged"] == [], report
        trained = json.loads((Path(report["stage_dir"]) / "trainable.json").read_text())
        assert sorted(trained["optimizer_params"]) == sorted(stage.summary.trainable_names)
    if BUILTIN_RECIPES[recipe_name].quantized:
        assert reports[0]["quantized"] > 0
    # Every rank reads the weights to the CPU (never a whole model onto a device), 4-bit
    # ones too: none is left on the meta device.
    for rank in (0, 1):
        on_meta = json.loads((out / f"meta_rank{rank}.json").read_text())
        assert on_meta == [0] * len(reports), rank

    rc = main(
        ["eval", str(out), "--data", str(shapes_data_dir), "--limit", "1",
         "--max-new-tokens", "8", "--json"]
    )  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    assert json.loads((out / "eval.json").read_text())["n_images"] == 1
