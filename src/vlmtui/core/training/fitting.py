"""Train one prepared stage with TRL's SFTTrainer.

Here the recipe becomes an `SFTConfig`, the trainer is assembled around our own optimizer
and collator, and parameter dtypes TRL would change are put back before the loop runs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlmtui.core.model.loading import Device, keep_adapters_fp32
from vlmtui.core.recipes.recipe import TrainingRecipe
from vlmtui.core.rundir import TRAINABLE_JSON, write_json_atomic
from vlmtui.core.training.callback import progress_callback
from vlmtui.core.training.checkpoints import KEEP_CHECKPOINTS
from vlmtui.core.training.optimizer import build_optimizer
from vlmtui.core.training.prepare import Prepared
from vlmtui.core.training.process import StopState, is_main_process
from vlmtui.core.training.progress import RunFiles
from vlmtui.core.training.sharding import Strategy, allow_fsdp_on_cpu, trainer_kwargs


@dataclass(frozen=True)
class FitOptions:
    """How `fit` runs one stage, beyond the model, recipe, rows and place."""

    max_steps: int | None
    """Overrides the recipe's max_steps; None keeps the recipe's."""
    resume: bool = False
    """Continue from the newest complete checkpoint under the stage's `checkpoints/`."""
    save_steps: int = 200
    """Save a checkpoint every this many optimizer steps."""
    seed: int = 0
    """The Trainer's seed (data order, initialisation of new weights)."""
    files: RunFiles | None = None
    """The run's files to report progress into; None (or a rank > 0) reports nothing, but
    `trainable.json` is still written when None."""
    stage: int = 1
    """The 1-based stage number, written into every progress event."""
    stop: StopState | None = None
    """Where a stop signal is recorded; None makes a fresh one that no signal reaches."""
    callbacks: tuple[Any, ...] = ()
    """Extra TrainerCallbacks, after the progress callback."""
    strategy: Strategy = "ddp"
    """`ddp`: a whole model per process; `fsdp`: sharded over the processes (sharding.py)."""


def sft_config(
    recipe: TrainingRecipe, ckpt_dir: Path, device: Device, options: FitOptions, model: Any
) -> Any:
    """The SFTConfig a recipe trains under (checkpoints into `ckpt_dir`)."""
    from trl import SFTConfig

    steps = options.max_steps or recipe.max_steps
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    return SFTConfig(
        output_dir=str(ckpt_dir),
        max_steps=steps if steps else -1,
        num_train_epochs=recipe.epochs,
        per_device_train_batch_size=recipe.batch_size,
        gradient_accumulation_steps=recipe.grad_accum,
        learning_rate=recipe.learning_rate,
        warmup_steps=recipe.warmup_ratio,
        lr_scheduler_type="linear",
        logging_steps=1,
        save_strategy="steps",
        save_steps=options.save_steps,
        save_total_limit=KEEP_CHECKPOINTS,
        max_length=None,
        remove_unused_columns=False,
        dataset_kwargs={"skip_prepare_dataset": True},
        report_to=[],
        use_cpu=not device.is_cuda,
        bf16=device.is_cuda,
        ddp_backend=("gloo" if not device.is_cuda else "nccl") if distributed else None,
        gradient_checkpointing=recipe.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False},
        dataloader_num_workers=0,
        seed=options.seed,
        disable_tqdm=True,
        **trainer_kwargs(options.strategy, model, recipe),
    )


def _make_trainer(
    prepared: Prepared, config: Any, rows: Any, optimizer: Any, options: FitOptions, stop: StopState
) -> Any:
    from vlmtui.core.training.checkpoints import trainer_class
    from vlmtui.core.training.collate import AssistantOnlyCollator

    fsdp = options.strategy == "fsdp"
    trainer = trainer_class()(
        model=prepared.model,
        args=config,
        train_dataset=rows,
        processing_class=prepared.processor,
        data_collator=AssistantOnlyCollator(prepared.processor, prepared.family),
        optimizers=(None, None) if fsdp else (optimizer, None),
        callbacks=[progress_callback(options.files, options.stage, stop), *options.callbacks],
    )
    if fsdp:
        # The Trainer refuses a ready optimizer under FSDP (one built on parameters sharding
        # replaces), but FSDP2 is prepared together with the optimizer and accelerate maps it
        # onto the sharded parameters: handed over here, it is used as create_optimizer's.
        trainer.optimizer = optimizer
    return trainer


def _full_dtypes(model: Any) -> dict[str, Any]:
    """The dtypes of the trainable parameters that are not adapters.

    TRL casts every trainable parameter of a quantized model to bf16 (QLoRA). A base weight
    trained in full beside the adapters (the MoE router, `also_full`) multiplies its layer's
    activations directly, so it keeps its dtype."""
    full = {n: p.dtype for n, p in model.named_parameters() if p.requires_grad}
    return {n: d for n, d in full.items() if ".lora_" not in n}


def fit(
    prepared: Prepared,
    recipe: TrainingRecipe,
    rows: Any,
    stage_dir: Path,
    device: Device,
    options: FitOptions,
) -> Any:
    """Train a prepared model with SFTTrainer (plus extra TrainerCallbacks); returns the trainer."""
    from vlmtui.core.training.checkpoints import resume_checkpoint, run_trainer

    stop = options.stop or StopState()
    ckpt_dir = stage_dir / "checkpoints"
    config = sft_config(recipe, ckpt_dir, device, options, prepared.model)
    optimizer, names = build_optimizer(prepared, recipe, config)
    if options.files is None or is_main_process():
        write_json_atomic(
            stage_dir / TRAINABLE_JSON,
            {**prepared.summary.to_dict(), "optimizer_params": names, "recipe": recipe.name},
        )
    full = _full_dtypes(prepared.model)
    allow_fsdp_on_cpu(options.strategy, on_cpu=not device.is_cuda)
    trainer = _make_trainer(prepared, config, rows, optimizer, options, stop)
    if recipe.quantized:
        keep_adapters_fp32(prepared.model)
    for name, param in prepared.model.named_parameters():
        if name in full and param.dtype != full[name]:
            param.data = param.data.to(full[name])
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # its raw dict lines; the callback prints steps
    last = resume_checkpoint(ckpt_dir) if options.resume else None
    stop.training = True
    try:
        run_trainer(trainer, last)
    finally:
        stop.training = False
    return trainer
