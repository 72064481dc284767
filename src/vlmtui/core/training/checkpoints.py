"""Training checkpoints that restore exactly what trained, and are never seen half-written.

Why our own: transformers 5 saves a model in its checkpoint key layout (`visual.blocks.…`,
`model.layers.…`) but the Trainer loads a checkpoint back with a plain non-strict
`load_state_dict` on the module names (`model.visual.…`), so every key missed and a resumed
full fine-tune silently restarted from the base weights. A checkpoint here holds the
trainable parameters under the live model's own names (`trainable.safetensors`), which is all
a run changes (frozen weights come from the base checkpoint), and loading it is strict: a
missing, unexpected or misshapen tensor is an error naming the keys.

A checkpoint is written under `.partial-checkpoint-N` and renamed to `checkpoint-N` once
complete, so a full disk or a kill mid-save never leaves a `checkpoint-N` that `--resume`
would pick and fail on.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from vlmtui.core.errors import WorkFailed

KEEP_CHECKPOINTS = 2
TRAINABLE_FILE = "trainable.safetensors"
TRAINER_STATE = "trainer_state.json"
PREFIX = "checkpoint-"
PARTIAL = ".partial-"
# Files a resumable checkpoint must hold (the optimizer is absent only with save_only_model).
REQUIRED = (TRAINABLE_FILE, TRAINER_STATE)


def trainable_state(model: Any) -> dict[str, Any]:
    """The parameters that train, by the live model's names, on the CPU."""
    return {
        name: p.detach().cpu().contiguous()
        for name, p in model.named_parameters()
        if p.requires_grad
    }


def save_trainables(model: Any, directory: Path) -> None:
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    save_file(trainable_state(model), str(directory / TRAINABLE_FILE), metadata={"format": "pt"})


def _few(keys: list[str]) -> str:
    shown = ", ".join(keys[:3])
    return f"{shown} (+{len(keys) - 3} more)" if len(keys) > 3 else shown


def load_trainables(model: Any, directory: Path) -> int:
    """Copy a checkpoint's tensors into the model's trainable parameters; returns the count.

    Raises WorkFailed naming the keys when the checkpoint and the trainable set differ.
    """
    import torch
    from safetensors.torch import load_file

    path = directory / TRAINABLE_FILE
    try:
        saved = load_file(str(path), device="cpu")
    except (OSError, ValueError, RuntimeError) as exc:
        raise WorkFailed(f"{path}: cannot read checkpoint ({exc})") from None
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    missing = sorted(set(params) - set(saved))
    unexpected = sorted(set(saved) - set(params))
    problems = []
    if missing:
        problems.append(f"missing keys: {_few(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_few(unexpected)}")
    shapes = sorted(n for n in set(params) & set(saved) if params[n].shape != saved[n].shape)
    if shapes:
        problems.append(f"shape mismatch: {_few(shapes)}")
    if problems:
        raise WorkFailed(
            f"{directory}: checkpoint does not match this recipe's trainable set "
            f"({'; '.join(problems)})"
        )
    with torch.no_grad():
        for name, param in params.items():
            param.copy_(saved[name].to(device=param.device, dtype=param.dtype))
    return len(params)


def step_of(path: Path) -> int:
    return int(path.name.removeprefix(PREFIX))


def incomplete_reason(path: Path) -> str | None:
    """Why `path` cannot be resumed from, or None when it is complete."""
    missing = [name for name in REQUIRED if not (path / name).is_file()]
    return f"missing {', '.join(missing)}" if missing else None


def say_on_rank0(line: str) -> None:
    if os.environ.get("RANK", "0") == "0":
        print(line, flush=True)


def resume_checkpoint(ckpt_dir: Path, say: Any = say_on_rank0) -> Path | None:
    """The newest complete `checkpoint-N` in ckpt_dir; says which it skipped and which it uses."""
    found = [
        p
        for p in (ckpt_dir.iterdir() if ckpt_dir.is_dir() else ())
        if p.is_dir() and p.name.startswith(PREFIX) and p.name.removeprefix(PREFIX).isdigit()
    ]
    for path in sorted(found, key=step_of, reverse=True):
        reason = incomplete_reason(path)
        if reason is None:
            say(f"[vlmtui] resuming from {path} (step {step_of(path)})")
            return path
        say(f"[vlmtui] skipping incomplete checkpoint {path} ({reason})")
    say(f"[vlmtui] no complete checkpoint in {ckpt_dir}: starting from step 0")
    return None


def _publish(staging: Path, final: Path) -> None:
    """Rename a finished checkpoint into place (replacing one of the same step)."""
    if final.exists():
        old = final.with_name(f"{PARTIAL}old-{final.name}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(staging, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, final)


def clear_partials(ckpt_dir: Path) -> None:
    """Remove checkpoints a crash left half-written."""
    if ckpt_dir.is_dir():
        for path in ckpt_dir.glob(f"{PARTIAL}*"):
            shutil.rmtree(path, ignore_errors=True)


@contextmanager
def staged(final: Path) -> Iterator[Path]:
    """A folder to write `final` into; renamed to `final` only when the block succeeds."""
    tmp = final.with_name(f"{PARTIAL}{final.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _publish(tmp, final)


def barrier() -> None:
    """Under torchrun, wait for every rank (no-op in a single process)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def run_trainer(trainer: Any, checkpoint: Path | None) -> None:
    """`trainer.train()`; an unreadable image mid-run first saves a checkpoint, then names
    the annotation row, so fixing the file and `--resume` loses no step."""
    from vlmtui.core.data.images import DataError

    if checkpoint is not None and _reached_the_end(checkpoint, trainer):
        # Stopped or killed after its last checkpoint, before its weights were saved: the
        # Trainer would train one step past max_steps (it checks only after a step).
        say_on_rank0(f"[vlmtui] {checkpoint.name} is the last step: nothing left to train")
        trainer._load_from_checkpoint(str(checkpoint))
        return
    try:
        trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    except DataError as exc:
        step = trainer.state.global_step
        if step == 0:
            raise
        trainer._save_checkpoint(trainer.model, trial=None)
        raise DataError(
            f"{exc} (at step {step}; saved {PREFIX}{step}: fix the file, then --resume)"
        ) from None


def _reached_the_end(checkpoint: Path, trainer: Any) -> bool:
    """Whether `checkpoint` is at the run's last step (max_steps, or the epochs' steps the
    checkpoint planned when max_steps is not set). Not for FSDP, whose checkpoints load only
    inside `train`."""
    import json

    if trainer.is_fsdp_enabled:
        return False
    try:
        state = json.loads((checkpoint / TRAINER_STATE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    wanted = trainer.args.max_steps if trainer.args.max_steps > 0 else state.get("max_steps")
    step = state.get("global_step")
    return isinstance(step, int) and isinstance(wanted, int) and 0 < wanted <= step


def trainer_class() -> type:
    """SFTTrainer whose checkpoints are `trainable.safetensors`, staged and renamed.

    FSDP keeps the Trainer's own sharded save and load (its state dict is gathered there).
    """
    from transformers.trainer_utils import rotate_checkpoints
    from trl import SFTTrainer

    class CheckpointingTrainer(SFTTrainer):
        _staging: str | None = None

        def _get_output_dir(self, trial: Any) -> str:
            return self._staging or str(super()._get_output_dir(trial))

        def _save_checkpoint(self, model: Any, trial: Any) -> None:
            run_dir = Path(str(self.args.output_dir))
            name = f"{PREFIX}{self.state.global_step}"
            staging = run_dir / f"{PARTIAL}{name}"
            if self.args.should_save:
                clear_partials(run_dir)
            barrier()  # no rank writes into the staging folder before it is cleared
            self._staging = str(staging)
            try:
                super()._save_checkpoint(model, trial)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
            finally:
                self._staging = None
            barrier()  # every rank has written its RNG state into the staging folder
            if self.args.should_save:
                _publish(staging / name, run_dir / name)
                shutil.rmtree(staging, ignore_errors=True)
                rotate_checkpoints(str(run_dir), self.args.save_total_limit)
            barrier()

        def _save(self, output_dir: str | None = None, state_dict: Any = None) -> None:
            if self.is_fsdp_enabled:
                super()._save(output_dir, state_dict)
            elif self.args.should_save:
                save_trainables(self.model, Path(str(output_dir or self.args.output_dir)))

        def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Any = None) -> None:
            if self.is_fsdp_enabled:
                super()._load_from_checkpoint(resume_from_checkpoint, model)
            else:
                load_trainables(self.model, Path(resume_from_checkpoint))

    return CheckpointingTrainer
