"""`vlmtui train`: run a recipe in the foreground, writing the run directory."""

from __future__ import annotations

import argparse
import os
import traceback
from pathlib import Path
from typing import TYPE_CHECKING

from vlmtui.cli.recipes_cmd import add_recipes_file_arg
from vlmtui.core.errors import BadInput, WorkFailed

if TYPE_CHECKING:
    from vlmtui.core.recipes.recipe import TrainingRecipe
    from vlmtui.core.training.train import TrainRequest


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a recipe in the foreground")
    p.add_argument("--recipe", required=True, help="recipe name (see `vlmtui recipes`)")
    p.add_argument("--model", required=True, type=Path, help="base checkpoint directory")
    p.add_argument("--data", required=True, type=Path, help="dataset dir, JSONL or COCO JSON")
    p.add_argument("--output", required=True, type=Path, help="run directory to write")
    p.add_argument(
        "--gpu",
        default=None,
        help="GPU index, or 'cpu' (default: the first GPU, else CPU). "
        "Several GPUs run through `vlmtui launch --gpu 0,1`",
    )
    p.add_argument(
        "--strategy",
        default="ddp",
        help="ddp (default: a whole model per process) or fsdp (sharded over the processes "
        "of a torchrun launch, e.g. `vlmtui launch --gpu 0,1 --strategy fsdp`)",
    )
    p.add_argument("--max-steps", type=int, default=None, help="override the recipe's steps")
    p.add_argument("--save-steps", type=int, default=200, help="checkpoint every N steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    p.add_argument(
        "--allow-normalized",
        action="store_true",
        help="boxes all within [0, 1] are fractions of the image size: scale them to pixels",
    )
    p.add_argument(
        "--stage",
        type=int,
        default=None,
        help="train only stage N of a multi-stage recipe (the earlier stages must be done)",
    )
    add_recipes_file_arg(p)
    p.set_defaults(func=run)


def select_gpu(gpu: str | None) -> str:
    """Validate --gpu and pin this process to it via CUDA_VISIBLE_DEVICES (before torch loads)."""
    if gpu is None or "WORLD_SIZE" in os.environ:
        return os.environ.get("CUDA_VISIBLE_DEVICES", "")
    if gpu == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
        return "cpu"
    if not gpu.isdigit():
        raise BadInput(f"--gpu: expected a GPU index or 'cpu', got {gpu!r}")
    from vlmtui.core.fleet.gpus import local_gpus

    # The same source `vlmtui gpus` and `launch` use: NVML, else nvidia-smi.
    indices = sorted(g.index for g in local_gpus().gpus)
    if int(gpu) not in indices:
        found = f"found {', '.join(map(str, indices))}" if indices else "no NVIDIA GPU found"
        raise BadInput(f"--gpu: GPU {gpu} does not exist on this machine ({found})")
    os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    return gpu


def record_refusal(output: Path, exc: BadInput) -> None:
    """A launched run (status `pending`) refused before training: say why in status.json,
    where `runs` and the app look, rather than only "exited with code 2"."""
    from vlmtui.core.rundir import STATUS, read_status, write_json_atomic

    status = read_status(output) if output.is_dir() and os.environ.get("RANK", "0") == "0" else None
    if status and status.get("state") == "pending":
        status.update(state="failed", exit_code=2, error=str(exc), during="checking")
        write_json_atomic(output / STATUS, status)


def run(args: argparse.Namespace) -> int:
    try:
        req = check_request(args)
    except BadInput as exc:
        record_refusal(args.output, exc)
        raise
    from vlmtui.core.quiet import quiet_libraries
    from vlmtui.core.training.progress import output_log
    from vlmtui.core.training.train import run_training

    quiet_libraries()
    with output_log(args.output):
        try:
            code = run_training(req)
        except (BadInput, WorkFailed):
            raise
        except Exception:
            # The work failed: the traceback belongs in output.log; status.json has the summary.
            traceback.print_exc()
            return 1
        if code == 0 and os.environ.get("RANK", "0") == "0":
            print(next_step(args.output, args.data))
        return code


def check_request(args: argparse.Namespace) -> TrainRequest:
    """Every check that needs no model weights, then the run directory is created."""
    from vlmtui.core.data.datasets import load_split
    from vlmtui.core.data.images import validate_images
    from vlmtui.core.model.loading import check_checkpoint, family_of_checkpoint
    from vlmtui.core.recipes.catalog import get_recipe
    from vlmtui.core.training.outputdir import check_output, make_output
    from vlmtui.core.training.runinfo import unfinished_stage
    from vlmtui.core.training.sharding import check_strategy
    from vlmtui.core.training.train import TrainRequest

    recipe = get_recipe(args.recipe, args.recipes)
    strategy = check_strategy(args.strategy)
    if strategy == "fsdp" and int(os.environ.get("WORLD_SIZE", "1")) < 2:
        raise BadInput(
            "--strategy fsdp: shards over 2 or more processes; start it with "
            "`vlmtui launch --gpu 0,1 --strategy fsdp` (or under torchrun)"
        )
    _check_numbers(args, recipe)
    family_of_checkpoint(args.model)
    if not args.data.exists():
        raise BadInput(f"--data: {args.data} does not exist")
    # Under torchrun only rank 0 checks the run folder and decodes the images: another rank
    # would race rank 0's first status.json write, and a refusal on rank 0 ends them all.
    main = os.environ.get("RANK", "0") == "0"
    if main:
        check_output(args.output, model=args.model, data=args.data, resume=args.resume)
    gpu = select_gpu(args.gpu)
    records = load_split(args.data, "train", allow_normalized=args.allow_normalized)
    if main:
        validate_images(records)
    if args.stage is not None:
        missing = unfinished_stage(args.output, len(recipe.stages) or 1, args.stage)
        if missing is not None:  # found in the stage loop, this left a failed run directory
            raise BadInput(f"--stage {args.stage}: stage {missing} has not finished")
    check_checkpoint(args.model)  # last: it imports torch and transformers
    make_output(args.output)
    return TrainRequest(
        recipe=recipe,
        model=args.model,
        data=args.data,
        output=args.output,
        max_steps=args.max_steps,
        resume=args.resume,
        save_steps=args.save_steps,
        seed=args.seed,
        recipe_files=tuple(args.recipes),
        gpu=gpu,
        allow_normalized=args.allow_normalized,
        strategy=strategy,
        stage=args.stage,
    )


def _check_numbers(args: argparse.Namespace, recipe: TrainingRecipe) -> None:
    from vlmtui.core.recipes.recipe import check_count

    stages = max(1, len(recipe.stages))
    if args.stage is not None and not 1 <= args.stage <= stages:
        raise BadInput(f"--stage: recipe {recipe.name} has {stages} stage(s), got {args.stage}")
    for flag, value in (("--max-steps", args.max_steps), ("--save-steps", args.save_steps)):
        check_count(flag, value)
    if not 0 <= args.seed < 2**32:  # numpy's seed range; past it set_seed fails mid-start
        raise BadInput(f"--seed: must be 0 to {2**32 - 1}, got {args.seed}")


def next_step(output: Path, data: Path) -> str:
    """The closing line: where the weights are and the command that evaluates them."""
    import shlex

    from vlmtui.core.rundir import WEIGHTS_JSON, read_json

    record = read_json(output / WEIGHTS_JSON) or {}
    what = "adapter" if record.get("kind") == "adapter" else "model"
    where = record.get("path") or str(output)
    run, d = shlex.quote(str(output)), shlex.quote(str(data))
    return f"{what} saved to {where}; next: vlmtui eval {run} --data {d}"
