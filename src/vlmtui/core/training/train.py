"""Run a recipe with TRL's SFTTrainer and keep the run directory up to date.

The trainable set comes from `policy.prepare_trainables` (the same path `vlmtui inspect`
uses); the optimizer is built from exactly those parameters, in one group per learning
rate, and their names are written to `trainable.json`. A multi-stage recipe runs its stages
in `stage1/`, `stage2/`, … and each stage loads the previous stage's saved weights.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlmtui.core.errors import BadInput, WorkFailed
from vlmtui.core.families import Family
from vlmtui.core.model.loading import (
    Device,
    detect_device,
    family_of_checkpoint,
    keep_adapters_fp32,
    load_model_for_recipe,
    load_processor,
)
from vlmtui.core.recipes.policy import TrainableSummary, prepare_trainables, strip_peft
from vlmtui.core.recipes.recipe import TrainingRecipe, stage_recipes
from vlmtui.core.rundir import (
    RUN_JSON,
    TRAINABLE_JSON,
    WEIGHTS_JSON,
    read_json,
    write_json_atomic,
)
from vlmtui.core.training.checkpoints import KEEP_CHECKPOINTS, barrier, staged
from vlmtui.core.training.diskspace import disk_full_reason, ensure_free, need_for_model
from vlmtui.core.training.progress import RunFiles, package_versions
from vlmtui.core.training.sharding import (
    Strategy,
    allow_fsdp_on_cpu,
    gathered_state_dict,
    is_sharded,
    loading_kwargs,
    trainer_kwargs,
)


class StopRequested(BaseException):
    """SIGTERM or SIGINT arrived outside the training loop: end as `stopped`.

    A BaseException, like KeyboardInterrupt, so that no library's `except Exception`
    swallows it or turns it into a failure while a model is loading.
    """


@dataclass(frozen=True)
class TrainRequest:
    """Everything one `vlmtui train` needs."""

    recipe: TrainingRecipe
    model: Path
    """Base checkpoint directory (config.json, weights, processor)."""
    data: Path
    """Detection dataset: a directory with train.jsonl/val.jsonl, a JSONL file or COCO JSON."""
    output: Path
    """Run directory."""
    max_steps: int | None = None
    """Overrides the recipe's max_steps for every stage."""
    resume: bool = False
    save_steps: int = 200
    seed: int = 0
    recipe_files: tuple[Path, ...] = ()
    argv: tuple[str, ...] = field(default_factory=lambda: tuple(sys.argv))
    gpu: str = ""
    allow_normalized: bool = False
    """Boxes all within [0, 1] are normalised coordinates: scale them to pixels."""
    strategy: Strategy = "ddp"
    """`ddp`: a whole model per process; `fsdp`: sharded over the processes (sharding.py)."""
    stage: int | None = None
    """Train only this stage (1-based; the earlier ones must be done): a cluster runs a
    multi-stage recipe as one job per stage."""


@dataclass
class Prepared:
    """A model with its trainable set decided and checked, ready for the trainer."""

    model: Any
    processor: Any
    family: Family
    summary: TrainableSummary
    base_model: Path


class _StopState:
    def __init__(self) -> None:
        self.signum: int | None = None
        self.training = False

    def handler(self, signum: int, _frame: Any) -> None:
        self.signum = signum
        if not self.training:
            raise StopRequested(signal.Signals(signum).name)


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def prepare_stage(
    model_path: Path, recipe: TrainingRecipe, device: Device, strategy: Strategy = "ddp"
) -> Prepared:
    family = family_of_checkpoint(model_path)
    extra = loading_kwargs(strategy, recipe, device)
    model = load_model_for_recipe(model_path, recipe, device, family, **extra)
    model = prepare_trainables(model, recipe, family)
    from vlmtui.core.recipes.policy import summarize_trainables_by_area

    return Prepared(
        model=model,
        processor=load_processor(model_path),
        family=family,
        summary=summarize_trainables_by_area(model, family),
        base_model=Path(model_path),
    )


def build_optimizer(
    prepared: Prepared, recipe: TrainingRecipe, config: Any = None
) -> tuple[Any, list[str]]:
    """The optimizer the Trainer would build from `config` (fused AdamW by default), over the
    trainable parameters in one group per area learning rate."""
    import torch
    from transformers import Trainer

    kwargs: dict[str, Any]
    if config is None:
        cls, kwargs = torch.optim.AdamW, {}
    else:
        cls, kwargs = Trainer.get_optimizer_cls_and_kwargs(config, prepared.model)
    kwargs = {k: v for k, v in kwargs.items() if k != "lr"}
    groups: dict[float, list[Any]] = {}
    names: list[str] = []
    for name, param in prepared.model.named_parameters():
        if not param.requires_grad:
            continue
        area = prepared.family.area_of(strip_peft(name))
        lr = recipe.area(area).learning_rate or recipe.learning_rate
        groups.setdefault(lr, []).append(param)
        names.append(name.removeprefix("base_model.model."))
    optimizer = cls(
        [{"params": ps, "lr": lr} for lr, ps in groups.items()],
        lr=recipe.learning_rate,
        weight_decay=0.0,
        **kwargs,
    )
    return optimizer, sorted(names)


def _print_step(step: int, max_steps: int, logs: dict[str, Any], elapsed_s: float) -> None:
    """`step 3/10  loss 6.1950  lr 2e-04  0:04` instead of the Trainer's raw log dicts."""
    from vlmtui.core.textfmt import clock

    parts = [f"step {step}/{max_steps}", f"loss {logs['loss']:.4f}"]
    if isinstance(logs.get("learning_rate"), (int, float)):
        parts.append(f"lr {logs['learning_rate']:.0e}")
    parts.append(clock(elapsed_s))
    print("  ".join(parts), flush=True)


def _progress_callback(files: RunFiles | None, stage: int, stop: _StopState) -> Any:
    from transformers import TrainerCallback

    class ProgressCallback(TrainerCallback):
        """Writes one events.jsonl line per logged step; turns a stop signal into a save."""

        def __init__(self) -> None:
            self.started = time.monotonic()

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
            if files is None or not state.is_world_process_zero or not logs:
                return
            if "loss" in logs:
                _print_step(
                    state.global_step, state.max_steps, logs, time.monotonic() - self.started
                )
                files.append_event(
                    {
                        "stage": stage,
                        "step": state.global_step,
                        "max_steps": state.max_steps,
                        "loss": logs.get("loss"),
                        "learning_rate": logs.get("learning_rate"),
                        "grad_norm": logs.get("grad_norm"),
                        "epoch": logs.get("epoch"),
                        "elapsed_s": round(time.monotonic() - self.started, 3),
                        "time": time.time(),
                    }
                )
            elif "train_runtime" in logs:
                files.append_event({"stage": stage, "summary": dict(logs), "time": time.time()})

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if stop.signum is not None:
                control.should_save = True
                control.should_training_stop = True

    return ProgressCallback()


def fit(
    prepared: Prepared,
    recipe: TrainingRecipe,
    rows: Any,
    stage_dir: Path,
    device: Device,
    *,
    max_steps: int | None,
    resume: bool = False,
    save_steps: int = 200,
    seed: int = 0,
    files: RunFiles | None = None,
    stage: int = 1,
    stop: _StopState | None = None,
    callbacks: tuple[Any, ...] = (),
    strategy: Strategy = "ddp",
) -> Any:
    """Train a prepared model with SFTTrainer (plus extra TrainerCallbacks); returns the trainer."""
    from trl import SFTConfig

    from vlmtui.core.training.checkpoints import resume_checkpoint, run_trainer, trainer_class
    from vlmtui.core.training.collate import AssistantOnlyCollator

    stop = stop or _StopState()
    ckpt_dir = stage_dir / "checkpoints"
    steps = max_steps or recipe.max_steps
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    config = SFTConfig(
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
        save_steps=save_steps,
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
        seed=seed,
        disable_tqdm=True,
        **trainer_kwargs(strategy, prepared.model, recipe),
    )
    optimizer, names = build_optimizer(prepared, recipe, config)
    if files is None or is_main_process():
        write_json_atomic(
            stage_dir / TRAINABLE_JSON,
            {**prepared.summary.to_dict(), "optimizer_params": names, "recipe": recipe.name},
        )
    # TRL casts every trainable parameter of a quantized model to bf16 (QLoRA). A base weight
    # trained in full beside the adapters (the MoE router, `also_full`) multiplies its layer's
    # activations directly, so it keeps its dtype.
    full = {n: p.dtype for n, p in prepared.model.named_parameters() if p.requires_grad}
    full = {n: d for n, d in full.items() if ".lora_" not in n}
    allow_fsdp_on_cpu(strategy, on_cpu=not device.is_cuda)
    trainer = trainer_class()(
        model=prepared.model,
        args=config,
        train_dataset=rows,
        processing_class=prepared.processor,
        data_collator=AssistantOnlyCollator(prepared.processor, prepared.family),
        optimizers=(None, None) if strategy == "fsdp" else (optimizer, None),
        callbacks=[_progress_callback(files, stage, stop), *callbacks],
    )
    if strategy == "fsdp":
        # The Trainer refuses a ready optimizer under FSDP (one built on parameters sharding
        # replaces), but FSDP2 is prepared together with the optimizer and accelerate maps it
        # onto the sharded parameters: handed over here, it is used as create_optimizer's.
        trainer.optimizer = optimizer
    if recipe.quantized:
        keep_adapters_fp32(prepared.model)
    for name, param in prepared.model.named_parameters():
        if name in full and param.dtype != full[name]:
            param.data = param.data.to(full[name])
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # its raw dict lines; the callback prints steps
    last = resume_checkpoint(ckpt_dir) if resume else None
    stop.training = True
    try:
        run_trainer(trainer, last)
    finally:
        stop.training = False
    return trainer


def save_stage(
    prepared: Prepared, stage_dir: Path, recipe: TrainingRecipe
) -> dict[str, Any] | None:
    """Save what the stage trained; returns its weights.json record (None on ranks > 0).

    Every rank calls it: a sharded model is first gathered whole onto rank 0."""
    model = prepared.model
    is_peft = hasattr(model, "peft_config")
    state = gathered_state_dict(model, trainable_only=is_peft) if is_sharded(model) else None
    if not is_main_process():
        return None
    kind = "adapter" if is_peft else "full"
    out = stage_dir / ("adapter" if is_peft else "model")
    with staged(out) as tmp:  # a full disk mid-save leaves no half-written weights
        model.save_pretrained(str(tmp), state_dict=state)
        trained = (
            state
            if state is not None
            else {n: p for n, p in model.named_parameters() if p.requires_grad}
        )
        full = {
            strip_peft(n.removeprefix("base_model.model.")): p.detach().cpu().contiguous()
            for n, p in trained.items()
            if is_peft and ".lora_" not in n
        }
        if full:
            from safetensors.torch import save_file

            save_file(full, str(tmp / "full_params.safetensors"))
        prepared.processor.save_pretrained(str(tmp))
    record = {
        "kind": kind,
        "path": str(out.resolve()),
        "base_model": str(prepared.base_model.resolve()),
        "family": prepared.family.name,
        "recipe": recipe.name,
        "quantization": recipe.quantization,
    }
    write_json_atomic(stage_dir / WEIGHTS_JSON, record)
    return record


def run_training(req: TrainRequest) -> int:
    """Train every stage of the recipe into req.output. Returns the process exit code."""
    from vlmtui.core.data.chat import to_trl_dataset
    from vlmtui.core.data.datasets import load_split

    stages = stage_recipes(req.recipe, req.recipe_files)
    main = is_main_process()
    files = RunFiles(req.output) if main else None
    stop = _StopState()
    previous = {s: signal.signal(s, stop.handler) for s in (signal.SIGTERM, signal.SIGINT)}
    device = detect_device()
    stage_dirs = (
        [req.output]
        if len(stages) == 1
        else [req.output / f"stage{i}" for i in range(1, len(stages) + 1)]
    )
    if files:
        info = read_json(req.output / RUN_JSON) or {}
        info.update(
            recipe=req.recipe.name,
            recipe_config=req.recipe.to_dict(),
            model=str(req.model),
            data=str(req.data),
            argv=list(req.argv),
            host=socket.gethostname(),
            gpu=req.gpu or os.environ.get("CUDA_VISIBLE_DEVICES", ""),
            device=device.torch_device,
            world_size=int(os.environ.get("WORLD_SIZE", "1")),
            strategy=req.strategy,
            versions=package_versions(),
            started=info.get("started", time.time()),
            pid=os.getpid(),
            stages=[
                {"name": s.name, "dir": str(d)} for s, d in zip(stages, stage_dirs, strict=False)
            ],
        )
        files.write_run_info(info)
    state = "loading"
    try:
        records = load_split(req.data, "train", allow_normalized=req.allow_normalized)
        model_path = req.model
        for i, (recipe, stage_dir) in enumerate(zip(stages, stage_dirs, strict=False), start=1):
            stage_dir.mkdir(parents=True, exist_ok=True)
            done = read_json(stage_dir / WEIGHTS_JSON)
            if req.stage is not None and i > req.stage:
                break
            if req.stage is not None and i < req.stage:
                if not done:
                    raise BadInput(f"--stage {req.stage}: stage {i} has not finished")
                model_path = Path(done["path"])
                continue
            if req.resume and done and len(stages) > 1:
                model_path = Path(done["path"])
                continue
            tag: dict[str, Any] = {"stage": i, "stages": len(stages), "stage_recipe": recipe.name}
            if req.stage is not None:
                tag["stage_done"] = False
            if files:
                files.set_status(state := "loading", **tag)
                files.append_event({"phase": "loading", "stage": i, "time": time.time()})
            prepared = prepare_stage(model_path, recipe, device, req.strategy)
            if main:
                ensure_free(stage_dir, need_for_model(prepared.model, KEEP_CHECKPOINTS))
            rows = to_trl_dataset(records, prepared.family, prepared.processor)
            if files:
                files.set_status(
                    state := "training", trainable_params=prepared.summary.trainable_params, **tag
                )
                files.append_event({"phase": "training", "stage": i, "time": time.time()})
            fit(
                prepared,
                recipe,
                rows,
                stage_dir,
                device,
                max_steps=req.max_steps,
                resume=req.resume,
                save_steps=req.save_steps,
                seed=req.seed,
                files=files,
                stage=i,
                stop=stop,
                strategy=req.strategy,
            )
            if stop.signum is not None:
                raise StopRequested(signal.Signals(stop.signum).name)
            if files:
                files.set_status(state := "saving", **tag)
                files.append_event({"phase": "saving", "stage": i, "time": time.time()})
            save_stage(prepared, stage_dir, recipe)  # every rank: a sharded model is gathered
            barrier()  # the other ranks wait for rank 0 to finish saving the stage
            model_path = Path(read_json(stage_dir / WEIGHTS_JSON)["path"])
            del prepared
        if files and req.stage is not None and req.stage < len(stages):
            # The next stage runs as a job of its own; until it starts the run waits.
            files.set_status("pending", stage=req.stage, stages=len(stages), stage_done=True)
            return 0
        if files:
            final = read_json(stage_dirs[len(stages) - 1] / WEIGHTS_JSON)
            write_json_atomic(req.output / WEIGHTS_JSON, final)
            files.set_status("finished", exit_code=0, error=None, finished=time.time())
        return 0
    except StopRequested as exc:
        code = 128 + (stop.signum or signal.SIGTERM)
        if files:
            files.set_status("stopped", exit_code=code, error=f"stopped by {exc}", during=state)
        return code
    except (BadInput, WorkFailed) as exc:
        if files:
            code = 2 if isinstance(exc, BadInput) else 1
            files.set_status("failed", exit_code=code, error=str(exc), during=state)
        raise
    except Exception as exc:
        if files:
            error = disk_full_reason(exc, req.output) or f"{type(exc).__name__}: {exc}"
            files.set_status("failed", exit_code=1, error=error, during=state)
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
