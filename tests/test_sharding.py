"""The FSDP configuration `--strategy fsdp` hands the Trainer, per family and recipe, and the
refusals of `train`/`launch` when there is nothing to shard over (no training here: the
two-process runs are in test_fsdp.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from vlmtui.core.errors import BadInput, WorkFailed
from vlmtui.core.recipes.recipe import BUILTIN_RECIPES
from vlmtui.core.training.sharding import (
    check_strategy,
    fsdp_config,
    loading_kwargs,
    trainer_kwargs,
    wrap_class_names,
)

# Shipped configs of both families, and the classes transformers builds their blocks from.
BLOCK_CLASSES = {
    "Qwen/Qwen2-VL-2B-Instruct": ("Qwen2VLDecoderLayer", "Qwen2VLVisionBlock"),
    "Qwen/Qwen2.5-VL-3B-Instruct": ("Qwen2_5_VLDecoderLayer", "Qwen2_5_VLVisionBlock"),
}


def meta_stage(model_id: str, recipe_name: str) -> object:
    from vlmtui.core.inspection.metaprep import prepare_meta_stage
    from vlmtui.core.model.resolve import resolve_model

    return prepare_meta_stage(resolve_model(model_id), BUILTIN_RECIPES[recipe_name])


@pytest.mark.parametrize("model_id", list(BLOCK_CLASSES))
@pytest.mark.parametrize("recipe_name", ["r1-llm-only", "r2-vision-only", "r4-joint"])
def test_wrap_classes_come_from_the_model_for_every_recipe(model_id: str, recipe_name: str):
    model = meta_stage(model_id, recipe_name)
    # PEFT-wrapped (r1, r4) or bare (r2), quantized (r1) or not: the same two block classes,
    # which are also the ones transformers marks as never to be split.
    assert wrap_class_names(model) == BLOCK_CLASSES[model_id]
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    assert set(BLOCK_CLASSES[model_id]) <= set(base._no_split_modules)


def test_a_model_without_blocks_is_refused():
    import torch

    with pytest.raises(WorkFailed, match="no llm or vision blocks"):
        wrap_class_names(torch.nn.Linear(2, 2))


def test_fsdp_config_is_full_shard_fsdp2_with_whole_checkpoints():
    config = fsdp_config(("Qwen2VLDecoderLayer", "Qwen2VLVisionBlock"), rank0_loading=True)
    assert config == {
        "version": 2,
        "reshard_after_forward": True,
        "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
        "transformer_layer_cls_to_wrap": ["Qwen2VLDecoderLayer", "Qwen2VLVisionBlock"],
        "state_dict_type": "FULL_STATE_DICT",
        "cpu_ram_efficient_loading": True,
        "activation_checkpointing": False,
    }


def test_trainer_kwargs_become_accelerates_fsdp2_plugin(tmp_path: Path):
    from trl import SFTConfig

    r1 = BUILTIN_RECIPES["r1-llm-only"]
    model = meta_stage("Qwen/Qwen2.5-VL-3B-Instruct", "r1-llm-only")
    assert trainer_kwargs("ddp", model, r1) == {}
    kwargs = trainer_kwargs("fsdp", model, r1)
    config = SFTConfig(output_dir=str(tmp_path), use_cpu=True, **kwargs)
    plugin = config.fsdp_plugin_args
    assert plugin["fsdp_version"] == 2 and plugin["reshard_after_forward"] is True
    assert plugin["auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    assert plugin["transformer_cls_names_to_wrap"] == "Qwen2_5_VLDecoderLayer,Qwen2_5_VLVisionBlock"
    assert plugin["state_dict_type"] == "FULL_STATE_DICT"
    assert plugin["activation_checkpointing"] is False and "cpu_offload" not in plugin
    # bitsandbytes weights are loaded by every rank; unquantized models by rank 0 alone.
    assert plugin["cpu_ram_efficient_loading"] is False
    r4 = BUILTIN_RECIPES["r4-joint"]
    r4_model = meta_stage("Qwen/Qwen2.5-VL-3B-Instruct", "r4-joint")
    assert trainer_kwargs("fsdp", r4_model, r4)["fsdp_config"]["cpu_ram_efficient_loading"]


def test_quant_storage_is_the_compute_dtype_only_under_fsdp():
    import torch

    from vlmtui.core.model.loading import Device, quantization_config

    r1 = BUILTIN_RECIPES["r1-llm-only"]
    gpu = Device("cuda")
    assert loading_kwargs("ddp", r1, gpu) == {}
    storage = loading_kwargs("fsdp", r1, gpu)["quant_storage"]
    assert storage is torch.bfloat16
    assert quantization_config(r1, torch.bfloat16, storage).bnb_4bit_quant_storage == storage
    assert quantization_config(r1, torch.bfloat16).bnb_4bit_quant_storage == torch.uint8


def test_unknown_strategy_is_bad_input():
    assert check_strategy("fsdp") == "fsdp"
    with pytest.raises(BadInput, match="--strategy: expected one of ddp, fsdp, got 'zero3'"):
        check_strategy("zero3")


def test_train_refuses_fsdp_outside_a_multi_process_launch(
    capsys, monkeypatch, qwen2_vl_dir: Path, shapes_data_dir: Path, tmp_path: Path
):
    from vlmtui.cli import main

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    base = ["train", "--recipe", "r2-vision-only", "--model", str(qwen2_vl_dir)]
    base += ["--data", str(shapes_data_dir), "--output", str(tmp_path / "o")]
    assert main([*base, "--strategy", "fsdp"]) == 2
    assert "--strategy fsdp: shards over 2 or more processes" in capsys.readouterr().err
    assert main([*base, "--strategy", "tp"]) == 2
    assert "--strategy: expected one of ddp, fsdp" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_launch_puts_the_strategy_in_the_command_and_refuses_one_process(
    tmp_path: Path, fake_local_gpus
):
    from vlmtui.core.fleet.hosts import get_host
    from vlmtui.core.fleet.launch import LaunchRequest, launch
    from vlmtui.core.fleet.launchscript import TrainArgs, train_command

    py = get_host("local").python_argv()
    fsdp = TrainArgs(
        recipe="r1-llm-only", model="/m", data="/d", run_dir="/r", gpus=("0", "1"), nproc=2,
        strategy="fsdp",
    )  # fmt: skip
    cmd = train_command(py, fsdp)
    assert cmd[cmd.index("--strategy") + 1] == "fsdp"
    assert "torch.distributed.run" in cmd
    plain = train_command(
        py, TrainArgs(recipe="r1-llm-only", model="/m", data="/d", run_dir="/r", gpus=("cpu",))
    )
    assert plain[plain.index("--strategy") + 1] == "ddp"

    fake_local_gpus("a100x4")
    model, data = str(tmp_path), str(tmp_path)
    for gpu, nproc in (("0", None), ("cpu", None), ("cpu", 1), ("auto", None)):
        one = LaunchRequest(
            recipe="r1-llm-only", model=model, data=data, gpu=gpu, nproc=nproc, strategy="fsdp"
        )
        with pytest.raises(BadInput, match="--strategy fsdp: shards over 2 or more processes"):
            launch(one)
    with pytest.raises(BadInput, match="--strategy: expected one of"):
        launch(LaunchRequest(recipe="r1-llm-only", model=model, data=data, strategy="x"))
