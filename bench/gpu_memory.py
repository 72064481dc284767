"""Peak GPU memory of real training against vlmtui's estimate (issue 12, item 6).

Builds Qwen2-VL-2B and -7B from the shipped configs with random weights directly on the GPU
(no download; the tokenizer and processor are the tiny demo's, with the model's special-token
ids pointed at it and the image size fixed so that one synthetic image plus the text makes
about --tokens tokens), saves each once to a scratch dir, then trains --steps steps of every
built-in recipe through the same code as `vlmtui train` (prepare_stage + fit) at batch 1, and
prints torch.cuda.max_memory_allocated / max_memory_reserved against the estimate of
`vlmtui.core.inspection` for that recipe and shape. A row whose estimate is off from the
allocated peak by more than 15 % is flagged. r3-two-stage's stages are r2-vision-only and
r1-llm-only on a model of the same shapes, so its rows reuse those two measurements. With
two or more GPUs one recipe is repeated under `--strategy fsdp` (torchrun, 2 processes).

Without CUDA it prints one line saying why and exits 0. `--smoke` runs the whole path on the
CPU with the tiny demo model instead (no memory figures), so the script is tested without a
GPU. One H200: about 4 minutes for both models.

usage: python bench/gpu_memory.py [--models 2B,7B] [--steps 10] [--tokens 1024] [--smoke]
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MODELS = {"2B": "Qwen/Qwen2-VL-2B-Instruct", "7B": "Qwen/Qwen2-VL-7B-Instruct"}
MEASURED = ("r1-llm-only", "r2-vision-only", "r4-joint")
R3 = ("r3-two-stage", ("r2-vision-only", "r1-llm-only"))
FSDP_RECIPE = "r4-joint"
TOLERANCE = 0.15
CELL = 28
"""Pixels per image token side: patch 14 × spatial merge 2 (both families' shipped configs)."""
GIB = 1024**3


@dataclass(frozen=True)
class Row:
    model: str
    recipe: str
    allocated: int | None
    reserved: int | None
    estimate: int
    seconds: float

    @property
    def ratio(self) -> float | None:
        return None if not self.allocated else self.estimate / self.allocated

    def line(self) -> str:
        def g(n: int | None) -> str:
            return "n/a" if n is None else f"{n / GIB:.2f}"

        ratio = self.ratio
        flag = ""
        if ratio is not None and abs(ratio - 1) > TOLERANCE:
            flag = f"  <-- estimate off by {100 * (ratio - 1):+.0f}%"
        r = "n/a" if ratio is None else f"{ratio:.2f}"
        return (
            f"{self.model:<4} {self.recipe:<34} {g(self.allocated):>9} {g(self.reserved):>9} "
            f"{g(self.estimate):>9} {r:>6} {self.seconds:>6.1f}s{flag}"
        )


def processor_for(side: int) -> Any:
    from vlmtui.core.model.demo import build_processor

    return build_processor("qwen2-vl", pixels=(side * side, side * side))


def build_checkpoint(name: str, out: Path, side: int, device: str) -> Path:
    """A random-weight checkpoint of `name` (a shipped id, or `tiny` for the demo's config)
    built on `device`, with the demo tokenizer's special-token ids, saved to `out`."""
    import torch
    import transformers

    from vlmtui.core.model.demo import SPECIAL_TOKENS, build_config
    from vlmtui.core.model.resolve import config_object, resolve_model

    processor = processor_for(side)
    tok = processor.tokenizer
    if name == "tiny":
        config = build_config("qwen2-vl", tok)
    else:
        config = config_object(resolve_model(name))
        ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
        for key, token in (
            ("image_token_id", "<|image_pad|>"),
            ("video_token_id", "<|video_pad|>"),
            ("vision_start_token_id", "<|vision_start|>"),
            ("vision_end_token_id", "<|vision_end|>"),
        ):
            setattr(config, key, ids[token])
        for cfg in (config, config.text_config):
            cfg.bos_token_id = cfg.pad_token_id = ids["<|endoftext|>"]
            cfg.eos_token_id = ids["<|im_end|>"]
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    with torch.device(device):
        model = transformers.Qwen2VLForConditionalGeneration._from_config(config, dtype=dtype)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    del model
    release()
    return out


def release() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def image_side(tokens: int, scratch: Path) -> tuple[int, int]:
    """(image side in pixels, tokens per sample) so that one sample is about `tokens` long."""
    from vlmtui.core.data.chat import to_trl_dataset
    from vlmtui.core.data.datasets import load_split
    from vlmtui.core.data.shapes import make_shapes_dataset
    from vlmtui.core.families import QWEN2_VL
    from vlmtui.core.training.collate import AssistantOnlyCollator

    def length(side: int) -> int:
        data = make_shapes_dataset(scratch / f"probe{side}", n=2, size=(side, side))
        processor = processor_for(side)
        rows = to_trl_dataset(load_split(data, "train"), QWEN2_VL, processor)
        batch = AssistantOnlyCollator(processor, QWEN2_VL)([rows[0]])
        return int(batch["input_ids"].shape[1])

    probe = 4
    text = length(probe * CELL) - probe * probe
    k = max(2, math.isqrt(max(4, tokens - text)))
    return k * CELL, k * k + text


def no_checkpoints() -> None:
    """Training here ends without the Trainer's final checkpoint: writing 16 GB of 7B weights
    is not what is measured, and would take most of the time budget. The run's progress
    callback (which only writes run files, and there are none here) is replaced."""
    from transformers import TrainerCallback

    from vlmtui.core.training import fitting

    class NoSave(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            control.should_save = False

    fitting.progress_callback = lambda *a: NoSave()


def measure(model_dir: Path, recipe_name: str, data: Path, steps: int, device: Any) -> Any:
    """(allocated, reserved, seconds) of `steps` training steps of one single-stage recipe."""
    import torch

    from vlmtui.core.data.chat import to_trl_dataset
    from vlmtui.core.data.datasets import load_split
    from vlmtui.core.recipes.catalog import get_recipe
    from vlmtui.core.training.fitting import FitOptions, fit
    from vlmtui.core.training.prepare import prepare_stage

    recipe = get_recipe(recipe_name)
    cuda = device.is_cuda
    baseline = 0
    if cuda:
        release()
        torch.cuda.reset_peak_memory_stats()
        # Whatever an earlier recipe left allocated is not this one's.
        baseline = torch.cuda.memory_allocated()
        if baseline > GIB // 10:
            print(f"# {baseline / GIB:.2f} GiB still allocated before {recipe_name}")
    start = time.perf_counter()
    prepared = prepare_stage(model_dir, recipe, device)
    rows = to_trl_dataset(load_split(data, "train"), prepared.family, prepared.processor)
    with tempfile.TemporaryDirectory() as out:
        trainer = fit(prepared, recipe, rows, Path(out), device, FitOptions(max_steps=steps))
    seconds = time.perf_counter() - start
    peak = None
    if cuda:
        used = (torch.cuda.max_memory_allocated(), torch.cuda.max_memory_reserved())
        peak = tuple(n - baseline for n in used)
    trainer.accelerator.free_memory()
    trainer.model = trainer.model_wrapped = trainer.optimizer = None
    del trainer, prepared
    release()
    return (*(peak or (None, None)), seconds)


def estimates(model_dir: Path, recipe_name: str, seq_len: int, side: int, **fsdp: int) -> int:
    """The largest stage's estimate (bytes) for batch 1 × seq_len tokens, one side² image.

    `fsdp` (gpus=N) asks for the sharded estimate when the memory API has one."""
    from dataclasses import fields

    from vlmtui.core.inspection.memory import MemoryAssumptions
    from vlmtui.core.inspection.meta import ModelInspector
    from vlmtui.core.recipes.catalog import get_recipe

    known = {f.name for f in fields(MemoryAssumptions)}
    extra: dict[str, Any] = {}
    if fsdp and {"gpus", "strategy"} <= known:
        extra = {"gpus": fsdp["gpus"], "strategy": "fsdp"}
    elif fsdp:
        print("# the memory API has no fsdp estimate: the row shows the ddp one", flush=True)
    assumptions = MemoryAssumptions(batch_size=1, seq_len=seq_len, image_size=side, **extra)
    inspection = ModelInspector(str(model_dir)).inspect(get_recipe(recipe_name))
    return max(e.total for e in inspection.memory(assumptions))


def run_model(label: str, name: str, args: argparse.Namespace, scratch: Path) -> list[Row]:
    from vlmtui.core.data.shapes import make_shapes_dataset
    from vlmtui.core.model.loading import detect_device

    device = detect_device()
    side, seq_len = image_side(args.tokens, scratch)
    data = make_shapes_dataset(scratch / f"data{side}", n=12, size=(side, side))
    model_dir = build_checkpoint(name, scratch / label, side, "cuda" if device.is_cuda else "cpu")
    print(f"# {label}: {name}, image {side}x{side}, {seq_len} tokens per sample", flush=True)
    rows: dict[str, Row] = {}
    for recipe in MEASURED:
        allocated, reserved, seconds = measure(model_dir, recipe, data, args.steps, device)
        est = estimates(model_dir, recipe, seq_len, side)
        rows[recipe] = Row(label, recipe, allocated, reserved, est, seconds)
        print(rows[recipe].line(), flush=True)
    r3, stages = R3
    for i, stage in enumerate(stages, start=1):
        reused = rows[stage]
        print(Row(label, f"{r3}/{i} (={stage})", reused.allocated, reused.reserved,
                  reused.estimate, 0.0).line(), flush=True)  # fmt: skip
    out = list(rows.values())
    if device.is_cuda and _gpu_count() >= 2:
        out.append(run_fsdp(label, model_dir, data, seq_len, side, args.steps))
    shutil.rmtree(model_dir, ignore_errors=True)
    return out


def _gpu_count() -> int:
    import torch

    return torch.cuda.device_count()


def run_fsdp(label: str, model_dir: Path, data: Path, seq_len: int, side: int, steps: int) -> Row:
    """FSDP_RECIPE over 2 GPUs under torchrun; the larger of the two ranks' peaks."""
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", __file__, "--fsdp-worker", str(model_dir), str(data), str(steps)]  # fmt: skip
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "0,1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    peaks = [json.loads(x[6:]) for x in proc.stdout.splitlines() if x.startswith("@peak ")]
    if proc.returncode != 0 or len(peaks) != 2:
        print(f"{label} fsdp run failed ({proc.returncode}): {proc.stderr[-1500:]}", flush=True)
        return Row(label, f"{FSDP_RECIPE} fsdp x2", None, None, 0, 0.0)
    est = estimates(model_dir, FSDP_RECIPE, seq_len, side, gpus=2)
    row = Row(label, f"{FSDP_RECIPE} fsdp x2", max(p[0] for p in peaks),
              max(p[1] for p in peaks), est, time.perf_counter() - start)  # fmt: skip
    print(row.line(), flush=True)
    return row


def fsdp_worker(model_dir: str, data: str, steps: str) -> int:
    import torch

    from vlmtui.core.data.chat import to_trl_dataset
    from vlmtui.core.data.datasets import load_split
    from vlmtui.core.model.loading import detect_device
    from vlmtui.core.recipes.catalog import get_recipe
    from vlmtui.core.training.fitting import FitOptions, fit
    from vlmtui.core.training.prepare import prepare_stage

    device = detect_device()
    torch.cuda.set_device(device.index)
    recipe = get_recipe(FSDP_RECIPE)
    prepared = prepare_stage(Path(model_dir), recipe, device, "fsdp")
    rows = to_trl_dataset(load_split(Path(data), "train"), prepared.family, prepared.processor)
    with tempfile.TemporaryDirectory() as out:
        options = FitOptions(max_steps=int(steps), strategy="fsdp")
        fit(prepared, recipe, rows, Path(out), device, options)
    peak = [torch.cuda.max_memory_allocated(), torch.cuda.max_memory_reserved()]
    print("@peak " + json.dumps(peak), flush=True)
    return 0


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="2B,7B", help="comma list of 2B, 7B")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--tokens", type=int, default=1024, help="tokens per sample, image included")
    p.add_argument("--smoke", action="store_true", help="CPU, tiny demo model, no memory figures")
    p.add_argument("--fsdp-worker", nargs=3, metavar=("MODEL", "DATA", "STEPS"))
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse(argv)
    if args.fsdp_worker:
        no_checkpoints()
        return fsdp_worker(*args.fsdp_worker)
    import torch

    if not args.smoke and not torch.cuda.is_available():
        print("gpu_memory: skipped: no CUDA device (torch.cuda.is_available() is False)")
        return 0
    targets = {"tiny": "tiny"} if args.smoke else {}
    for label in args.models.split(",") if not args.smoke else ():
        if label not in MODELS:
            print(f"gpu_memory: --models: unknown {label!r} (known: {', '.join(MODELS)})")
            return 2
        targets[label] = MODELS[label]
    print(f"{'model':<4} {'recipe':<34} {'alloc GiB':>9} {'resv GiB':>9} {'est GiB':>9} "
          f"{'est/al':>6} {'time':>7}")  # fmt: skip
    no_checkpoints()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="vlmtui-gpumem-") as tmp:
        for label, name in targets.items():
            rows += run_model(label, name, args, Path(tmp))
    off = [r for r in rows if r.ratio is not None and abs(r.ratio - 1) > TOLERANCE]
    measured = [r for r in rows if r.ratio is not None]
    print(f"# {len(measured)} measured rows, {len(off)} with the estimate off by more than "
          f"{TOLERANCE:.0%} of max_memory_allocated")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
