"""Fault suite, resume (issue 11 item 1): a resumed run starts from every tensor it trained.

The fault: transformers 5 saved checkpoints in its checkpoint key layout and the Trainer
loaded them back non-strictly under module names, so a resumed full fine-tune silently
restarted from the base weights. Here a run trains and checkpoints, a fresh process-like
second model resumes from that checkpoint, and every parameter is compared tensor by tensor
with the first run's and with the checkpoint file.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from trainhelp import snapshot, train_argv
from vlmtui.core.families import DEFAULT_LLM_TARGETS
from vlmtui.core.model.loading import Device
from vlmtui.core.recipes.recipe import BUILTIN_RECIPES, AreaPlan, TrainingRecipe

pytestmark = pytest.mark.slow
CPU = Device("cpu")
MIXED = TrainingRecipe(
    name="mixed",
    vision=AreaPlan(mode="full"),
    projector=AreaPlan(mode="full"),
    llm=AreaPlan(mode="lora", targets=DEFAULT_LLM_TARGETS),
    learning_rate=1e-3,
)


@pytest.mark.parametrize("recipe_name", ["r2-vision-only", "r1-llm-only", "mixed"])
def test_resume_restores_every_trained_tensor(
    qwen2_vl_dir: Path, shapes_data_dir: Path, tmp_path: Path, recipe_name: str
) -> None:
    import torch
    from safetensors.torch import load_file
    from transformers import TrainerCallback

    from vlmtui.core.data.chat import to_trl_dataset
    from vlmtui.core.data.datasets import load_split
    from vlmtui.core.training.checkpoints import TRAINABLE_FILE
    from vlmtui.core.training.fitting import FitOptions, fit
    from vlmtui.core.training.prepare import prepare_stage

    recipe = MIXED if recipe_name == "mixed" else BUILTIN_RECIPES[recipe_name]
    first = prepare_stage(qwen2_vl_dir, recipe, CPU)
    rows = to_trl_dataset(load_split(shapes_data_dir, "train"), first.family, first.processor)
    fit(first, recipe, rows, tmp_path, CPU, FitOptions(max_steps=4, save_steps=2))
    trained = snapshot(first.model)
    trainable = {n for n, p in first.model.named_parameters() if p.requires_grad}
    del first

    second = prepare_stage(qwen2_vl_dir, recipe, CPU)
    base = snapshot(second.model)
    at_start: dict[str, object] = {}

    class AtStart(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kw) -> None:
            at_start.update(snapshot(second.model), step=state.global_step)

    options = FitOptions(max_steps=5, resume=True, callbacks=(AtStart(),))
    fit(second, recipe, rows, tmp_path, CPU, options)
    assert at_start.pop("step") == 4
    resumed = at_start

    assert set(resumed) == set(trained)
    for name, tensor in trained.items():
        assert torch.equal(resumed[name], tensor), f"{name} not restored"
    moved = {n for n in trainable if not torch.equal(base[n], trained[n])}
    assert moved == trainable  # the comparison above is not vacuous
    saved = load_file(str(tmp_path / "checkpoints" / "checkpoint-4" / TRAINABLE_FILE))
    assert set(saved) == trainable
    for name in trainable:
        assert torch.equal(saved[name], resumed[name]), name


def test_checkpoint_of_another_trainable_set_is_an_error(
    qwen2_vl_dir: Path, shapes_data_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"

    def train(recipe: str, *extra: str) -> subprocess.CompletedProcess[str]:
        argv = train_argv(
            qwen2_vl_dir, shapes_data_dir, out, "--max-steps", "2", "--save-steps", "2", *extra,
            recipe=recipe,
        )  # fmt: skip
        return subprocess.run(argv, capture_output=True, text=True, check=False)

    assert train("r2-vision-only").returncode == 0
    proc = train("r4-joint", "--max-steps", "3", "--resume")
    ckpt = out / "checkpoints" / "checkpoint-2"
    assert proc.returncode == 1, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(
        f"vlmtui: {ckpt}: checkpoint does not match this recipe's trainable set (missing keys: "
    )
    assert "unexpected keys: model.visual." in last
    status = json.loads((out / "status.json").read_text())
    assert status["state"] == "failed" and status["error"] == last.removeprefix("vlmtui: ")
    assert f"resuming from {ckpt} (step 2)" in proc.stdout


def test_two_stage_resume_restores_stage_2_strictly(
    qwen25_vl_dir: Path, shapes_data_dir: Path, tmp_path: Path
) -> None:
    """Stage 1 finished, stage 2 checkpointed: resume skips stage 1 and loads stage 2's
    checkpoint strictly (a key mismatch would fail the run)."""
    out = tmp_path / "r3"
    argv = train_argv(
        qwen25_vl_dir, shapes_data_dir, out, "--save-steps", "2", recipe="r3-two-stage"
    )
    first = subprocess.run([*argv, "--max-steps", "2"], capture_output=True, text=True, check=False)
    assert first.returncode == 0, first.stderr[-2000:]
    for done in (out / "weights.json", out / "stage2" / "weights.json"):
        done.unlink()  # as if stopped in stage 2, after its checkpoint
    resumed = subprocess.run(
        [*argv, "--max-steps", "3", "--resume"], capture_output=True, text=True, check=False
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    ckpt = out / "stage2" / "checkpoints" / "checkpoint-2"
    assert f"[vlmtui] resuming from {ckpt} (step 2)" in resumed.stdout
    events = [json.loads(x) for x in (out / "events.jsonl").read_text().splitlines()]
    assert [(e["stage"], e["step"]) for e in events if "loss" in e][-1] == (2, 3)


def test_resume_after_the_final_save_failed_trains_no_step_past_the_end(
    qwen2_vl_dir: Path, shapes_data_dir: Path, tmp_path: Path
) -> None:
    """The run reached max_steps and checkpointed, then its final save failed (a file in the
    way of the adapter's staging folder: as a full disk or a kill there leaves it). The
    Trainer resumed from that last checkpoint used to train step 4 of 3 (and checkpoint it);
    now the checkpoint's weights are saved as they are."""
    import torch
    from safetensors.torch import load_file

    from vlmtui.core.training.checkpoints import TRAINABLE_FILE

    out = tmp_path / "run"
    out.mkdir()
    blocker = out / ".partial-adapter"
    blocker.write_text("in the way")
    argv = train_argv(qwen2_vl_dir, shapes_data_dir, out, "--max-steps", "3", recipe="r1-llm-only")
    first = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert first.returncode == 1, first.stderr[-2000:]
    status = json.loads((out / "status.json").read_text())
    assert (status["state"], status["during"]) == ("failed", "saving")
    blocker.unlink()
    resumed = subprocess.run([*argv, "--resume"], capture_output=True, text=True, check=False)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "[vlmtui] checkpoint-3 is the last step: nothing left to train" in resumed.stdout
    steps = [json.loads(x).get("step") for x in (out / "events.jsonl").read_text().splitlines()]
    assert max(s for s in steps if s is not None) == 3
    assert sorted(p.name for p in (out / "checkpoints").glob("checkpoint-*")) == ["checkpoint-3"]
    assert json.loads((out / "status.json").read_text())["state"] == "finished"
    adapter = load_file(str(out / "adapter" / "adapter_model.safetensors"))
    ckpt = load_file(str(out / "checkpoints" / "checkpoint-3" / TRAINABLE_FILE))
    assert len(adapter) == len(ckpt) > 0
    for name, tensor in adapter.items():
        assert torch.equal(tensor, ckpt[name.replace(".weight", ".default.weight")]), name
