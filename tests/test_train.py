"""Training on CPU with the tiny checkpoints: what trains moves, what is frozen stays bit-identical.

Uses the same functions as `vlmtui train` (prepare_stage -> fit), and the real CLI as a
subprocess for the run directory, the two-stage hand-off and the exit codes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from trainhelp import fit_three_steps, train_argv
from vlmtui.core.families import FAMILIES
from vlmtui.core.model.loading import Device
from vlmtui.core.recipes.policy import strip_peft
from vlmtui.core.recipes.recipe import BUILTIN_RECIPES

pytestmark = pytest.mark.slow
CPU = Device("cpu")
# The Qwen3 families' data path needs the `qwen3` box format (data/datasets.py); their
# training and trainable-set checks are in test_qwen3_train.py.
QWEN2_FAMILIES = ["qwen2-vl", "qwen2.5-vl"]


@pytest.mark.parametrize("family_name", QWEN2_FAMILIES)
@pytest.mark.parametrize("recipe_name", ["r1-llm-only", "r2-vision-only", "r4-joint"])
def test_recipe_trains_what_it_says(
    demo_model_dirs, shapes_data_dir: Path, tmp_path: Path, family_name: str, recipe_name: str
) -> None:
    from vlmtui.core.data.chat import to_trl_dataset
    from vlmtui.core.data.datasets import load_split
    from vlmtui.core.training.prepare import prepare_stage

    recipe = BUILTIN_RECIPES[recipe_name]
    stage = prepare_stage(demo_model_dirs[family_name], recipe, CPU)
    rows = to_trl_dataset(load_split(shapes_data_dir, "train"), stage.family, stage.processor)
    trainable = fit_three_steps(stage, recipe, rows, tmp_path)
    areas = {stage.family.area_of(strip_peft(n)) for n in trainable}
    expected = {
        "r1-llm-only": {"llm"},
        "r2-vision-only": {"vision", "projector"},
        "r4-joint": {"vision", "llm"},
    }[recipe_name]
    assert areas == expected


def vlmtui(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vlmtui", *args], capture_output=True, text=True, check=False
    )


def test_two_stage_hands_stage1_weights_to_stage2(
    qwen25_vl_dir: Path, shapes_data_dir: Path, tmp_path: Path
) -> None:
    import torch
    from safetensors.torch import load_file

    from vlmtui.core.training.prepare import prepare_stage

    out = tmp_path / "r3"
    proc = vlmtui(
        "train", "--recipe", "r3-two-stage", "--model", str(qwen25_vl_dir),
        "--data", str(shapes_data_dir), "--output", str(out), "--max-steps", "3",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    status = json.loads((out / "status.json").read_text())
    assert status["state"] == "finished"
    stage1 = json.loads((out / "stage1" / "weights.json").read_text())
    stage2 = json.loads((out / "stage2" / "weights.json").read_text())
    assert stage1["kind"] == "full" and stage2["kind"] == "adapter"
    assert stage2["base_model"] == stage1["path"]
    events = [json.loads(x) for x in (out / "events.jsonl").read_text().splitlines()]
    assert {e["stage"] for e in events if "loss" in e} == {1, 2}

    saved = load_file(str(Path(stage1["path"]) / "model.safetensors"))
    original = load_file(str(qwen25_vl_dir / "model.safetensors"))
    # transformers 5 saves in the checkpoint layout (`visual.*`), modules are `model.visual.*`.
    vision = [k for k in saved if k.startswith("visual.blocks.")]
    assert vision and any(not torch.equal(saved[k], original[k]) for k in vision)
    # Stage 2 loads exactly what stage 1 saved, and keeps the vision tower in full precision.
    stage = prepare_stage(Path(stage1["path"]), BUILTIN_RECIPES["r1-llm-only"], CPU)
    params = {strip_peft(n): p for n, p in stage.model.named_parameters()}
    for key in vision:
        assert torch.equal(params[f"model.{key}"].detach().to(saved[key].dtype), saved[key]), key
    assert not any(
        FAMILIES["qwen2.5-vl"].area_of(m) != "llm" for m in stage.summary.quantized_modules
    )


def test_train_cli_run_directory_and_refusals(
    qwen2_vl_dir: Path, shapes_data_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "r1"
    proc = vlmtui(
        "train", "--recipe", "r1-llm-only", "--model", str(qwen2_vl_dir),
        "--data", str(shapes_data_dir), "--output", str(out), "--max-steps", "3",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    info = json.loads((out / "run.json").read_text())
    assert info["recipe"] == "r1-llm-only" and info["versions"]["transformers"]
    events = [json.loads(x) for x in (out / "events.jsonl").read_text().splitlines()]
    steps = [e for e in events if "loss" in e]
    assert [e["step"] for e in steps] == [1, 2, 3]
    for key in ("max_steps", "learning_rate", "grad_norm", "epoch", "elapsed_s"):
        assert key in steps[0]
    assert (out / "adapter" / "adapter_config.json").exists()
    log = (out / "output.log").read_text()  # foreground runs keep a log too
    assert "step 3/3  loss " in log and f"adapter saved to {out / 'adapter'}" in log
    assert f"next: vlmtui eval {out} --data" in log
    for noise in ("{'loss'", "'train_loss'", "FutureWarning", "Loading weights", "gemm_4bit"):
        assert noise not in log, noise
    assert json.loads((out / "status.json").read_text())["state"] == "finished"

    again = vlmtui(
        "train", "--recipe", "r1-llm-only", "--model", str(qwen2_vl_dir),
        "--data", str(shapes_data_dir), "--output", str(out),
    )  # fmt: skip
    assert again.returncode == 2 and "already holds a run" in again.stderr

    for args, message in [
        (["--recipe", "r9"], "unknown recipe 'r9'"),
        (["--model", str(tmp_path)], "not a model directory"),
        (["--gpu", "7"], "GPU 7 does not exist"),
        (["--gpu", "0;rm"], "expected a GPU index"),
    ]:
        base = {
            "--recipe": "r2-vision-only",
            "--model": str(qwen2_vl_dir),
            "--data": str(shapes_data_dir),
            "--output": str(tmp_path / "x"),
        }
        base.update(dict(zip(args[::2], args[1::2], strict=True)))
        proc = vlmtui("train", *[x for kv in base.items() for x in kv])
        assert proc.returncode == 2, (args, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert message in proc.stderr
        assert not (tmp_path / "x" / "status.json").exists()


def test_sigterm_saves_a_checkpoint_and_resume_continues(
    qwen2_vl_dir: Path, shapes_data_dir: Path, tmp_path: Path
) -> None:
    import os
    import signal
    import time

    out = tmp_path / "stopme"
    cmd = train_argv(qwen2_vl_dir, shapes_data_dir, out, "--max-steps", "100000")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        text = (out / "events.jsonl").read_text() if (out / "events.jsonl").exists() else ""
        if text.count('"loss"') >= 2:
            break
        time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("training never logged two steps")
    os.kill(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    status = json.loads((out / "status.json").read_text())
    assert status["state"] == "stopped"
    checkpoints = sorted((out / "checkpoints").glob("checkpoint-*"))
    assert checkpoints, "no checkpoint saved on SIGTERM"
    stopped_at = int(checkpoints[-1].name.split("-")[1])

    resumed = vlmtui(
        "train", "--recipe", "r2-vision-only", "--model", str(qwen2_vl_dir),
        "--data", str(shapes_data_dir), "--output", str(out),
        "--max-steps", str(stopped_at + 2), "--resume",
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    events = [json.loads(x) for x in (out / "events.jsonl").read_text().splitlines()]
    steps = [e["step"] for e in events if "loss" in e]
    assert steps[-2:] == [stopped_at + 1, stopped_at + 2]
    assert json.loads((out / "status.json").read_text())["state"] == "finished"


def test_a_stop_while_torch_is_imported_ends_stopped_without_a_traceback(
    qwen2_vl_dir: Path, shapes_data_dir: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    """The app's `s` on a run that had just started: SIGTERM arrived while the trainer
    imported torch to find its device, outside the code that turns a stop into `stopped`.
    output.log ended in a StopRequested traceback and the process exited 1."""
    import os
    import signal

    from vlmtui.cli import main
    from vlmtui.core.model.loading import Device
    from vlmtui.core.training import train

    def detect_device() -> Device:  # the torch import and device probe, where the stop lands
        os.kill(os.getpid(), signal.SIGTERM)  # the real signal: its handler raises at once
        return Device("cpu")

    monkeypatch.setattr(train, "detect_device", detect_device)
    out = tmp_path / "stopme"
    argv = train_argv(qwen2_vl_dir, shapes_data_dir, out, "--max-steps", "2")[3:]
    before = signal.getsignal(signal.SIGTERM)
    assert main(argv) == 128 + signal.SIGTERM
    status = json.loads((out / "status.json").read_text())
    assert (status["state"], status["error"]) == ("stopped", "stopped by SIGTERM")
    assert "Traceback" not in (out / "output.log").read_text()
    assert signal.getsignal(signal.SIGTERM) == before  # the handler was put back
