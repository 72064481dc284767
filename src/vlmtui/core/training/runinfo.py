"""The run directory's bookkeeping around the stage loop: where each stage lives, what
`run.json` records about the run, and the phase each stage is in.

Kept out of the stage loop so the loop reads as the order of work, not of file writes.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any

from vlmtui.core.model.loading import Device
from vlmtui.core.recipes.recipe import TrainingRecipe
from vlmtui.core.rundir import RUN_JSON, WEIGHTS_JSON, read_json
from vlmtui.core.training.progress import RunFiles, package_versions
from vlmtui.core.training.request import TrainRequest


def stage_dirs(output: Path, count: int) -> list[Path]:
    """A single stage trains in the run directory itself; several in `stage1/`, `stage2/`, …"""
    return [output] if count == 1 else [output / f"stage{i}" for i in range(1, count + 1)]


def unfinished_stage(output: Path, count: int, stage: int) -> int | None:
    """The first stage before `stage` (1-based) that has no saved weights, or None."""
    dirs = stage_dirs(output, count)
    return next((i for i in range(1, stage) if not (dirs[i - 1] / WEIGHTS_JSON).is_file()), None)


def write_run_info(
    files: RunFiles,
    req: TrainRequest,
    device: Device,
    stages: list[TrainingRecipe],
    dirs: list[Path],
) -> None:
    """Record in run.json what this run is; `started` survives a resume."""
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
        stages=[{"name": s.name, "dir": str(d)} for s, d in zip(stages, dirs, strict=False)],
    )
    files.write_run_info(info)


class PhaseLog:
    """The phase the run is in (`loading`, `training`, `saving`), written to status.json and
    events.jsonl on the main process and remembered everywhere, so a failure can say during
    which phase it happened."""

    def __init__(self, files: RunFiles | None) -> None:
        self.files = files
        self.during = "loading"

    def enter(self, phase: str, tag: dict[str, Any], **status: Any) -> None:
        """Enter `phase` of the stage `tag` names (`stage`, `stages`, …), with more status."""
        if self.files:
            self.during = phase
            self.files.set_status(phase, **status, **tag)
            self.files.append_event({"phase": phase, "stage": tag["stage"], "time": time.time()})
