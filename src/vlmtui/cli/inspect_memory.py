"""`vlmtui inspect`: the memory estimate's flags, table, and its part in `--diff`."""

from __future__ import annotations

import argparse
import math
from typing import Any

from vlmtui.core.errors import BadInput


def add_memory_args(p: argparse.ArgumentParser) -> None:
    from vlmtui.core.inspection.memory_model import STRATEGIES

    p.add_argument("--gpu-mem", type=float, metavar="GIB", help="GPU memory for the fits verdict")
    p.add_argument(
        "--batch-size", type=int, metavar="N", help="micro-batch per GPU (default: the recipe's)"
    )
    p.add_argument(
        "--seq-len", type=int, default=1024, metavar="N", help="tokens per sample (default 1024)"
    )
    p.add_argument(
        "--image-size", type=int, default=448, metavar="PX", help="image side, pixels (default 448)"
    )
    p.add_argument(
        "--gradient-checkpointing",
        action="store_true",
        help="estimate memory with gradient checkpointing even if the recipe does not use it",
    )
    p.add_argument(
        "--gpus", type=int, default=1, metavar="N", help="GPUs the run spans (default 1)"
    )
    p.add_argument(
        "--strategy",
        choices=STRATEGIES,
        default="ddp",
        help="ddp: every GPU holds the model (default); fsdp: sharded over the GPUs; "
        "split: layers divided over the GPUs (device_map, as other frameworks run a 72B "
        "LoRA; for comparison, vlmtui train runs ddp or fsdp)",
    )


def check_memory_args(args: argparse.Namespace) -> None:
    """The memory options, refused before the model is built (which can print library notes
    first, and takes seconds)."""
    for flag, value in (
        ("--gpu-mem", args.gpu_mem),
        ("--batch-size", args.batch_size),
        ("--seq-len", args.seq_len),
        ("--image-size", args.image_size),
        ("--gpus", args.gpus),
    ):
        if value is not None and not math.isfinite(value):  # nan would print as "fits in nan GiB"
            raise BadInput(f"{flag}: expected a finite number, got {value:g}")
        if value is not None and value <= 0:
            raise BadInput(f"{flag}: must be positive, got {value:g}")


def assumptions_from_args(args: argparse.Namespace, first_recipe: Any) -> Any:
    from vlmtui.core.inspection.memory import MemoryAssumptions

    check_memory_args(args)
    return MemoryAssumptions(
        batch_size=args.batch_size or (first_recipe.batch_size if first_recipe else 1),
        seq_len=args.seq_len,
        image_size=args.image_size,
        gradient_checkpointing=args.gradient_checkpointing,
        gpu_mem_gib=args.gpu_mem,
        gpus=args.gpus,
        strategy=args.strategy,
    )


def _n(value: int) -> str:
    return f"{value:,}"


def memory_table(m: Any, would_fit: list[str]) -> Any:
    """The per-GPU parts, the total and the verdict (with what would fit when it does not)."""
    from rich.table import Table

    from vlmtui.core.inspection.memory import human_bytes

    a = m.assumptions
    where = f"per GPU, {a.strategy} over {a.gpus}" if a.gpus > 1 else "per GPU"
    table = Table(title=f"GPU memory estimate ({where})", title_justify="left")
    table.add_column("part")
    table.add_column("size", justify="right")
    table.add_column("bytes", justify="right")
    rows = [(f"weights {kind}", size) for kind, size in m.weights_by_dtype.items()]
    rows += [
        ("LoRA weights", m.lora_weights),
        ("gradients", m.gradients),
        ("optimizer (AdamW, 2 states)", m.optimizer_states),
        (f"optimizer step temporaries ({a.optimizer})", m.optimizer_step_temp),
    ]
    rows += [(f"activations: {k}", v) for k, v in m.activations_detail.items()]
    rows += [("FSDP gathered (root + 2 blocks)", m.gathered)]
    rows += [(f"overhead: {k.replace('_', ' ')}", v) for k, v in m.overhead_detail.items()]
    for label, size in rows:
        if size:
            table.add_row(label, human_bytes(size), _n(size))
    table.add_row("[bold]total[/]", human_bytes(m.total), _n(m.total))
    style = "green" if m.fits else "red" if m.fits is False else "bold"
    caption = f"[{style}]{m.verdict()}[/]"
    if a.gpus > 1:
        caption += f"; {human_bytes(m.total_all_gpus)} over all {a.gpus} GPUs"
    if would_fit:
        caption += "\nwould fit: " + "; ".join(would_fit)
    table.caption = caption
    table.caption_justify = "left"
    return table


def setup_table(setup: dict[str, Any], names: list[str]) -> Any:
    from rich.table import Table

    from vlmtui.core.inspection.memory import human_bytes

    t = Table(title="setup and memory (peak stage, per GPU)")
    for col in ("", names[0], names[1]):
        t.add_column(col)
    a, b = setup[names[0]], setup[names[1]]
    for key in ("quantization", "compute_dtype", "gradient_checkpointing"):
        mark = "" if a[key] == b[key] else " [yellow]*[/]"
        t.add_row(key.replace("_", " ") + mark, str(a[key]), str(b[key]))
    kinds = ", ".join
    t.add_row(
        "weights",
        kinds(f"{k} {human_bytes(v)}" for k, v in a["weights_by_dtype"].items()),
        kinds(f"{k} {human_bytes(v)}" for k, v in b["weights_by_dtype"].items()),
    )
    diff = setup["memory_difference"]
    sign = "+" if diff >= 0 else "-"
    t.add_row(
        "memory total",
        human_bytes(a["memory_total"]),
        f"{human_bytes(b['memory_total'])} ({sign}{human_bytes(abs(diff))})",
    )
    return t
