"""`vlmtui train`: run a recipe in the foreground, writing the run directory."""

from __future__ import annotations

import argparse
import os
import traceback
from pathlib import Path

from vlmtui.cli.recipes_cmd import add_recipes_file_arg
from vlmtui.core.errors import BadInput


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
    p.add_argument("--max-steps", type=int, default=None, help="override the recipe's steps")
    p.add_argument("--save-steps", type=int, default=200, help="checkpoint every N steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
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


def run(args: argparse.Namespace) -> int:
    from vlmtui.core.model.loading import family_of_checkpoint
    from vlmtui.core.recipes.recipe import get_recipe

    recipe = get_recipe(args.recipe, args.recipes)
    if args.max_steps is not None and args.max_steps < 1:
        raise BadInput(f"--max-steps: must be at least 1, got {args.max_steps}")
    family_of_checkpoint(args.model)
    if not args.data.exists():
        raise BadInput(f"--data: {args.data} does not exist")
    status = args.output / "status.json"
    if status.exists() and not args.resume:
        from vlmtui.core.training.progress import read_status

        state = (read_status(args.output) or {}).get("state")
        if state not in (None, "pending"):
            raise BadInput(f"--output: {args.output} already holds a run ({state}); use --resume")
    gpu = select_gpu(args.gpu)
    from vlmtui.core.data.datasets import load_split
    from vlmtui.core.training.train import TrainRequest, run_training

    load_split(args.data, "train")
    req = TrainRequest(
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
    )
    from vlmtui.core.quiet import quiet_libraries
    from vlmtui.core.training.progress import output_log

    quiet_libraries()
    with output_log(args.output):
        try:
            code = run_training(req)
        except BadInput:
            raise
        except Exception:
            # The work failed: the traceback belongs in output.log; status.json has the summary.
            traceback.print_exc()
            return 1
        if code == 0:
            print(next_step(args.output, args.data))
        return code


def next_step(output: Path, data: Path) -> str:
    """The closing line: where the weights are and the command that evaluates them."""
    import shlex

    from vlmtui.core.training.progress import read_json

    record = read_json(output / "weights.json") or {}
    what = "adapter" if record.get("kind") == "adapter" else "model"
    where = record.get("path") or str(output)
    run, d = shlex.quote(str(output)), shlex.quote(str(data))
    return f"{what} saved to {where}; next: vlmtui eval {run} --data {d}"
