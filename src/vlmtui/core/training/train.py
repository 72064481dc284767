"""Run a recipe with TRL's SFTTrainer and keep the run directory up to date.

This is the stage loop: a multi-stage recipe runs its stages in `stage1/`, `stage2/`, … and
each stage loads the previous stage's saved weights. The pieces it drives live beside it:
`prepare` (model and trainable set), `fitting` (the trainer), `savestage` (the weights),
`runinfo` (run.json and the phase log), `process` (ranks and stop signals).
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

from vlmtui.core.errors import BadInput, WorkFailed
from vlmtui.core.model.loading import Device, detect_device
from vlmtui.core.recipes.catalog import stage_recipes
from vlmtui.core.recipes.recipe import TrainingRecipe
from vlmtui.core.rundir import WEIGHTS_JSON, read_json, write_json_atomic
from vlmtui.core.training.checkpoints import KEEP_CHECKPOINTS, barrier
from vlmtui.core.training.diskspace import disk_full_reason, ensure_free, need_for_model
from vlmtui.core.training.fitting import FitOptions, fit
from vlmtui.core.training.prepare import prepare_stage
from vlmtui.core.training.process import StopRequested, StopState, is_main_process
from vlmtui.core.training.progress import RunFiles
from vlmtui.core.training.request import TrainRequest
from vlmtui.core.training.runinfo import PhaseLog, stage_dirs, write_run_info
from vlmtui.core.training.savestage import save_stage

__all__ = ["TrainRequest", "is_main_process", "prepare_stage", "run_training", "save_stage"]


class _StageLoop:
    """One run's stages, trained in order; what every stage shares is held here."""

    def __init__(
        self,
        req: TrainRequest,
        stages: list[TrainingRecipe],
        device: Device,
        files: RunFiles | None,
        stop: StopState,
    ) -> None:
        self.req = req
        self.device = device
        self.files = files
        self.stop = stop
        self.log = PhaseLog(files)
        self.stages = stages
        self.dirs = stage_dirs(req.output, len(self.stages))

    def run(self) -> int:
        req, files, count = self.req, self.files, len(self.stages)
        records = self._load_records()
        model_path = req.model
        for i, (recipe, stage_dir) in enumerate(zip(self.stages, self.dirs, strict=False), 1):
            stage_dir.mkdir(parents=True, exist_ok=True)
            done = read_json(stage_dir / WEIGHTS_JSON)
            if req.stage is not None and i > req.stage:
                break
            if req.stage is not None and i < req.stage:
                if not done:
                    raise BadInput(f"--stage {req.stage}: stage {i} has not finished")
                model_path = Path(done["path"])
                continue
            if req.resume and done and count > 1:
                model_path = Path(done["path"])
                continue
            model_path = self._train_stage(i, recipe, stage_dir, model_path, records)
        if files and req.stage is not None and req.stage < count:
            # The next stage runs as a job of its own; until it starts the run waits.
            files.set_status("pending", stage=req.stage, stages=count, stage_done=True)
            return 0
        if files:
            final = read_json(self.dirs[count - 1] / WEIGHTS_JSON)
            write_json_atomic(req.output / WEIGHTS_JSON, final)
            files.set_status("finished", exit_code=0, error=None, finished=time.time())
        return 0

    def _load_records(self) -> Any:
        from vlmtui.core.data.datasets import load_split

        return load_split(self.req.data, "train", allow_normalized=self.req.allow_normalized)

    def _train_stage(
        self, i: int, recipe: TrainingRecipe, stage_dir: Path, model_path: Path, records: Any
    ) -> Path:
        """Load, train and save stage `i`; returns where its weights are."""
        from vlmtui.core.data.chat import to_trl_dataset

        req = self.req
        tag: dict[str, Any] = {"stage": i, "stages": len(self.stages), "stage_recipe": recipe.name}
        if req.stage is not None:
            tag["stage_done"] = False
        self.log.enter("loading", tag)
        prepared = prepare_stage(model_path, recipe, self.device, req.strategy)
        if is_main_process():
            ensure_free(stage_dir, need_for_model(prepared.model, KEEP_CHECKPOINTS))
        rows = to_trl_dataset(records, prepared.family, prepared.processor)
        trainable = prepared.summary.trainable_params
        self.log.enter("training", tag, trainable_params=trainable)
        options = FitOptions(
            max_steps=req.max_steps,
            resume=req.resume,
            save_steps=req.save_steps,
            seed=req.seed,
            files=self.files,
            stage=i,
            stop=self.stop,
            strategy=req.strategy,
        )
        fit(prepared, recipe, rows, stage_dir, self.device, options)
        if self.stop.signum is not None:
            raise StopRequested(signal.Signals(self.stop.signum).name)
        self.log.enter("saving", tag)
        save_stage(prepared, stage_dir, recipe)  # every rank: a sharded model is gathered
        barrier()  # the other ranks wait for rank 0 to finish saving the stage
        del prepared
        return Path(read_json(stage_dir / WEIGHTS_JSON)["path"])


def _during(loop: _StageLoop | None) -> str:
    return loop.log.during if loop is not None else "loading"


def run_training(req: TrainRequest) -> int:
    """Train every stage of the recipe into req.output. Returns the process exit code."""
    stages = stage_recipes(req.recipe, req.recipe_files)
    files = RunFiles(req.output) if is_main_process() else None
    stop = StopState()
    previous = {s: signal.signal(s, stop.handler) for s in (signal.SIGTERM, signal.SIGINT)}
    loop: _StageLoop | None = None
    try:
        # Inside the try: a stop while torch is imported (detect_device) ended in a
        # StopRequested traceback in output.log and exit code 1.
        loop = _StageLoop(req, stages, detect_device(), files, stop)
        if files:
            write_run_info(files, req, loop.device, loop.stages, loop.dirs)
        return loop.run()
    except StopRequested as exc:
        code = 128 + (stop.signum or signal.SIGTERM)
        if files:
            error = f"stopped by {exc}"
            files.set_status("stopped", exit_code=code, error=error, during=_during(loop))
        return code
    except (BadInput, WorkFailed) as exc:
        if files:
            code = 2 if isinstance(exc, BadInput) else 1
            files.set_status("failed", exit_code=code, error=str(exc), during=_during(loop))
        raise
    except Exception as exc:
        if files:
            error = disk_full_reason(exc, req.output) or f"{type(exc).__name__}: {exc}"
            files.set_status("failed", exit_code=1, error=error, during=_during(loop))
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
